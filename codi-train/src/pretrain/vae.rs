//! VAE pretraining: reconstruction (MSE on pixels in [−1, 1]) + weighted KL to N(0, I); afterwards the latent
//! scaling factor is set to 1 / std of the training latents (as Stable Diffusion did), and PSNR is measured
//! on each dataset's test split.

use std::path::Path;

use burn::config::Config;
use burn::data::dataset::Dataset;
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use codi_models::{AutoencoderKL, AutoencoderKLConfig};
use serde::Serialize;

use crate::data::batch::{images_tensor, ImageBatch, ImageBatcher};
use crate::data::fashion_mnist::Split;
use crate::data::mixed::{DataConfig, Mixed, SCENE_LABEL_OFFSET};
use crate::data::ImageItem;
use crate::error::TrainError;
use crate::training::output::StepOutput;
use crate::training::{fit, train_loader, valid_loader, FitReport, RunOptions, TrainLoopConfig};

#[derive(Config, Debug)]
pub struct VaePretrainConfig {
    pub model: AutoencoderKLConfig,
    pub train: TrainLoopConfig,
    pub data: DataConfig,
    /// Weight of KL(q(z|x) ‖ N(0, I)) (summed over latent elements) against the per-pixel MSE.
    #[config(default = 1e-6)]
    pub kl_weight: f64,
    /// Train the decoder only (the encoder gets no gradient): sharpens reconstructions without moving the
    /// latent space a teacher was trained on. Used to continue a finished run (`--resume` with more epochs).
    #[config(default = false)]
    pub decoder_only: bool,
}

/// The VAE with its loss, as burn-train trains it.
#[derive(Module, Debug)]
pub struct VaeTraining<B: Backend> {
    pub vae: AutoencoderKL<B>,
    pub kl_weight: f64,
    pub decoder_only: bool,
}

/// PSNR (dB) of images in [−1, 1] from their mean squared error.
fn psnr_from_mse<B: Backend>(mse: Tensor<B, 1>) -> Tensor<B, 1> {
    // Range 2 in [−1, 1]: PSNR = 10·log10(4 / mse).
    mse.detach()
        .div_scalar(4.0)
        .log()
        .mul_scalar(-10.0 / std::f64::consts::LN_10)
}

impl<B: Backend> VaeTraining<B> {
    /// sample: draw z from the posterior (training) or take its mean (validation).
    /// `posterior`: the encoder's output for the batch's images (given: computed without gradient).
    fn losses(
        &self,
        batch: ImageBatch<B>,
        sample: bool,
        posterior: Option<codi_models::DiagonalGaussian<B>>,
    ) -> StepOutput<B> {
        let x = batch.images;
        let n = x.dims()[0];
        let posterior = posterior.unwrap_or_else(|| self.vae.encode(x.clone()));
        let z = if sample {
            let noise = Tensor::random(
                posterior.mean.shape(),
                Distribution::Normal(0.0, 1.0),
                &x.device(),
            );
            posterior.sample(noise)
        } else {
            posterior.mode()
        };
        let rec = self.vae.decode(z);
        let mse = (rec - x).powi_scalar(2).mean();
        let kl = posterior.kl().mean();
        let loss = mse.clone() + kl.clone().mul_scalar(self.kl_weight);
        let psnr = psnr_from_mse(mse.clone());
        StepOutput::new(loss, vec![mse.detach(), kl.detach(), psnr], n)
    }
}

/// The metric names of [`StepOutput::terms`] for the VAE (name, higher is better).
pub const TERMS: [(&str, bool); 3] = [("mse", false), ("kl", false), ("psnr", true)];

impl<B: AutodiffBackend> TrainStep for VaeTraining<B> {
    type Input = ImageBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> TrainOutput<StepOutput<B>> {
        // Decoder only: the frozen encoder runs on the inner backend, so no graph is recorded for it (a detached
        // autodiff graph that backward never visits is never freed).
        let posterior = self.decoder_only.then(|| {
            let p = self.vae.valid().encode(batch.images.clone().inner());
            codi_models::DiagonalGaussian {
                mean: Tensor::from_inner(p.mean),
                logvar: Tensor::from_inner(p.logvar),
            }
        });
        let out = self.losses(batch, true, posterior);
        let grads = out.loss.backward();
        TrainOutput::new(self, grads, out)
    }
}

impl<B: Backend> InferenceStep for VaeTraining<B> {
    type Input = ImageBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> StepOutput<B> {
        self.losses(batch, false, None)
    }
}

/// Test-set reconstruction quality per dataset.
#[derive(Debug, Clone, Serialize)]
pub struct VaeReport {
    pub scaling_factor: f64,
    /// Mean per-image PSNR (dB, pixels in [0, 1]) on Fashion-MNIST's test split, and its image count.
    pub psnr_fashion_mnist: Option<f64>,
    pub n_fashion_mnist: usize,
    pub psnr_scenes: Option<f64>,
    pub n_scenes: usize,
}

/// Mean per-image PSNR of reconstructions (posterior mean), split by dataset (Fashion-MNIST, scenes).
pub fn evaluate_psnr<B: Backend>(
    vae: &AutoencoderKL<B>,
    data: &impl Dataset<ImageItem>,
    batch_size: usize,
    device: &B::Device,
) -> ((f64, usize), (f64, usize)) {
    let mut sums = [(0.0f64, 0usize); 2];
    let items: Vec<usize> = (0..data.len()).collect();
    for chunk in items.chunks(batch_size) {
        let batch: Vec<ImageItem> = chunk.iter().filter_map(|&i| data.get(i)).collect();
        let x = images_tensor::<B>(&batch, device);
        let rec = vae.decode(vae.encode(x.clone()).mode()).clamp(-1.0, 1.0);
        let n = batch.len();
        let mse: Vec<f32> = codi_core::tensor_ops::to_vec(
            (rec - x)
                .powi_scalar(2)
                .reshape([n as i32, -1])
                .mean_dim(1)
                .reshape([n]),
        );
        for (item, m) in batch.iter().zip(mse) {
            let psnr = 10.0 * (4.0 / (m as f64).max(1e-12)).log10();
            let k = usize::from(item.label >= SCENE_LABEL_OFFSET);
            sums[k].0 += psnr;
            sums[k].1 += 1;
        }
    }
    let mean = |(s, n): (f64, usize)| (s / n.max(1) as f64, n);
    (mean(sums[0]), mean(sums[1]))
}

/// 1 / std of the posterior means of up to `n` items.
pub fn latent_scaling_factor<B: Backend>(
    vae: &AutoencoderKL<B>,
    data: &(impl Dataset<ImageItem> + Clone),
    n: usize,
    device: &B::Device,
) -> f64 {
    let subset = crate::data::Spread::new(data.clone(), n);
    let mut values: Vec<f32> = Vec::new();
    let idx: Vec<usize> = (0..subset.len()).collect();
    for chunk in idx.chunks(64) {
        let batch: Vec<ImageItem> = chunk.iter().filter_map(|&i| subset.get(i)).collect();
        let z = vae.encode(images_tensor::<B>(&batch, device)).mode();
        values.extend(codi_core::tensor_ops::to_vec(z));
    }
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    1.0 / var.sqrt().max(1e-8)
}

/// Trains the VAE, sets its scaling factor, measures test PSNR and saves it (diffusers layout) to `out`.
pub fn pretrain_vae<B: AutodiffBackend>(
    config: &VaePretrainConfig,
    fashion_dir: &Path,
    run: &RunOptions,
    out: &Path,
    device: &B::Device,
) -> Result<(VaeReport, FitReport), TrainError> {
    crate::training::checks::Checked::check(config).map_err(TrainError::Config)?;
    B::seed(device, config.train.seed);
    let train = Mixed::load(&config.data, fashion_dir, Split::Train)?;
    let test = Mixed::load(&config.data, fashion_dir, Split::Test)?;
    let model = VaeTraining {
        vae: config.model.init::<B>(device),
        kl_weight: config.kl_weight,
        decoder_only: config.decoder_only,
    };
    let (trained, fit_report) = fit(
        "vae",
        model,
        &config.train,
        None,
        train_loader::<B, _, _, _, _>(
            ImageBatcher,
            train.clone(),
            &config.train,
            run,
            Some(reseed_backend::<B>(config.train.seed, device)),
            device,
        ),
        valid_loader::<B::InnerBackend, _, _, _, _>(
            ImageBatcher,
            test.clone(),
            &config.train,
            device,
        ),
        &TERMS,
        run,
    )?;
    let mut vae = trained.vae;
    let scaling_factor = latent_scaling_factor(&vae, &train, 2048, device);
    let mut model_cfg = config.model.clone();
    model_cfg.scaling_factor = scaling_factor;
    vae.scaling_factor = scaling_factor;
    let ((pf, nf), (ps, ns)) = evaluate_psnr(&vae, &test, 128, device);
    let report = VaeReport {
        scaling_factor,
        psnr_fashion_mnist: (nf > 0).then_some(pf),
        n_fashion_mnist: nf,
        psnr_scenes: (ns > 0).then_some(ps),
        n_scenes: ns,
    };
    codi_models::io::save_diffusers_dir(&vae, &model_cfg.to_diffusers(), out)?;
    Ok((report, fit_report))
}

/// Reseeds the backend's generator (the posterior samples' noise) at the start of every epoch from (seed,
/// epoch), so a resumed run draws what an unbroken one would.
fn reseed_backend<B: Backend>(seed: u64, device: &B::Device) -> crate::data::epoch::EpochStart {
    let device = device.clone();
    std::sync::Arc::new(move |epoch| {
        B::seed(
            &device,
            crate::data::epoch::mix(seed, epoch as u64, u64::MAX),
        )
    })
}
