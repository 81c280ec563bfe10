//! `codi eval teacher`: class agreement and FD of text-to-image samples (classifier features).

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::{Args as ClapArgs, ValueEnum};
use codi_core::device::{with_backend, BackendTask, DeviceSpec};
use codi_core::{Sampler, SamplerKind};
use codi_models::classifier::Classifier;
use codi_train::data::fashion_mnist::{FashionMnist, Split, DEFAULT_DIR};
use codi_train::evaluate::evaluate_teacher;
use codi_train::image_io::save_grid;
use codi_train::pipeline::TextToImage;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Target {
    Teacher,
}

#[derive(ClapArgs, Clone)]
pub struct Args {
    target: Target,
    #[arg(long, default_value = "assets/tiny")]
    model: PathBuf,
    #[arg(long, default_value = "assets/tiny/classifier")]
    classifier: PathBuf,
    #[arg(long, default_value = DEFAULT_DIR)]
    data: PathBuf,
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    #[arg(long, default_value = "ddim")]
    sampler: String,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, default_value_t = 3.0)]
    guidance: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images generated per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Grid of the first samples of each class (one row per class).
    #[arg(long)]
    grid: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    grid_columns: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

struct Task(Args);

impl BackendTask for Task {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        let pipe = TextToImage::<B::InnerBackend>::load(&a.model, &device)?;
        let classifier = Classifier::<B::InnerBackend>::from_dir(&a.classifier, &device)?;
        let test = FashionMnist::load(&a.data, Split::Test)?;
        let sampler = Sampler::new(SamplerKind::from_name(&a.sampler)?, a.steps);
        let (report, grid) = evaluate_teacher(
            &pipe,
            &classifier,
            &test,
            a.samples,
            &sampler,
            a.guidance,
            a.seed,
            a.batch,
            a.grid_columns,
            &device,
        )?;
        let json = serde_json::to_string_pretty(&report)?;
        println!("{json}");
        if let Some(f) = &a.out {
            if let Some(d) = f.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(d)?;
            }
            std::fs::write(f, &json).with_context(|| format!("writing {}", f.display()))?;
        }
        if let Some(g) = &a.grid {
            save_grid(grid, a.grid_columns, 1, g)?;
            println!("wrote {}", g.display());
        }
        Ok(())
    }
}

pub fn run(args: Args, device: DeviceSpec) -> Result<()> {
    match args.target {
        Target::Teacher => with_backend(device, Task(args))?,
    }
}
