//! The few-step conditional model: a pipeline's backbone (the teacher's for PE-CoDi, the distilled one for
//! CoDi) with a distilled adapter, sampled with the CoDi sampler (or any codi-core sampler).

use std::path::Path;

use burn::tensor::{backend::Backend, Tensor};
use codi_core::{Denoiser, Guided, PredictionType, Sampler, SamplerKind, SeededNoise};
use codi_models::{ControlNetConfig, UNet2DConditionModel};

use crate::adapter::{load_adapter, read_adapter_info, AdapterInfo, CodiNet, DistillMode};
use crate::error::PipelineError;
use crate::text_to_image::TextToImage;

/// A text-to-image pipeline whose backbone carries a distilled adapter.
pub struct ConditionalPipeline<B: Backend> {
    /// The pipeline of the backbone (for CoDi its UNet is the distilled one).
    pub base: TextToImage<B>,
    /// The adapted model.
    pub net: CodiNet<B>,
    /// The adapter's `codi_adapter.json`.
    pub info: AdapterInfo,
}

/// The adapted model with fixed text and condition, as a codi-core denoiser.
pub struct CondDenoiser<'a, B: Backend> {
    /// The adapted model.
    pub net: &'a CodiNet<B>,
    /// Encoded prompts. [b, tokens, hidden]
    pub text: Tensor<B, 3>,
    /// Conditions in [0, 1]. [b, cc, H, W]
    pub cond: Tensor<B, 4>,
    /// What the backbone predicts.
    pub prediction_type: PredictionType,
}

impl<B: Backend> Denoiser<B> for CondDenoiser<'_, B> {
    fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }
    fn predict(&self, z: Tensor<B, 4>, t: Tensor<B, 1>) -> Tensor<B, 4> {
        self.net.forward(z, t, self.text.clone(), self.cond.clone())
    }
}

impl<B: Backend> ConditionalPipeline<B> {
    /// `teacher_dir`: the pretrained pipeline; `adapter_dir`: a `codi distill` output folder.
    pub fn load(
        teacher_dir: &Path,
        adapter_dir: &Path,
        device: &B::Device,
    ) -> Result<Self, PipelineError> {
        let mut base = TextToImage::load(teacher_dir, device)?;
        let (_, info) = read_adapter_info(adapter_dir)?;
        let unet_dir = match info.mode {
            DistillMode::PeCodi => teacher_dir.join("unet"),
            DistillMode::Codi => adapter_dir.join("unet"),
        };
        if info.mode == DistillMode::Codi {
            base.unet = UNet2DConditionModel::from_diffusers_dir(&unet_dir, device)?;
        }
        let (adapter, info) = load_adapter(adapter_dir, &unet_dir, device)?;
        check_adapter_fits(adapter_dir, &info, base.vae.factor())?;
        Ok(Self {
            net: CodiNet {
                unet: base.unet.clone(),
                adapter,
            },
            base,
            info,
        })
    }

    /// Whether the adapter is a conditional teacher (trained with the plain denoising loss): it is sampled over
    /// many DDIM steps, not with the CoDi sampler.
    pub fn is_teacher(&self) -> bool {
        self.info.loss.objective == codi_core::loss::Objective::Denoising
    }

    /// The DDIM sampler the adapter is sampled with when none is asked for: SD 1.x's for a conditional
    /// teacher, the round's grid for a progressive-distillation student; None for a CoDi adapter (it takes
    /// [`Self::codi_sampler`]).
    pub fn native_ddim(&self) -> Option<SamplerKind> {
        use codi_core::loss::Objective;
        match self.info.loss.objective {
            Objective::Denoising => Some(SamplerKind::ddim()),
            Objective::Progressive => {
                Some(SamplerKind::ddim_spaced(self.info.loss.progressive.spacing))
            }
            Objective::Consistency => None,
        }
    }

    /// The step count the adapter is sampled at when none is asked for: 50 for a conditional teacher, the
    /// student's for a progressive round, 4 for CoDi.
    pub fn default_steps(&self) -> usize {
        use codi_core::loss::Objective;
        match self.info.loss.objective {
            Objective::Denoising => 50,
            Objective::Progressive => self.info.loss.progressive.student_steps,
            Objective::Consistency => 4,
        }
    }

    /// The sampler the adapter is sampled with when none is asked for, at `steps`: [`Self::native_ddim`], else
    /// [`Self::codi_sampler`].
    pub fn default_sampler(&self, steps: usize) -> Sampler {
        match self.native_ddim() {
            Some(kind) => Sampler::new(kind, steps),
            None => self.codi_sampler(steps),
        }
    }

    /// The CoDi sampler on the grid the adapter was distilled on.
    pub fn codi_sampler(&self, steps: usize) -> Sampler {
        Sampler::new(
            SamplerKind::Codi {
                intervals: self.info.loss.intervals,
                boundary: self.info.loss.boundary,
            },
            steps,
        )
    }

    /// Samples one image per (condition, text). cond: [b, cc, s, s] in [0, 1] → [b, 3, s, s] in [0, 1]
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        &self,
        cond: Tensor<B, 4>,
        texts: &[&str],
        sampler: &Sampler,
        guidance: f64,
        noise: &mut SeededNoise,
        device: &B::Device,
        progress: impl FnMut(usize, usize),
    ) -> Result<Tensor<B, 4>, PipelineError> {
        let [n, channels, h, w] = cond.dims();
        let s = h;
        let want = self.info.condition_channels;
        let problem = if channels != want {
            Some(format!(
                "conditions of {channels} channels given, the adapter takes {want}"
            ))
        } else if h != w {
            Some(format!(
                "a condition of {h}×{w} pixels given: conditions are square"
            ))
        } else if texts.len() != n {
            Some(format!("{n} conditions but {} prompts", texts.len()))
        } else {
            None
        };
        if let Some(reason) = problem {
            return Err(PipelineError::Shape(reason));
        }
        self.base.check_size(s)?;
        let denoiser = |text, cond| CondDenoiser {
            net: &self.net,
            text,
            cond,
            prediction_type: self.base.prediction_type,
        };
        let guided = Guided {
            cond: denoiser(self.base.encode_prompts(texts, device)?, cond.clone()),
            uncond: denoiser(self.base.encode_prompts(&vec![""; n], device)?, cond),
            scale: guidance,
        };
        self.base
            .sample_and_decode(&guided, n, s, sampler, noise, device, progress)
    }
}

/// Refuses an adapter whose condition embedding does not bring the condition to the latent size of this
/// pipeline's VAE, or whose `controlnet/config.json` disagrees with `codi_adapter.json` on the condition's
/// channels: either would fail inside the network at the first step.
fn check_adapter_fits(
    adapter_dir: &Path,
    info: &AdapterInfo,
    vae_factor: usize,
) -> Result<(), PipelineError> {
    let file = adapter_dir.join("controlnet").join("config.json");
    let config =
        ControlNetConfig::from_diffusers(&codi_models::diffusers_json::read_json(&file)?, &file)?;
    let levels = config.conditioning_embedding_out_channels.len();
    let factor = 1usize << (levels - 1);
    let reason = if factor != vae_factor {
        format!(
            "the condition embedding downsamples by {factor} ({levels} levels) but the pipeline's VAE by \
             {vae_factor}: this adapter was made for another VAE"
        )
    } else if config.conditioning_channels != info.condition_channels {
        format!(
            "conditioning_channels {} disagrees with codi_adapter.json's condition_channels {}",
            config.conditioning_channels, info.condition_channels
        )
    } else {
        return Ok(());
    };
    Err(PipelineError::Data { file, reason })
}
