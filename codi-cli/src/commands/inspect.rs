use std::path::PathBuf;

use crate::device::{with_backend, BackendTask, DeviceSpec};
use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use clap::Args as ClapArgs;
use codi_models::inspect::{inspect, Inspection};
use codi_models::ModelError;

#[derive(ClapArgs)]
pub struct Args {
    /// A diffusers (or transformers) model folder: config.json + safetensors weights.
    dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

struct Inspect(PathBuf);

impl BackendTask for Inspect {
    type Output = Result<Inspection, ModelError>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        inspect::<B::InnerBackend>(&self.0, &device)
    }
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

pub fn run(args: Args, device: DeviceSpec) -> Result<()> {
    let report = with_backend(device, Inspect(args.dir.clone()))??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}: {}", args.dir.display(), report.class);
        for (k, v) in &report.config {
            println!("  {k:<36} {v}");
        }
        println!(
            "  {:<36} {} ({})",
            "parameters",
            report.parameters,
            human(report.parameters)
        );
        // What codi_adapter.json names a backbone by.
        match codi_models::io::weights_digest(&args.dir) {
            Ok(d) => println!("  {:<36} {d}", "weights digest"),
            Err(e) => println!("  {:<36} none: {e}", "weights digest"),
        }
        match &report.load_error {
            None => println!("  weights: every key loads"),
            Some(e) => println!("  weights: DO NOT LOAD\n{e}"),
        }
    }
    if report.load_error.is_some() {
        std::process::exit(2);
    }
    Ok(())
}
