//! `codi curves`: training curves of one or more burn-train runs (pretraining or distillation) as an SVG.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use codi_pipelines::plot::{read_curve, render_svg};

#[derive(ClapArgs, Clone)]
pub struct Args {
    /// A run folder (`runs/<name>`); repeat to compare runs.
    #[arg(long, required = true)]
    run: Vec<PathBuf>,
    /// Legend names, one per --run (default: the folder names).
    #[arg(long)]
    label: Vec<String>,
    /// Metrics, one panel each (default: the CoDi loss terms).
    #[arg(long, default_values_t = ["consistency".to_string(), "guidance".to_string()])]
    metric: Vec<String>,
    /// Moving-average window over training batches.
    #[arg(long, default_value_t = 25)]
    window: usize,
    #[arg(long, default_value = "curves.svg")]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    if !a.label.is_empty() && a.label.len() != a.run.len() {
        bail!("{} --label for {} --run", a.label.len(), a.run.len());
    }
    let labels: Vec<String> = if a.label.is_empty() {
        a.run
            .iter()
            .map(|r| {
                r.file_name()
                    .unwrap_or(r.as_os_str())
                    .to_string_lossy()
                    .to_string()
            })
            .collect()
    } else {
        a.label.clone()
    };
    let curves = a
        .metric
        .iter()
        .map(|m| {
            a.run
                .iter()
                .map(|r| read_curve(r, m))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let svg = render_svg(&a.metric, &labels, &curves, a.window.max(1));
    if let Some(d) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&a.out, svg).with_context(|| format!("writing {}", a.out.display()))?;
    for (m, per_run) in a.metric.iter().zip(&curves) {
        for (l, c) in labels.iter().zip(per_run) {
            let last = c
                .valid
                .last()
                .map_or("-".to_string(), |v| format!("{:.4e}", v.1));
            println!(
                "{m:<12} {l:<20} {} steps, last validation {last}",
                c.train.len()
            );
        }
    }
    println!("wrote {}", a.out.display());
    Ok(())
}
