//! The text-to-image pipeline of a pretrained latent diffusion model in diffusers' folder layout
//! (`vae/`, `unet/`, `text_encoder/`, `tokenizer/`, `scheduler/`): load, save, and sample with any codi-core
//! sampler and classifier-free guidance.

use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Tensor, TensorData};
use codi_core::{
    Denoiser, Guided, NoiseSchedule, NoiseScheduleConfig, PredictionType, Sampler, SeededNoise,
};
use codi_models::tokenizer::TextTokenizer;
use codi_models::{
    AutoencoderKL, CLIPTextConfig, CLIPTextModel, UNet2DConditionModel, UNet2DConditionModelConfig,
};
use serde_json::json;

use crate::error::PipelineError;

/// `scheduler/scheduler_config.json`: the training noise schedule and what the UNet predicts.
#[derive(Debug, Clone)]
pub struct SchedulerFile {
    /// The training noise schedule (β range and spacing, number of timesteps).
    pub schedule: NoiseScheduleConfig,
    /// What the UNet predicts: ε, v or x₀.
    pub prediction_type: PredictionType,
}

impl SchedulerFile {
    /// A scheduler file from its two parts.
    pub fn new(schedule: NoiseScheduleConfig, prediction_type: PredictionType) -> Self {
        Self {
            schedule,
            prediction_type,
        }
    }

    /// The file as diffusers writes a `DDIMScheduler` config.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "_class_name": "DDIMScheduler",
            "num_train_timesteps": self.schedule.num_train_timesteps,
            "beta_start": self.schedule.beta_start,
            "beta_end": self.schedule.beta_end,
            "beta_schedule": self.schedule.beta_schedule,
            "prediction_type": self.prediction_type,
            "clip_sample": false,
            "set_alpha_to_one": false,
            "steps_offset": 1,
            "timestep_spacing": "leading",
        })
    }

    /// Reads a scheduler config of any class SD checkpoints ship (PNDM, DDIM, Euler, DPM-Solver, LMS): the noise
    /// schedule and `prediction_type`. `clip_sample` or `thresholding` set to true are errors (codi's samplers
    /// do neither); the other keys choose a sampler, which codi's commands choose themselves.
    pub fn read(file: &Path) -> Result<Self, PipelineError> {
        let v = codi_models::diffusers_json::read_json(file)?;
        let err = |reason: String| PipelineError::Data {
            file: file.to_path_buf(),
            reason,
        };
        // Settings that change what a step computes, which codi's samplers do not implement.
        for key in ["clip_sample", "thresholding"] {
            codi_models::diffusers_json::require_default(&v, file, key, &[])?;
        }
        let get_f = |k: &str, d: f64| v.get(k).and_then(|x| x.as_f64()).unwrap_or(d);
        let beta_schedule = match v.get("beta_schedule").and_then(|x| x.as_str()) {
            Some(s) => s
                .parse()
                .map_err(|e: codi_core::CoreError| err(e.to_string()))?,
            None => codi_core::BetaSchedule::ScaledLinear,
        };
        let prediction_type = match v.get("prediction_type").and_then(|x| x.as_str()) {
            Some(s) => s
                .parse()
                .map_err(|e: codi_core::CoreError| err(e.to_string()))?,
            None => PredictionType::Epsilon,
        };
        let scheduler = Self {
            schedule: NoiseScheduleConfig::new()
                .with_num_train_timesteps(get_f("num_train_timesteps", 1000.0) as usize)
                .with_beta_start(get_f("beta_start", 0.00085))
                .with_beta_end(get_f("beta_end", 0.012))
                .with_beta_schedule(beta_schedule),
            prediction_type,
        };
        // A schedule that cannot be built is this file's error, not a later step's.
        scheduler.schedule.init().map_err(|e| err(e.to_string()))?;
        Ok(scheduler)
    }
}

/// Writes the trained parts of a pipeline next to an existing `vae/`.
pub fn save_pipeline_parts<B: Backend>(
    dir: &Path,
    unet: &UNet2DConditionModel<B>,
    unet_config: &UNet2DConditionModelConfig,
    text_encoder: &CLIPTextModel<B>,
    text_config: &CLIPTextConfig,
    scheduler: &SchedulerFile,
) -> Result<(), PipelineError> {
    codi_models::io::save_diffusers_dir(unet, &unet_config.to_diffusers(), &dir.join("unet"))?;
    codi_models::io::save_dir(
        text_encoder,
        &text_config.to_json(),
        &dir.join("text_encoder"),
        "model.safetensors",
    )?;
    let file = dir.join("scheduler").join("scheduler_config.json");
    let err = |e: std::io::Error| PipelineError::Data {
        file: file.clone(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(file.parent().expect("parent")).map_err(err)?;
    let tmp = file.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(&scheduler.to_json()).expect("JSON"),
    )
    .map_err(err)?;
    std::fs::rename(&tmp, &file).map_err(err)?;
    let index = dir.join("model_index.json");
    let index_json = json!({
        "_class_name": "StableDiffusionPipeline",
        "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["codi", "WordLevelTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    });
    std::fs::write(
        &index,
        serde_json::to_string_pretty(&index_json).expect("JSON"),
    )
    .map_err(|e| PipelineError::Data {
        file: index.clone(),
        reason: e.to_string(),
    })
}

/// A loaded text-to-image model.
pub struct TextToImage<B: Backend> {
    /// `vae/`: pixels ↔ latents.
    pub vae: AutoencoderKL<B>,
    /// `unet/`: the denoiser.
    pub unet: UNet2DConditionModel<B>,
    /// `text_encoder/`: prompts → hidden states.
    pub text_encoder: CLIPTextModel<B>,
    /// `tokenizer/`.
    pub tokenizer: TextTokenizer,
    /// `scheduler/`: the training noise schedule.
    pub schedule: NoiseSchedule,
    /// `scheduler/`: what the UNet predicts.
    pub prediction_type: PredictionType,
    /// The folder it was loaded from.
    pub dir: PathBuf,
}

/// The UNet with a fixed text embedding, as a codi-core denoiser.
pub struct TextDenoiser<'a, B: Backend> {
    /// The backbone.
    pub unet: &'a UNet2DConditionModel<B>,
    /// [batch, tokens, hidden]
    pub text: Tensor<B, 3>,
    /// What the UNet predicts.
    pub prediction_type: PredictionType,
}

impl<B: Backend> Denoiser<B> for TextDenoiser<'_, B> {
    fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }
    fn predict(&self, z: Tensor<B, 4>, t: Tensor<B, 1>) -> Tensor<B, 4> {
        self.unet.forward(z, t, self.text.clone())
    }
}

impl<B: Backend> TextToImage<B> {
    /// Loads a pipeline folder in diffusers' layout (`vae/`, `unet/`, `text_encoder/`, `tokenizer/`,
    /// `scheduler/`).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, PipelineError> {
        if !dir.is_dir() {
            return Err(PipelineError::Data {
                file: dir.to_path_buf(),
                reason:
                    "not a folder (expected vae/, unet/, text_encoder/, tokenizer/, scheduler/)"
                        .into(),
            });
        }
        let scheduler = SchedulerFile::read(&dir.join("scheduler").join("scheduler_config.json"))?;
        Ok(Self {
            vae: AutoencoderKL::from_diffusers_dir(&dir.join("vae"), device)?,
            unet: UNet2DConditionModel::from_diffusers_dir(&dir.join("unet"), device)?,
            text_encoder: CLIPTextModel::from_pretrained_dir(&dir.join("text_encoder"), device)?,
            tokenizer: crate::tokenizer::load_tokenizer(&dir.join("tokenizer"))?,
            schedule: scheduler.schedule.init()?,
            prediction_type: scheduler.prediction_type,
            dir: dir.to_path_buf(),
        })
    }

    /// Text embeddings of prompts. → [prompts, tokens, hidden]
    pub fn encode_prompts(
        &self,
        prompts: &[&str],
        device: &B::Device,
    ) -> Result<Tensor<B, 3>, PipelineError> {
        let ids = self.tokenizer.encode_batch(prompts, device)?;
        Ok(self.text_encoder.forward(ids).last_hidden_state)
    }

    /// Image sides must be a multiple of this: the VAE's factor times the UNet's downsampling (2 per level
    /// after the first).
    pub fn size_multiple(&self) -> usize {
        self.vae.factor() << self.unet.down_blocks.len().saturating_sub(1)
    }

    /// Refuses an image side the networks cannot take (0, or not a multiple of [`Self::size_multiple`]).
    pub fn check_size(&self, size: usize) -> Result<(), PipelineError> {
        let m = self.size_multiple();
        if size == 0 || !size.is_multiple_of(m) {
            return Err(PipelineError::Data {
                file: self.dir.clone(),
                reason: format!(
                    "images of {size} pixels cannot be sampled: this pipeline needs a multiple of {m} \
                     (its VAE's factor {} times its UNet's downsampling {})",
                    self.vae.factor(),
                    m / self.vae.factor()
                ),
            });
        }
        Ok(())
    }

    /// Latent shape [c, h, w] for images of `size` pixels.
    pub fn latent_shape(&self, size: usize) -> [usize; 3] {
        let f = self.vae.factor();
        [self.vae.latent_channels(), size / f, size / f]
    }

    /// Samples one image per prompt. noise: the seeded stream for z_T (and any stochastic sampler).
    /// → [prompts, 3, size, size] in [0, 1]
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        &self,
        prompts: &[&str],
        sampler: &Sampler,
        guidance: f64,
        size: usize,
        noise: &mut SeededNoise,
        device: &B::Device,
        progress: impl FnMut(usize, usize),
    ) -> Result<Tensor<B, 4>, PipelineError> {
        let n = prompts.len();
        let denoiser = |text| TextDenoiser {
            unet: &self.unet,
            text,
            prediction_type: self.prediction_type,
        };
        let guided = Guided {
            cond: denoiser(self.encode_prompts(prompts, device)?),
            uncond: denoiser(self.encode_prompts(&vec![""; n], device)?),
            scale: guidance,
        };
        self.sample_and_decode(&guided, n, size, sampler, noise, device, progress)
    }

    /// The shared end of every sampling: z_T drawn from `noise` for `n` images of `size` pixels, `sampler`
    /// run on `denoiser`, the latents decoded. → images [n, 3, size, size] in [0, 1]
    #[allow(clippy::too_many_arguments)]
    pub fn sample_and_decode(
        &self,
        denoiser: &impl Denoiser<B>,
        n: usize,
        size: usize,
        sampler: &Sampler,
        noise: &mut SeededNoise,
        device: &B::Device,
        progress: impl FnMut(usize, usize),
    ) -> Result<Tensor<B, 4>, PipelineError> {
        let [c, h, w] = self.latent_shape(size);
        let z = Tensor::from_data(
            TensorData::new(noise.normals(n * c * h * w), [n, c, h, w]),
            device,
        );
        let latents = sampler.sample(&self.schedule, denoiser, z, noise, progress)?;
        Ok(self.decode(latents))
    }

    /// Scaled latents → images in [0, 1]. [b, c, h, w] → [b, 3, H, W]
    pub fn decode(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        self.vae
            .decode(latents.div_scalar(self.vae.scaling_factor))
            .clamp(-1.0, 1.0)
            .add_scalar(1.0)
            .div_scalar(2.0)
    }
}
