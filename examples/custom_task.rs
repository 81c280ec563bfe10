//! A task of your own: colourisation. The condition is the image in grey; PE-CoDi distils an adapter that
//! samples the colour image back in a few steps, on the embedded default's frozen backbone.
//!
//! cargo run -p codi-examples --example custom_task [-- --epochs 2 --steps-per-epoch 150 --batch 32
//!     --out DIR]
//!
//! It trains on the embedded default's procedural scenes (Fashion-MNIST is grey: nothing to colour).
//!
//! A task is a function from an image to its condition ([`CustomTask`]); everything else — pairs made
//! reproducibly on the fly, the frozen text encoder and VAE, the CoDi loss, checkpoints, resume, the export in
//! diffusers' ControlNet layout — is the library's. Prints the validation loss per epoch and the PSNR of the
//! 4-step colourisation on held-out images against the grey input; writes `colorize.png` (grey input |
//! colourised | ground truth).

use std::sync::Arc;

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use codi_core::backend::CpuBackend;
use codi_core::metrics::psnr;
use codi_core::SeededNoise;
use codi_examples::{model_dir, number, out_dir};
use codi_pipelines::image_io::save_grid;
use codi_pipelines::{ConditionalPipeline, DistillMode, TaskKind};
use codi_train::data::fashion_mnist::Split;
use codi_train::distill::data::{eval_pairs, pairs_tensors, PairMaker};
use codi_train::distill::{distill_with, preset, task_source};
use codi_train::tasks::CustomTask;
use codi_train::training::RunOptions;
use rand_chacha::ChaCha8Rng;

/// The condition is the luma of the image: one channel.
struct Colorize;

impl CustomTask for Colorize {
    fn name(&self) -> &str {
        "colorize"
    }

    fn condition_channels(&self) -> usize {
        1
    }

    fn condition(&self, image: &[f32], size: usize, _rng: &mut ChaCha8Rng) -> Vec<f32> {
        let plane = size * size;
        let (r, g, b) = (
            &image[..plane],
            &image[plane..2 * plane],
            &image[2 * plane..],
        );
        (0..plane)
            .map(|i| 0.299 * r[i] + 0.587 * g[i] + 0.114 * b[i])
            .collect()
    }
}

fn main() -> anyhow::Result<()> {
    let device = Default::default();
    let teacher = model_dir();
    let out = out_dir("custom_task")?;

    // The embedded default's PE-CoDi settings (the task settings of the preset are not read).
    let mut config = preset(TaskKind::SuperResolution, DistillMode::PeCodi);
    config.train.num_epochs = number("epochs", 2)?;
    config.train.steps_per_epoch = number("steps-per-epoch", 150)?;
    config.train.batch_size = number("batch", 32)?;
    config.train.valid_items = number("valid", 64)?;
    config.data.fashion_mnist = false;
    let no_fashion = std::path::Path::new("");
    let maker = PairMaker::Custom(Arc::new(Colorize));

    let run = RunOptions::new(out.join("run"));
    let adapter = out.join("adapter");
    let done = distill_with::<Autodiff<CpuBackend>>(
        &config,
        maker.clone(),
        &teacher,
        no_fashion,
        &run,
        &adapter,
        &device,
    )?;
    for (epoch, metrics) in &done.report.history.valid {
        println!("epoch {epoch}: validation loss {:.4}", metrics["Loss"]);
    }

    // Sample the new adapter like any other: the conditions come from this program's task.
    let pipe = ConditionalPipeline::<CpuBackend>::load(&teacher, &adapter, &device)?;
    let source = task_source(&maker, &config.data, None, no_fashion, Split::Test)?;
    let pairs = eval_pairs(source, maker, 1, 16)?;
    let (cond, _) = pairs_tensors::<CpuBackend>(&pairs, 1, &device);
    let texts: Vec<&str> = pairs.iter().map(|p| p.text.as_str()).collect();
    let images = pipe.generate(
        cond,
        &texts,
        &pipe.codi_sampler(4),
        1.0,
        &mut SeededNoise::new(2),
        &device,
        |_, _| {},
    )?;
    let colour = codi_core::tensor_ops::to_vec(images.clone());
    let target: Vec<f32> = pairs.iter().flat_map(|p| p.target.clone()).collect();
    let grey: Vec<f32> = pairs.iter().flat_map(|p| p.condition.repeat(3)).collect();
    println!(
        "PSNR on {} held-out images: 4-step colourisation {:.2} dB, grey input {:.2} dB",
        pairs.len(),
        psnr(&colour, &target, 1.0),
        psnr(&grey, &target, 1.0)
    );
    // Eight rows: grey input | 4-step colourisation | ground truth.
    let rows = 8.min(pairs.len());
    let show = |v: &[f32]| {
        Tensor::<CpuBackend, 4>::from_data(TensorData::new(v.to_vec(), [rows, 3, 32, 32]), &device)
    };
    let per = 3 * 32 * 32;
    let grid = Tensor::stack::<5>(
        vec![
            show(&grey[..rows * per]),
            show(&colour[..rows * per]),
            show(&target[..rows * per]),
        ],
        1,
    )
    .reshape([rows * 3, 3, 32, 32]);
    save_grid(grid, 3, 2, &out.join("colorize.png"))?;
    println!(
        "adapter in {}, grid in {}",
        adapter.display(),
        out.join("colorize.png").display()
    );
    Ok(())
}
