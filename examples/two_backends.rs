//! One model, several backends: the same text-to-image sampling on burn-flex (codi's CPU backend, with its
//! host kernels), on burn-ndarray (Burn's ops only) and, built with `--features wgpu`, on wgpu — the model
//! code is written once, generic over `B: Backend`.
//!
//! cargo run -p codi-examples --example two_backends [-- --model DIR --steps 8]
//! cargo run -p codi-examples --features wgpu --example two_backends
//!
//! Prints the largest difference between the backends' images (values in [0, 1]) and fails above 1e-3.

use burn::tensor::backend::Backend;
use codi_core::{Sampler, SamplerKind, SeededNoise};
use codi_examples::{model_dir, number};
use codi_pipelines::TextToImage;

/// Samples two images on backend `B` and returns their pixels.
fn sample<B: Backend>(device: &B::Device, steps: usize) -> anyhow::Result<Vec<f32>> {
    let pipe = TextToImage::<B>::load(&model_dir(), device)?;
    let images = pipe.generate(
        &["a pullover", "a green triangle on a grey floor"],
        &Sampler::new(SamplerKind::ddim(), steps),
        2.0,
        32,
        &mut SeededNoise::new(11),
        device,
        |_, _| {},
    )?;
    Ok(codi_core::tensor_ops::to_vec(images))
}

/// Float rounding differs between backends (summation order, fused kernels); a wrong op differs by far more.
const TOLERANCE: f32 = 1e-3;

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn main() -> anyhow::Result<()> {
    let steps = number("steps", 8)?;
    let flex = sample::<codi_core::backend::CpuBackend>(&Default::default(), steps)?;
    let ndarray = sample::<burn::backend::NdArray>(&Default::default(), steps)?;
    let diff = max_diff(&flex, &ndarray);
    println!("{steps} DDIM steps, 2 images: max |flex − ndarray| = {diff:.2e}");
    anyhow::ensure!(
        diff < TOLERANCE,
        "the backends disagree by more than {TOLERANCE}"
    );
    #[cfg(feature = "wgpu")]
    {
        let wgpu = sample::<burn::backend::Wgpu>(&Default::default(), steps)?;
        let diff = max_diff(&flex, &wgpu);
        println!("{steps} DDIM steps, 2 images: max |flex − wgpu| = {diff:.2e}");
        anyhow::ensure!(
            diff < TOLERANCE,
            "the backends disagree by more than {TOLERANCE}"
        );
    }
    Ok(())
}
