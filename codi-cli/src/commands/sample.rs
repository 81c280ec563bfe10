//! `codi sample`: text-to-image with a pretrained pipeline (the embedded default's teacher by default).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use clap::Args as ClapArgs;
use codi_core::device::{with_backend, BackendTask, DeviceSpec};
use codi_core::{Sampler, SamplerKind, SeededNoise};
use codi_train::image_io::save_grid;
use codi_train::pipeline::TextToImage;

#[derive(ClapArgs, Clone)]
pub struct Args {
    /// Pipeline folder (vae/, unet/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long, default_value = "assets/tiny")]
    model: PathBuf,
    /// A prompt; repeat for one grid row per prompt.
    #[arg(long, required = true)]
    prompt: Vec<String>,
    /// Samples per prompt (grid columns).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// ddim | dpmpp | codi | lcm
    #[arg(long, default_value = "ddim")]
    sampler: String,
    /// Classifier-free guidance scale (1 = off).
    #[arg(long, default_value_t = 3.0)]
    guidance: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image side in pixels.
    #[arg(long, default_value_t = 32)]
    size: usize,
    #[arg(long, default_value = "grid.png")]
    out: PathBuf,
}

struct Task(Args);

impl BackendTask for Task {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        if a.batch == 0 || a.steps == 0 {
            bail!("--batch and --steps must be at least 1");
        }
        let pipe = TextToImage::<B::InnerBackend>::load(&a.model, &device)?;
        let sampler = Sampler::new(SamplerKind::from_name(&a.sampler)?, a.steps);
        let mut noise = SeededNoise::new(a.seed);
        let mut rows = Vec::new();
        let total = a.prompt.len();
        for (i, p) in a.prompt.iter().enumerate() {
            let prompts = vec![p.as_str(); a.batch];
            let img = pipe.generate(
                &prompts,
                &sampler,
                a.guidance,
                a.size,
                &mut noise,
                &device,
                |s, n| {
                    eprint!("\r[sample] prompt {}/{total} {p:?}: step {s}/{n}   ", i + 1);
                    let _ = std::io::stderr().flush();
                },
            )?;
            rows.push(img);
        }
        eprintln!();
        save_grid(Tensor::cat(rows, 0), a.batch, 1, &a.out)?;
        println!(
            "wrote {} ({} × {} samples)",
            a.out.display(),
            total,
            a.batch
        );
        Ok(())
    }
}

pub fn run(args: Args, device: DeviceSpec) -> Result<()> {
    with_backend(device, Task(args))?
}
