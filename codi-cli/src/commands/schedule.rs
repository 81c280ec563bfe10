use crate::device::DeviceSpec;
use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use codi_core::sampler::{PlannedStep, Sampler, SamplerKind};
use codi_core::{
    BetaSchedule, BoundaryForm, BoundaryScalings, NoiseScheduleConfig, TimestepSpacing,
};
use serde::Serialize;

#[derive(ClapArgs)]
pub struct Args {
    /// ddim, ddim-trailing (= ddim --spacing trailing --steps-offset 0), dpmpp, codi or lcm.
    #[arg(long, default_value = "codi")]
    sampler: String,
    /// Number of sampling steps K.
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// CoDi: number of intervals N of the training grid.
    #[arg(long, default_value_t = 50)]
    intervals: usize,
    /// LCM: the original number of inference steps.
    #[arg(long, default_value_t = 50)]
    original_steps: usize,
    /// DDIM: η (0 = deterministic).
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// DDIM: leading, trailing or linspace.
    #[arg(long, default_value = "leading")]
    spacing: TimestepSpacing,
    /// DDIM: steps_offset for leading spacing.
    #[arg(long, default_value_t = 1)]
    steps_offset: usize,
    /// CoDi/LCM: boundary form, lcm or sigma_data_scaled.
    #[arg(long, default_value = "lcm")]
    boundary: String,
    /// Noise schedule: linear, scaled_linear or squaredcos_cap_v2.
    #[arg(long, default_value = "scaled_linear")]
    beta_schedule: BetaSchedule,
    #[arg(long, default_value_t = 0.00085)]
    beta_start: f64,
    #[arg(long, default_value_t = 0.012)]
    beta_end: f64,
    #[arg(long, default_value_t = 1000)]
    num_train_timesteps: usize,
}

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    step: PlannedStep,
    #[serde(skip_serializing_if = "Option::is_none")]
    c_skip: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    c_out: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    sampler: &'static str,
    steps: usize,
    settings: SamplerKind,
    timesteps: Vec<i64>,
    plan: Vec<Row>,
}

pub fn run(args: Args, _device: DeviceSpec) -> Result<()> {
    let schedule = NoiseScheduleConfig::new()
        .with_num_train_timesteps(args.num_train_timesteps)
        .with_beta_start(args.beta_start)
        .with_beta_end(args.beta_end)
        .with_beta_schedule(args.beta_schedule)
        .init()
        .context("invalid noise schedule")?;
    let boundary = BoundaryScalings {
        form: match args.boundary.as_str() {
            "lcm" => BoundaryForm::Lcm,
            "sigma_data_scaled" => BoundaryForm::SigmaDataScaled,
            other => {
                anyhow::bail!("unknown --boundary '{other}' (expected lcm or sigma_data_scaled)")
            }
        },
        ..Default::default()
    };
    let kind = match SamplerKind::from_name(&args.sampler)? {
        // `ddim-trailing` names its own spacing and offset.
        SamplerKind::Ddim {
            set_alpha_to_one,
            spacing: TimestepSpacing::Trailing,
            steps_offset,
            ..
        } => SamplerKind::Ddim {
            eta: args.eta,
            spacing: TimestepSpacing::Trailing,
            steps_offset,
            set_alpha_to_one,
        },
        SamplerKind::Ddim {
            set_alpha_to_one, ..
        } => SamplerKind::Ddim {
            eta: args.eta,
            spacing: args.spacing,
            steps_offset: args.steps_offset,
            set_alpha_to_one,
        },
        SamplerKind::Codi { .. } => SamplerKind::Codi {
            intervals: args.intervals,
            boundary,
        },
        SamplerKind::Lcm { .. } => SamplerKind::Lcm {
            original_steps: args.original_steps,
            boundary,
        },
        other => other,
    };
    let sampler = Sampler::new(kind, args.steps);
    let plan = sampler
        .plan(&schedule)
        .with_context(|| format!("cannot plan {} with {} steps", kind.name(), args.steps))?;
    let scalings = |t: i64| match kind {
        SamplerKind::Codi { boundary, .. } | SamplerKind::Lcm { boundary, .. } => {
            Some(boundary.at(t as f64))
        }
        _ => None,
    };
    let rows: Vec<Row> = plan
        .iter()
        .map(|s| Row {
            step: *s,
            c_skip: scalings(s.t).map(|c| c.0),
            c_out: scalings(s.t).map(|c| c.1),
        })
        .collect();
    if args.json {
        let report = Report {
            sampler: kind.name(),
            steps: args.steps,
            settings: kind,
            timesteps: plan.iter().map(|s| s.t).collect(),
            plan: rows,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} sampler, {} steps, {} train timesteps",
        kind.name(),
        args.steps,
        args.num_train_timesteps
    );
    let extra = rows[0].c_skip.is_some();
    print!(
        "{:>4} {:>6} {:>10} {:>10} {:>7} {:>10} {:>10}",
        "step", "t", "alpha", "sigma", "t_next", "alpha_next", "sigma_next"
    );
    if extra {
        print!(" {:>10} {:>10}", "c_skip", "c_out");
    }
    println!();
    for r in &rows {
        let s = &r.step;
        let next = match s.t_next {
            Some(t) if t >= 0 => t.to_string(),
            Some(_) => "final".into(),
            None => "x0".into(),
        };
        print!(
            "{:>4} {:>6} {:>10.6} {:>10.6} {:>7} {:>10.6} {:>10.6}",
            s.index, s.t, s.alpha, s.sigma, next, s.alpha_next, s.sigma_next
        );
        if let (Some(a), Some(b)) = (r.c_skip, r.c_out) {
            print!(" {a:>10.3e} {b:>10.6}");
        }
        println!();
    }
    Ok(())
}
