//! The same computation on burn-flex (the CPU fast path) and on wgpu (burn's generic path, here on Mesa's
//! software Vulkan driver): sampling the embedded default with its super-resolution adapter, and one
//! PE-CoDi training step (loss and adapter gradients). Built only with `--features wgpu`.
#![cfg(feature = "wgpu")]

use std::path::PathBuf;

use burn::backend::wgpu::{Wgpu, WgpuDevice};
use burn::backend::Autodiff;
use burn::module::Param;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use burn::train::TrainStep;
use codi_core::backend::CpuBackend;
use codi_core::SeededNoise;
use codi_pipelines::ConditionalPipeline;
use codi_train::distill::data::DistillBatch;
use codi_train::distill::model::{Distillation, StepSettings};

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny")
}

fn sr_pipeline<B: Backend>(device: &B::Device) -> ConditionalPipeline<B> {
    let root = assets();
    ConditionalPipeline::load(&root, &root.join("adapters/sr"), device).expect("embedded default")
}

/// A batch of 2 conditions in [0, 1]: [2, cc, 32, 32].
fn condition<B: Backend>(channels: usize, device: &B::Device) -> Tensor<B, 4> {
    let values = SeededNoise::new(5)
        .normals(2 * channels * 32 * 32)
        .into_iter()
        .map(|v| 1.0 / (1.0 + (-v).exp()))
        .collect::<Vec<f32>>();
    Tensor::from_data(TensorData::new(values, [2, channels, 32, 32]), device)
}

/// Four CoDi steps with guidance 2 from seed 7. → images [2, 3, 32, 32] as values
fn sample<B: Backend>(device: &B::Device) -> Vec<f32> {
    let pipe = sr_pipeline::<B>(device);
    let cond = condition::<B>(pipe.info.condition_channels, device);
    let images = pipe
        .generate(
            cond,
            &["a shirt", "a sneaker"],
            &pipe.codi_sampler(4),
            2.0,
            &mut SeededNoise::new(7),
            device,
            |_, _| {},
        )
        .expect("sampling");
    images.into_data().into_vec::<f32>().expect("f32 images")
}

/// One PE-CoDi step on a fixed batch. → (loss, the adapter's mid-block zero-conv weight gradient)
fn train_step<B: AutodiffBackend>(device: &B::Device) -> (f32, Vec<f32>) {
    let pipe = sr_pipeline::<B>(device);
    let mut noise = SeededNoise::new(11);
    let latent = |noise: &mut SeededNoise| {
        Tensor::<B, 4>::from_data(
            TensorData::new(noise.normals(2 * 4 * 8 * 8), [2, 4, 8, 8]),
            device,
        )
    };
    let batch = DistillBatch {
        x: latent(&mut noise),
        cond: condition::<B>(pipe.info.condition_channels, device),
        text: pipe
            .base
            .encode_prompts(&["a shirt", "a sneaker"], device)
            .expect("prompts")
            .detach(),
        noise: latent(&mut noise),
        uniform: noise.uniform(2),
        shared_uniform: 0.5,
        uncond_text: None,
        guidance_uniform: vec![0.5, 0.5],
    };
    let settings = StepSettings {
        loss: pipe.info.loss,
        prediction_type: pipe.base.prediction_type,
        ema_decay: 0.95,
        grad_clip: 0.0,
        divergence: Default::default(),
        replica: None,
    };
    let dist = Distillation::new(
        pipe.net.unet.clone(),
        pipe.net.adapter.clone(),
        pipe.info.mode,
        None,
        None,
        pipe.base.schedule.clone(),
        settings,
    );
    let weight: &Param<Tensor<B, 4>> = &dist.online.adapter.controlnet_mid_block.weight;
    let out = TrainStep::step(&dist, batch);
    let grad = out
        .grads
        .get::<B::InnerBackend, 4>(weight.id)
        .expect("a gradient for the adapter");
    let loss = out.item.loss.into_data().into_vec::<f32>().expect("f32")[0];
    (loss, grad.into_data().into_vec::<f32>().expect("f32"))
}

/// max |a − b| / max(1, max |b|)
fn relative_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

/// One test, so that the kernels wgpu compiles for the training step (the slow part on a software driver)
/// serve the sampling too: both run the UNet and the adapter at batch 2.
#[test]
fn wgpu_matches_the_cpu_in_a_training_step_and_in_sampling() {
    let started = std::time::Instant::now();
    let (cpu_loss, cpu_grad) = train_step::<Autodiff<CpuBackend>>(&Default::default());
    let (gpu_loss, gpu_grad) = train_step::<Autodiff<Wgpu>>(&WgpuDevice::DefaultDevice);
    let loss_err = (gpu_loss - cpu_loss).abs() / cpu_loss.abs().max(1e-6);
    let grad_err = relative_diff(&gpu_grad, &cpu_grad);
    println!(
        "training step: loss {cpu_loss} (cpu) vs {gpu_loss} (wgpu), relative {loss_err:.2e}; \
         adapter gradient {grad_err:.2e} ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        cpu_grad.iter().any(|g| *g != 0.0),
        "the test needs a nonzero gradient"
    );
    assert!(loss_err < 1e-3, "loss: relative |wgpu − cpu| = {loss_err}");
    assert!(grad_err < 1e-3, "gradient: max |wgpu − cpu| = {grad_err}");

    let started = std::time::Instant::now();
    let cpu = sample::<CpuBackend>(&Default::default());
    let gpu = sample::<Wgpu>(&WgpuDevice::DefaultDevice);
    let err = relative_diff(&gpu, &cpu);
    println!(
        "sampling: max |wgpu − cpu| = {err:.2e} over {} values ({:.0} s)",
        cpu.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(err < 1e-3, "sampling: max |wgpu − cpu| = {err}");
}
