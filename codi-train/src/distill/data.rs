//! Distillation data: task pairs made on the fly from the datasets, in an order and with randomness that are
//! functions of (seed, epoch, position) only — so a run resumed from an epoch checkpoint sees exactly the
//! batches the uninterrupted run saw. Text embeddings (frozen text encoder) and target latents (frozen VAE)
//! are computed in the batcher on the inner backend.

use crate::data::epoch::mix;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use codi_models::tokenizer::TextTokenizer;
use codi_models::{AutoencoderKL, CLIPTextModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::mixed::Mixed;
use crate::data::scenes::Scenes;
use crate::tasks::{self, CustomTask, InpaintConfig, SrConfig, TaskKind, TaskPair};

/// Where a task's pairs come from.
#[derive(Debug, Clone)]
pub enum TaskSource {
    /// Fashion-MNIST + scenes images (super-resolution, inpainting, editing).
    Images(Mixed),
    /// Scenes with depth (depth-to-image).
    Scenes(Scenes),
}

impl TaskSource {
    pub fn len(&self) -> usize {
        match self {
            TaskSource::Images(m) => m.len(),
            TaskSource::Scenes(s) => s.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How to make pairs: a built-in task with its settings, or a task defined by a program.
#[derive(Clone)]
pub enum PairMaker {
    /// One of [`TaskKind`] with the settings of its degradations.
    Builtin {
        /// The task.
        task: TaskKind,
        /// Super-resolution's degradation.
        sr: SrConfig,
        /// Inpainting's boxes.
        inpaint: InpaintConfig,
    },
    /// A [`CustomTask`]: its condition from each image, the image as target, the caption as prompt.
    Custom(Arc<dyn CustomTask>),
}

impl std::fmt::Debug for PairMaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PairMaker::Builtin { task, .. } => write!(f, "PairMaker::Builtin({})", task.name()),
            PairMaker::Custom(t) => write!(f, "PairMaker::Custom({})", t.name()),
        }
    }
}

impl PairMaker {
    /// The built-in task of a distillation config.
    pub fn from_config(config: &super::DistillConfig) -> Self {
        PairMaker::Builtin {
            task: config.task,
            sr: config.sr.clone(),
            inpaint: config.inpaint.clone(),
        }
    }

    /// The task's name (runs and `codi_adapter.json` carry it).
    pub fn name(&self) -> String {
        match self {
            PairMaker::Builtin { task, .. } => task.name().to_string(),
            PairMaker::Custom(t) => t.name().to_string(),
        }
    }

    /// Channels of the condition image.
    pub fn condition_channels(&self) -> usize {
        match self {
            PairMaker::Builtin { task, .. } => task.condition_channels(),
            PairMaker::Custom(t) => t.condition_channels(),
        }
    }

    /// Whether the pairs come from the depth scenes (else from the images of Fashion-MNIST and the scenes).
    pub fn needs_depth(&self) -> bool {
        matches!(
            self,
            PairMaker::Builtin {
                task: TaskKind::Depth,
                ..
            }
        )
    }

    /// The pair of source item `index`, its randomness drawn from `key`.
    pub fn make(&self, source: &TaskSource, index: usize, key: u64) -> Option<TaskPair> {
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        let image = |src: &TaskSource| match src {
            TaskSource::Images(m) => m.get(index),
            TaskSource::Scenes(s) => s.get(index).map(|scene| scene.image),
        };
        let (task, sr, inpaint) = match self {
            PairMaker::Custom(t) => {
                return Some(tasks::custom(t.as_ref(), &image(source)?, &mut rng))
            }
            PairMaker::Builtin { task, sr, inpaint } => (*task, sr, inpaint),
        };
        Some(match (task, source) {
            (TaskKind::Depth, TaskSource::Scenes(s)) => tasks::depth(&s.get(index)?),
            (TaskKind::Depth, TaskSource::Images(_)) => return None,
            (TaskKind::SuperResolution, src) => tasks::super_resolution(sr, &image(src)?, &mut rng),
            (TaskKind::Inpainting, src) => tasks::inpainting(inpaint, &image(src)?, &mut rng),
            (TaskKind::Edit, src) => {
                let which = rng.random_range(0..crate::text::EDIT_INSTRUCTIONS.len());
                tasks::edit(&image(src)?, which)
            }
        })
    }
}

/// One pair and the key of its diffusion noise.
#[derive(Debug, Clone)]
pub struct TaskItem {
    pub pair: TaskPair,
    pub key: u64,
}

/// Training pairs: `len` per epoch, drawn with replacement; reading position 0 starts the next epoch.
/// `epoch` is shared so a resumed run can set it to the checkpoint's epoch.
#[derive(Debug, Clone)]
pub struct EpochPairs {
    pub source: TaskSource,
    pub maker: PairMaker,
    pub seed: u64,
    pub len: usize,
    pub epoch: Arc<AtomicUsize>,
}

impl Dataset<TaskItem> for EpochPairs {
    fn get(&self, index: usize) -> Option<TaskItem> {
        if index >= self.len || self.source.is_empty() {
            return None;
        }
        if index == 0 {
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
        let e = self.epoch.load(Ordering::SeqCst) as u64;
        let key = mix(self.seed, e, index as u64);
        let src = (key % self.source.len() as u64) as usize;
        Some(TaskItem {
            pair: self.maker.make(&self.source, src, mix(key, 1, 0))?,
            key: mix(key, 2, 0),
        })
    }
    fn len(&self) -> usize {
        self.len
    }
}

/// Evaluation pairs: `len` items spread through the source, the same every time.
#[derive(Debug, Clone)]
pub struct FixedPairs {
    pub source: TaskSource,
    pub maker: PairMaker,
    pub seed: u64,
    pub len: usize,
}

impl Dataset<TaskItem> for FixedPairs {
    fn get(&self, index: usize) -> Option<TaskItem> {
        if index >= self.len {
            return None;
        }
        let src = index * self.source.len() / self.len;
        let key = mix(self.seed, u64::MAX, index as u64);
        Some(TaskItem {
            pair: self.maker.make(&self.source, src, mix(key, 1, 0))?,
            key: mix(key, 2, 0),
        })
    }
    fn len(&self) -> usize {
        self.len.min(self.source.len())
    }
}

/// Frozen text encoder with a cache (captions and instructions repeat).
pub trait TextEmbedder: Send + Sync {
    /// → (values, [tokens, hidden]) per text
    fn embed(&self, text: &str) -> (Arc<Vec<f32>>, [usize; 2]);
}

/// Frozen VAE encoder: images in [0, 1] (n × 3 × s × s) → scaled latents (n × c × h × w).
pub trait LatentEncoder: Send + Sync {
    fn encode(&self, images: Vec<f32>, n: usize, size: usize) -> (Vec<f32>, [usize; 3]);
}

/// A text's embedding and its [tokens, hidden] shape.
type Embedding = (Arc<Vec<f32>>, [usize; 2]);

pub struct FrozenText<BI: Backend> {
    pub encoder: CLIPTextModel<BI>,
    pub tokenizer: TextTokenizer,
    pub device: BI::Device,
    cache: Mutex<HashMap<String, Embedding>>,
}

impl<BI: Backend> FrozenText<BI> {
    pub fn new(encoder: CLIPTextModel<BI>, tokenizer: TextTokenizer, device: BI::Device) -> Self {
        Self {
            encoder,
            tokenizer,
            device,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl<BI: Backend> TextEmbedder for FrozenText<BI>
where
    BI::Device: Send + Sync,
{
    fn embed(&self, text: &str) -> (Arc<Vec<f32>>, [usize; 2]) {
        if let Some(hit) = self.cache.lock().unwrap().get(text) {
            return hit.clone();
        }
        let ids = self
            .tokenizer
            .encode_batch::<BI>(&[text], &self.device)
            .expect("task texts tokenize");
        let h = self.encoder.forward(ids).last_hidden_state;
        let [_, n, d] = h.dims();
        let v = (Arc::new(codi_core::tensor_ops::to_vec(h)), [n, d]);
        self.cache
            .lock()
            .unwrap()
            .insert(text.to_string(), v.clone());
        v
    }
}

pub struct FrozenVae<BI: Backend> {
    pub vae: AutoencoderKL<BI>,
    pub device: BI::Device,
}

impl<BI: Backend> LatentEncoder for FrozenVae<BI>
where
    BI::Device: Send + Sync,
{
    fn encode(&self, images: Vec<f32>, n: usize, size: usize) -> (Vec<f32>, [usize; 3]) {
        let x =
            Tensor::<BI, 4>::from_data(TensorData::new(images, [n, 3, size, size]), &self.device)
                .mul_scalar(2.0)
                .sub_scalar(1.0);
        let z = self
            .vae
            .encode(x)
            .mode()
            .mul_scalar(self.vae.scaling_factor);
        let [_, c, h, w] = z.dims();
        (codi_core::tensor_ops::to_vec(z), [c, h, w])
    }
}

/// x: [b, c, h, w] target latents; cond: [b, cc, H, W] in [0, 1]; text: [b, tokens, hidden];
/// noise: [b, c, h, w]; uniform: draws in [0, 1) for the timesteps (one per sample).
#[derive(Debug, Clone)]
pub struct DistillBatch<B: Backend> {
    pub x: Tensor<B, 4>,
    pub cond: Tensor<B, 4>,
    pub text: Tensor<B, 3>,
    pub noise: Tensor<B, 4>,
    pub uniform: Vec<f32>,
}

#[derive(Clone)]
pub struct DistillBatcher {
    pub text: Arc<dyn TextEmbedder>,
    pub vae: Arc<dyn LatentEncoder>,
    pub condition_channels: usize,
}

impl<B: Backend> Batcher<B, TaskItem, DistillBatch<B>> for DistillBatcher {
    fn batch(&self, items: Vec<TaskItem>, device: &B::Device) -> DistillBatch<B> {
        let n = items.len();
        let s = items[0].pair.size;
        let targets: Vec<f32> = items
            .iter()
            .flat_map(|i| i.pair.target.iter().copied())
            .collect();
        let (x, [c, h, w]) = self.vae.encode(targets, n, s);
        let cond: Vec<f32> = items
            .iter()
            .flat_map(|i| i.pair.condition.iter().copied())
            .collect();
        let mut text = Vec::new();
        let mut td = [0, 0];
        for i in &items {
            let (v, d) = self.text.embed(&i.pair.text);
            text.extend(v.iter().copied());
            td = d;
        }
        let mut noise = Vec::with_capacity(n * c * h * w);
        let mut uniform = Vec::with_capacity(n);
        for i in &items {
            let mut r = codi_core::SeededNoise::new(i.key);
            uniform.push(r.uniform(1)[0]);
            noise.extend(r.normals(c * h * w));
        }
        DistillBatch {
            x: Tensor::from_data(TensorData::new(x, [n, c, h, w]), device),
            cond: Tensor::from_data(
                TensorData::new(cond, [n, self.condition_channels, s, s]),
                device,
            ),
            text: Tensor::from_data(TensorData::new(text, [n, td[0], td[1]]), device),
            noise: Tensor::from_data(TensorData::new(noise, [n, c, h, w]), device),
            uniform,
        }
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
pub fn eval_pairs(source: TaskSource, maker: PairMaker, seed: u64, n: usize) -> Vec<TaskPair> {
    let fixed = FixedPairs {
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
