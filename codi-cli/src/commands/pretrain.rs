//! `codi pretrain vae|teacher|classifier`: train a part of the embedded default with burn-train.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::device::{with_backend, BackendTask, DeviceSpec};
use anyhow::{Context, Result};
use burn::config::Config;
use burn::tensor::backend::AutodiffBackend;
use clap::{Args as ClapArgs, ValueEnum};
use codi_train::data::fashion_mnist::DEFAULT_DIR;
use codi_train::pretrain::{classifier, presets, teacher, vae};
use codi_train::training::{load_config, FitReport, RunOptions, TrainLoopConfig};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Part {
    Vae,
    Teacher,
    Classifier,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Vae => "vae",
            Part::Teacher => "teacher",
            Part::Classifier => "classifier",
        }
    }
}

#[derive(ClapArgs, Clone)]
pub struct Args {
    part: Part,
    /// Training config (JSON). Default: the embedded default's preset (`configs/pretrain/<part>.json`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the config that would be used and exit.
    #[arg(long)]
    print_config: bool,
    /// Continue from the latest checkpoint in the run folder.
    #[arg(long)]
    resume: bool,
    /// Fashion-MNIST's IDX files.
    #[arg(long, default_value = DEFAULT_DIR)]
    data: PathBuf,
    /// Run folder (checkpoints, logs). Default: runs/<part>.
    #[arg(long)]
    run: Option<PathBuf>,
    /// Where the trained model goes. Default: assets/tiny/vae, assets/tiny (teacher), assets/tiny/classifier.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The VAE the teacher trains on.
    #[arg(long, default_value = "assets/tiny/vae")]
    vae: PathBuf,
    /// Overrides of the config's training loop.
    #[arg(long, value_parser = super::at_least_one)]
    epochs: Option<usize>,
    #[arg(long, value_parser = super::at_least_one)]
    steps_per_epoch: Option<usize>,
    #[arg(long, value_parser = super::at_least_one)]
    batch_size: Option<usize>,
    #[arg(long, value_parser = super::at_least_one)]
    valid_items: Option<usize>,
    /// Use at most this many Fashion-MNIST items per split, and this many scenes (quick runs).
    #[arg(long)]
    fashion_limit: Option<usize>,
    #[arg(long)]
    scenes: Option<usize>,
    /// Seconds between progress lines.
    #[arg(long, value_parser = super::positive_seconds, default_value_t = 10.0)]
    log_every: f64,
}

impl Args {
    fn loop_overrides(&self, c: &mut TrainLoopConfig) {
        if let Some(v) = self.epochs {
            c.num_epochs = v;
        }
        if let Some(v) = self.steps_per_epoch {
            c.steps_per_epoch = v;
        }
        if let Some(v) = self.batch_size {
            c.batch_size = v;
        }
        if let Some(v) = self.valid_items {
            c.valid_items = v;
        }
    }

    fn data_overrides(&self, d: &mut codi_train::data::mixed::DataConfig) {
        if let Some(v) = self.fashion_limit {
            d.fashion_mnist_limit = v;
        }
        if let Some(v) = self.scenes {
            d.scenes_train = v;
            d.scenes_test = v.div_ceil(4);
        }
    }

    fn run_options(&self) -> RunOptions {
        let mut r = RunOptions::new(
            self.run
                .clone()
                .unwrap_or_else(|| Path::new("runs").join(self.part.name())),
        );
        r.resume = self.resume;
        r.log_every = std::time::Duration::from_secs_f64(self.log_every.max(0.0));
        r
    }

    fn out(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| match self.part {
            Part::Vae => "assets/tiny/vae".into(),
            Part::Teacher => "assets/tiny".into(),
            Part::Classifier => "assets/tiny/classifier".into(),
        })
    }
}

fn config<C: Config + codi_train::training::checks::Checked>(
    file: &Option<PathBuf>,
    preset: C,
) -> Result<C> {
    match file {
        Some(f) => Ok(load_config(f)?),
        None => Ok(preset),
    }
}

struct Task(Args);

/// (config as JSON, report as JSON, fit report)
type Outcome = (String, serde_json::Value, FitReport);

impl BackendTask for Task {
    type Output = Result<Outcome>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let a = &self.0;
        let run = a.run_options();
        let out = a.out();
        match a.part {
            Part::Vae => {
                let mut c = config(&a.config, presets::vae())?;
                a.loop_overrides(&mut c.train);
                a.data_overrides(&mut c.data);
                if a.print_config {
                    return Ok((c.to_string(), serde_json::Value::Null, empty()));
                }
                let (report, fit) = vae::pretrain_vae::<B>(&c, &a.data, &run, &out, &device)?;
                Ok((c.to_string(), serde_json::to_value(report)?, fit))
            }
            Part::Classifier => {
                let mut c = config(&a.config, presets::classifier())?;
                a.loop_overrides(&mut c.train);
                a.data_overrides(&mut c.data);
                if a.print_config {
                    return Ok((c.to_string(), serde_json::Value::Null, empty()));
                }
                let (report, fit) =
                    classifier::pretrain_classifier::<B>(&c, &a.data, &run, &out, &device)?;
                Ok((c.to_string(), serde_json::to_value(report)?, fit))
            }
            Part::Teacher => {
                let mut c = config(&a.config, presets::teacher())?;
                a.loop_overrides(&mut c.train);
                a.data_overrides(&mut c.data);
                if a.print_config {
                    return Ok((c.to_string(), serde_json::Value::Null, empty()));
                }
                let fit = teacher::pretrain_teacher::<B>(&c, &a.data, &a.vae, &run, &out, &device)?;
                Ok((c.to_string(), serde_json::Value::Null, fit))
            }
        }
    }
}

fn empty() -> FitReport {
    FitReport {
        start_epoch: 0,
        history: Default::default(),
    }
}

pub fn run(args: Args, device: DeviceSpec) -> Result<()> {
    let start = Instant::now();
    let print_only = args.print_config;
    let (config, report, fit) = with_backend(device, Task(args.clone()))??;
    if print_only {
        println!("{config}");
        return Ok(());
    }
    let wall = start.elapsed().as_secs_f64();
    let name = args.part.name();
    let summary = serde_json::json!({
        "command": super::command_line(),
        "device": device.to_string(),
        "wall_time_s": wall,
        "started_at_epoch": fit.start_epoch,
        "optimizer_steps_this_run": fit.history.steps,
        "report": report,
        "train_epoch_means": fit.history.train,
        "valid_epoch_means": fit.history.valid,
        "config": serde_json::from_str::<serde_json::Value>(&config)?,
    });
    // Logs sit beside the models: <pipeline>/logs (the teacher's out is the pipeline folder itself).
    let logs = match args.part {
        Part::Teacher => args.out().join("logs"),
        _ => args.out().parent().unwrap_or(Path::new(".")).join("logs"),
    };
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let file = logs.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", file.display()))?;
    let log_src = args.run_options().dir.join("train.log");
    if log_src.exists() {
        std::fs::copy(&log_src, logs.join(format!("{name}.log")))
            .with_context(|| format!("copying {}", log_src.display()))?;
    }
    println!("[{name}] report: {report}");
    println!(
        "[{name}] wall time {:.0} s; model in {}, summary in {}",
        wall,
        args.out().display(),
        file.display()
    );
    Ok(())
}
