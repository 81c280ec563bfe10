//! Distillation data: task pairs made on the fly from the datasets, in an order and with randomness that are
//! functions of (seed, epoch, position) only — so a run resumed from an epoch checkpoint sees exactly the
//! batches the uninterrupted run saw. Text embeddings (frozen text encoder) and target latents (frozen VAE)
//! are computed in the batcher on the inner backend.

use crate::data::epoch::mix;
use crate::data::loader::PassStart;
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

use crate::data::imagefolder::{Columns, FolderConfig, FolderItem, ImageFolder};
use crate::data::mixed::Mixed;
use crate::data::scenes::Scenes;
use crate::error::TrainError;
use crate::tasks::{self, CustomTask, InpaintConfig, SrConfig, TaskKind, TaskPair};
use crate::training::divergence::DivergenceWatch;

/// Where a task's pairs come from.
#[derive(Debug, Clone)]
pub enum TaskSource {
    /// Fashion-MNIST + scenes images (super-resolution, inpainting, editing).
    Images(Mixed),
    /// Scenes with depth (depth-to-image).
    Scenes(Scenes),
    /// A user's image folder, opened with the columns of the task.
    Folder(ImageFolder),
}

impl TaskSource {
    pub fn len(&self) -> usize {
        match self {
            TaskSource::Images(m) => m.len(),
            TaskSource::Scenes(s) => s.len,
            TaskSource::Folder(f) => f.len(),
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

    /// The columns of an image folder this task reads.
    pub fn folder_columns(&self, folder: &FolderConfig) -> Columns {
        match self {
            PairMaker::Builtin {
                task: TaskKind::Edit,
                ..
            } => folder.edit_columns(),
            PairMaker::Builtin {
                task: TaskKind::ControlNet | TaskKind::Depth,
                ..
            } => folder.controlnet_columns(),
            _ => folder.image_columns(),
        }
    }

    /// The pair of source item `index`, its randomness drawn from `key`; `None` when the source cannot make
    /// this task's pairs (depth from images without depth); an error for an image that cannot be read.
    pub fn make(
        &self,
        source: &TaskSource,
        index: usize,
        key: u64,
    ) -> Result<Option<TaskPair>, TrainError> {
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        if let TaskSource::Folder(folder) = source {
            let item = folder.load(index, &mut rng)?;
            return Ok(Some(self.folder_pair(item, &mut rng)));
        }
        let image = |src: &TaskSource| match src {
            TaskSource::Images(m) => m.get(index),
            TaskSource::Scenes(s) => s.get(index).map(|scene| scene.image),
            TaskSource::Folder(_) => None,
        };
        let (task, sr, inpaint) = match self {
            PairMaker::Custom(t) => {
                return Ok(image(source).map(|i| tasks::custom(t.as_ref(), &i, &mut rng)))
            }
            PairMaker::Builtin { task, sr, inpaint } => (*task, sr, inpaint),
        };
        Ok(match (task, source) {
            (TaskKind::Depth, TaskSource::Scenes(s)) => s.get(index).map(|s| tasks::depth(&s)),
            (TaskKind::Depth | TaskKind::ControlNet, _) => None,
            (TaskKind::SuperResolution, src) => {
                image(src).map(|i| tasks::super_resolution(sr, &i, &mut rng))
            }
            (TaskKind::Inpainting, src) => {
                image(src).map(|i| tasks::inpainting(inpaint, &i, &mut rng))
            }
            (TaskKind::Edit, src) => {
                let which = rng.random_range(0..crate::text::EDIT_INSTRUCTIONS.len());
                image(src).map(|i| tasks::edit(&i, which))
            }
        })
    }

    /// The pair of a decoded folder item: the condition from its condition image (edit, controlnet, depth
    /// as the image's grey level) or derived from the image.
    fn folder_pair(&self, item: FolderItem, rng: &mut ChaCha8Rng) -> TaskPair {
        let FolderItem { image, condition } = item;
        match (self, condition) {
            (PairMaker::Custom(t), _) => tasks::custom(t.as_ref(), &image, rng),
            (PairMaker::Builtin { task, sr, inpaint }, condition) => match (task, condition) {
                (TaskKind::SuperResolution, _) => tasks::super_resolution(sr, &image, rng),
                (TaskKind::Inpainting, _) => tasks::inpainting(inpaint, &image, rng),
                (TaskKind::Depth, Some(c)) => tasks::given(&image, grey(&c)),
                (_, Some(c)) => tasks::given(&image, c),
                (_, None) => {
                    unreachable!("a folder opened with a condition column has a condition")
                }
            },
        }
    }
}

/// The grey level of channel-major RGB (a depth map saved as an RGB image).
fn grey(rgb: &[f32]) -> Vec<f32> {
    let plane = rgb.len() / 3;
    (0..plane)
        .map(|i| (rgb[i] + rgb[plane + i] + rgb[2 * plane + i]) / 3.0)
        .collect()
}

/// One pair and the key of its diffusion noise.
#[derive(Debug, Clone)]
pub struct TaskItem {
    pub pair: TaskPair,
    pub key: u64,
    /// The noise key of the first item of the (whole, all replicas') batch this item belongs to: the
    /// batch-shared timestep is drawn from it. Its own key outside training batches.
    pub batch_key: u64,
}

/// The pair made from source item `first` (its randomness from `key`). A folder image that cannot be read is
/// an error, or, with `skip_bad_images`, counted and replaced by another item drawn from `key`.
fn pair_at(
    source: &TaskSource,
    maker: &PairMaker,
    first: usize,
    key: u64,
) -> Result<Option<TaskItem>, TrainError> {
    const TRIES: u64 = 16;
    let mut src = first;
    for attempt in 1..=TRIES {
        match maker.make(source, src, mix(key, 1, 0)) {
            Ok(pair) => {
                return Ok(pair.map(|pair| TaskItem {
                    pair,
                    key: noise_key(key),
                    batch_key: noise_key(key),
                }))
            }
            Err(e) => match source {
                TaskSource::Folder(f) if f.config.skip_bad_images && attempt < TRIES => {
                    f.skipped.fetch_add(1, Ordering::Relaxed);
                    eprintln!("skipping an unreadable image: {e}");
                    src = (mix(key, 3, attempt) % source.len() as u64) as usize;
                }
                _ => return Err(e),
            },
        }
    }
    unreachable!("the last try returns")
}

/// The key of an item's diffusion noise from the key of its position.
fn noise_key(position_key: u64) -> u64 {
    mix(position_key, 2, 0)
}

/// A pair for a loader: an error stops the run through `watch` (the loader's batch goes on without it).
fn pair_or_stop(
    made: Result<Option<TaskItem>, TrainError>,
    watch: &Option<DivergenceWatch>,
) -> Option<TaskItem> {
    made.unwrap_or_else(|e| {
        match watch {
            Some(w) => w.report_data(e.to_string()),
            None => eprintln!("{e}"),
        }
        None
    })
}

/// Training pairs: `len` per epoch, drawn with replacement at positions keyed by (seed, epoch, position).
/// `epoch` is shared so a resumed run can set it to the checkpoint's epoch; [`EpochPairs::pass_start`]
/// starts the next one.
#[derive(Debug, Clone)]
pub struct EpochPairs {
    pub source: TaskSource,
    pub maker: PairMaker,
    pub seed: u64,
    pub len: usize,
    pub epoch: Arc<AtomicUsize>,
    /// Stops the run at an unreadable image.
    pub watch: Option<DivergenceWatch>,
    /// Which part of every batch this loader reads.
    pub shard: Shard,
}

/// One replica's part of every batch in data-parallel training: with `count` replicas of batch `batch`
/// each, the whole batch is `count × batch` consecutive positions, and replica `index` reads the
/// `index`-th `batch` of them — so the replicas together read what one device with the whole batch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
    /// Items per batch on one replica.
    pub batch: usize,
}

impl Shard {
    /// One device reading whole batches of `batch`.
    pub fn whole(batch: usize) -> Self {
        Self {
            index: 0,
            count: 1,
            batch,
        }
    }

    /// The epoch position of this shard's item `index`, and that of its whole batch's first item.
    pub fn position(&self, index: usize) -> (usize, usize) {
        let whole = self.batch.max(1) * self.count;
        let first = index / self.batch.max(1) * whole;
        (
            first + self.index * self.batch + index % self.batch.max(1),
            first,
        )
    }
}

impl EpochPairs {
    /// For the loader: run before each epoch.
    pub fn pass_start(&self) -> PassStart {
        let epoch = self.epoch.clone();
        Arc::new(move || {
            epoch.fetch_add(1, Ordering::SeqCst);
        })
    }
}

impl Dataset<TaskItem> for EpochPairs {
    fn get(&self, index: usize) -> Option<TaskItem> {
        if index >= self.len || self.source.is_empty() {
            return None;
        }
        let e = self.epoch.load(Ordering::SeqCst) as u64;
        let (position, batch_first) = self.shard.position(index);
        let key = mix(self.seed, e, position as u64);
        let src = (key % self.source.len() as u64) as usize;
        let item = pair_or_stop(pair_at(&self.source, &self.maker, src, key), &self.watch)?;
        Some(TaskItem {
            batch_key: noise_key(mix(self.seed, e, batch_first as u64)),
            ..item
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
    /// Stops the run at an unreadable image.
    pub watch: Option<DivergenceWatch>,
}

impl FixedPairs {
    /// Pair `index`, or the error of its image.
    pub fn try_get(&self, index: usize) -> Result<Option<TaskItem>, TrainError> {
        if index >= self.len() {
            return Ok(None);
        }
        let src = index * self.source.len() / self.len;
        let key = mix(self.seed, u64::MAX, index as u64);
        pair_at(&self.source, &self.maker, src, key)
    }
}

impl Dataset<TaskItem> for FixedPairs {
    fn get(&self, index: usize) -> Option<TaskItem> {
        pair_or_stop(self.try_get(index), &self.watch)
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
        // Real captions rarely repeat: the cache is bounded (an SD-1.x embedding is 236 kB).
        const CACHED: usize = 1024;
        let ids = self
            .tokenizer
            .encode_batch::<BI>(&[text], &self.device)
            .expect("task texts tokenize");
        let h = self.encoder.forward(ids).last_hidden_state;
        let [_, n, d] = h.dims();
        let v = (Arc::new(codi_core::tensor_ops::to_vec(h)), [n, d]);
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= CACHED {
            cache.clear();
        }
        cache.insert(text.to_string(), v.clone());
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
/// noise: [b, c, h, w]; uniform: draws in [0, 1) for the timesteps (one per sample); shared_uniform: the
/// draw of a batch-shared timestep (the whole batch's first item's, also on a replica); uncond_text: the
/// empty prompt's embedding [b, tokens, hidden], when the loss folds classifier-free guidance in;
/// guidance_uniform: draws in [0, 1) for its weight (one per sample).
#[derive(Debug, Clone)]
pub struct DistillBatch<B: Backend> {
    pub x: Tensor<B, 4>,
    pub cond: Tensor<B, 4>,
    pub text: Tensor<B, 3>,
    pub noise: Tensor<B, 4>,
    pub uniform: Vec<f32>,
    pub shared_uniform: f32,
    pub uncond_text: Option<Tensor<B, 3>>,
    pub guidance_uniform: Vec<f32>,
}

#[derive(Clone)]
pub struct DistillBatcher {
    pub text: Arc<dyn TextEmbedder>,
    pub vae: Arc<dyn LatentEncoder>,
    pub condition_channels: usize,
    /// Embed the empty prompt too (classifier-free guidance folded into the loss).
    pub unconditional: bool,
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
        let mut guidance_uniform = Vec::with_capacity(n);
        for i in &items {
            let mut r = codi_core::SeededNoise::new(i.key);
            uniform.push(r.uniform(1)[0]);
            noise.extend(r.normals(c * h * w));
            // Drawn last, so the draws before it are those of a run without guidance.
            guidance_uniform.push(r.uniform(1)[0]);
        }
        // The first draw of an item's noise is its timestep's (above).
        let shared_uniform = codi_core::SeededNoise::new(items[0].batch_key).uniform(1)[0];
        let uncond_text = self.unconditional.then(|| {
            let (v, d) = self.text.embed("");
            let all: Vec<f32> = (0..n).flat_map(|_| v.iter().copied()).collect();
            Tensor::from_data(TensorData::new(all, [n, d[0], d[1]]), device)
        });
        DistillBatch {
            x: Tensor::from_data(TensorData::new(x, [n, c, h, w]), device),
            cond: Tensor::from_data(
                TensorData::new(cond, [n, self.condition_channels, s, s]),
                device,
            ),
            text: Tensor::from_data(TensorData::new(text, [n, td[0], td[1]]), device),
            noise: Tensor::from_data(TensorData::new(noise, [n, c, h, w]), device),
            uniform,
            shared_uniform,
            uncond_text,
            guidance_uniform,
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
pub fn eval_pairs(
    source: TaskSource,
    maker: PairMaker,
    seed: u64,
    n: usize,
) -> Result<Vec<TaskPair>, TrainError> {
    let fixed = FixedPairs {
        source,
        maker,
        seed,
        len: n,
        watch: None,
    };
    let mut pairs = Vec::with_capacity(fixed.len());
    for i in 0..fixed.len() {
        pairs.extend(fixed.try_get(i)?.map(|t| t.pair));
    }
    Ok(pairs)
}
