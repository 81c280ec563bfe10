//! `codi demo`: every committed adapter at 1, 2 and 4 steps on the bundled test images — a grid per task and
//! a summary, in seconds, with no dataset.

use std::path::PathBuf;
use std::time::Instant;

use crate::device::{with_backend, BackendTask, DeviceSpec};
use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::Args as ClapArgs;
use codi_train::demo::{run_demo, summary_table, DemoOptions};

#[derive(ClapArgs, Clone)]
pub struct Args {
    /// Pipeline folder with its adapters (adapters/<task>/, codi-<task>/) and demo/ images.
    #[arg(long, default_value = "assets/tiny")]
    model: PathBuf,
    /// Where the grids and summary.json go.
    #[arg(long, default_value = "demo")]
    out: PathBuf,
    /// Test pairs per adapter.
    #[arg(long, value_parser = super::at_least_one, default_value_t = 8)]
    pairs: usize,
    /// Step counts, comma-separated (one grid column each).
    #[arg(long, default_value = "1,2,4")]
    step_counts: String,
    /// Classifier-free guidance scale (1 = off).
    #[arg(long, value_parser = super::non_negative, default_value_t = 1.0)]
    guidance: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

struct Task(Args, DemoOptions);

impl BackendTask for Task {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let (a, options) = (self.0, self.1);
        let start = Instant::now();
        let results = run_demo::<B::InnerBackend>(&a.model, &a.out, &options, &device)?;
        print!("{}", summary_table(&results));
        for r in &results {
            println!("wrote {}", r.grid.display());
        }
        let file = a.out.join("summary.json");
        let json = serde_json::json!({
            "model": a.model,
            "guidance": options.guidance,
            "seed": options.seed,
            "adapters": results,
            "wall_time_s": start.elapsed().as_secs_f64(),
        });
        std::fs::write(&file, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", file.display()))?;
        println!(
            "wrote {} ({:.1} s)",
            file.display(),
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

pub fn run(args: Args, device: DeviceSpec) -> Result<()> {
    let step_counts = super::parse_step_counts(&args.step_counts)?;
    let options = DemoOptions {
        pairs: args.pairs.max(1),
        step_counts,
        guidance: args.guidance,
        seed: args.seed,
    };
    with_backend(device, Task(args, options))?
}
