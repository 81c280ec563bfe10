//! The few-step conditional model: a pipeline's backbone (the teacher's for PE-CoDi, the distilled one for
//! CoDi) with a distilled adapter, sampled with the CoDi sampler (or any codi-core sampler).

use std::path::Path;

use burn::tensor::{backend::Backend, Tensor, TensorData};
use codi_core::{Denoiser, Guided, PredictionType, Sampler, SamplerKind, SeededNoise};
use codi_models::UNet2DConditionModel;

use crate::distill::data::TaskSource;
use crate::distill::export::{load_adapter, AdapterInfo};
use crate::distill::model::CodiNet;
use crate::distill::DistillMode;
use crate::error::TrainError;
use crate::pipeline::TextToImage;
use crate::tasks::TaskPair;

pub struct ConditionalPipeline<B: Backend> {
    pub base: TextToImage<B>,
    pub net: CodiNet<B>,
    pub info: AdapterInfo,
}

/// The adapted model with fixed text and condition, as a codi-core denoiser.
pub struct CondDenoiser<'a, B: Backend> {
    pub net: &'a CodiNet<B>,
    pub text: Tensor<B, 3>,
    pub cond: Tensor<B, 4>,
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
    ) -> Result<Self, TrainError> {
        let mut base = TextToImage::load(teacher_dir, device)?;
        let file = adapter_dir.join("codi_adapter.json");
        let info: AdapterInfo = serde_json::from_value(codi_models::diffusers_json::read_json(
            &file,
        )?)
        .map_err(|e| TrainError::Data {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        let unet_dir = match info.mode {
            DistillMode::PeCodi => teacher_dir.join("unet"),
            DistillMode::Codi => adapter_dir.join("unet"),
        };
        if info.mode == DistillMode::Codi {
            base.unet = UNet2DConditionModel::from_diffusers_dir(&unet_dir, device)?;
        }
        let (adapter, info) = load_adapter(adapter_dir, &unet_dir, device)?;
        Ok(Self {
            net: CodiNet {
                unet: base.unet.clone(),
                adapter,
            },
            base,
            info,
        })
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
    ) -> Result<Tensor<B, 4>, TrainError> {
        let [n, _, s, _] = cond.dims();
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

/// Pairs as tensors. → (conditions [n, cc, s, s], targets [n, 3, s, s])
pub fn pairs_tensors<B: Backend>(
    pairs: &[TaskPair],
    channels: usize,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let n = pairs.len();
    let s = pairs.first().map_or(0, |p| p.size);
    let cond: Vec<f32> = pairs
        .iter()
        .flat_map(|p| p.condition.iter().copied())
        .collect();
    let target: Vec<f32> = pairs
        .iter()
        .flat_map(|p| p.target.iter().copied())
        .collect();
    (
        Tensor::from_data(TensorData::new(cond, [n, channels, s, s]), device),
        Tensor::from_data(TensorData::new(target, [n, 3, s, s]), device),
    )
}

/// The first `n` evaluation pairs of a task source (same as the distiller's validation pairs).
pub fn eval_pairs(
    source: TaskSource,
    maker: crate::distill::data::PairMaker,
    seed: u64,
    n: usize,
) -> Vec<TaskPair> {
    use burn::data::dataset::Dataset;
    let fixed = crate::distill::data::FixedPairs {
        source,
        maker,
        seed,
        len: n,
    };
    (0..fixed.len())
        .filter_map(|i| fixed.get(i))
        .map(|t| t.pair)
        .collect()
}
