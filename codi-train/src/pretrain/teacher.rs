//! Teacher pretraining: the text-to-image UNet and its text encoder trained together on VAE latents with the
//! diffusion loss (ε, v or x target), dropping the caption for classifier-free guidance. The training set's
//! latents are encoded once with the pretrained VAE (posterior means × scaling factor).

use std::path::Path;
use std::sync::{Arc, Mutex};

use burn::config::Config;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, InMemDataset};
use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use codi_core::loss::denoising_loss;
use codi_core::tensor_ops::per_sample;
use codi_core::{NoiseSchedule, NoiseScheduleConfig, PredictionType, SeededNoise};
use codi_models::tokenizer::TextTokenizer;
use codi_models::{
    AutoencoderKL, CLIPTextConfig, CLIPTextModel, UNet2DConditionModel, UNet2DConditionModelConfig,
};

use crate::data::batch::images_tensor;
use crate::data::fashion_mnist::Split;
use crate::data::mixed::{DataConfig, Mixed};
use crate::data::ImageItem;
use crate::error::TrainError;
use crate::training::output::StepOutput;
use crate::training::{fit, train_loader, valid_loader, FitReport, RunOptions, TrainLoopConfig};
use codi_pipelines::text_to_image::{save_pipeline_parts, SchedulerFile};

#[derive(Config, Debug)]
pub struct TeacherPretrainConfig {
    pub unet: UNet2DConditionModelConfig,
    pub text_encoder: CLIPTextConfig,
    #[config(default = "NoiseScheduleConfig::new()")]
    pub schedule: NoiseScheduleConfig,
    #[config(default = "PredictionType::Epsilon")]
    pub prediction_type: PredictionType,
    /// Probability that a caption is replaced by the empty prompt (for classifier-free guidance).
    #[config(default = 0.1)]
    pub text_dropout: f64,
    pub train: TrainLoopConfig,
    pub data: DataConfig,
}

/// One training latent. latent: [c, h, w] flattened, already × scaling factor.
#[derive(Debug, Clone)]
pub struct LatentItem {
    pub latent: Vec<f32>,
    pub caption: String,
    pub label: usize,
    pub index: usize,
}

/// latents, noise: [batch, c, h, w]; ids: [batch, tokens]; timesteps: \[batch\]
#[derive(Debug, Clone)]
pub struct TeacherBatch<B: Backend> {
    pub latents: Tensor<B, 4>,
    pub ids: Tensor<B, 2, Int>,
    pub noise: Tensor<B, 4>,
    pub timesteps: Tensor<B, 1, Int>,
}

/// Draws noise, timesteps and caption dropout. Training draws from one seeded stream; validation seeds each
/// item by its index so every validation scores the same noisy latents.
#[derive(Clone)]
pub struct TeacherBatcher {
    pub tokenizer: Arc<TextTokenizer>,
    pub shape: [usize; 3],
    pub num_train_timesteps: usize,
    pub dropout: f64,
    /// None: validation.
    pub rng: Option<Arc<Mutex<SeededNoise>>>,
}

impl<B: Backend> Batcher<B, LatentItem, TeacherBatch<B>> for TeacherBatcher {
    fn batch(&self, items: Vec<LatentItem>, device: &B::Device) -> TeacherBatch<B> {
        let n = items.len();
        let [c, h, w] = self.shape;
        let per = c * h * w;
        let mut noise = Vec::with_capacity(n * per);
        let mut ts = Vec::with_capacity(n);
        let mut captions = Vec::with_capacity(n);
        for item in &items {
            let (eps, u) = match &self.rng {
                Some(rng) => {
                    let mut r = rng.lock().unwrap();
                    (r.normals(per), r.uniform(2))
                }
                None => {
                    let mut r = SeededNoise::new(0x5eed_0000 + item.index as u64);
                    (r.normals(per), vec![r.uniform(1)[0], 1.0])
                }
            };
            noise.extend(eps);
            ts.push(
                ((u[0] as f64 * self.num_train_timesteps as f64) as i64)
                    .min(self.num_train_timesteps as i64 - 1),
            );
            let drop = (u[1] as f64) < self.dropout;
            captions.push(if drop { "" } else { item.caption.as_str() });
        }
        let latents: Vec<f32> = items
            .iter()
            .flat_map(|i| i.latent.iter().copied())
            .collect();
        TeacherBatch {
            latents: Tensor::from_data(TensorData::new(latents, [n, c, h, w]), device),
            noise: Tensor::from_data(TensorData::new(noise, [n, c, h, w]), device),
            timesteps: Tensor::from_data(TensorData::new(ts, [n]), device),
            ids: self
                .tokenizer
                .encode_batch(&captions, device)
                .expect("a word-level tokenizer maps any text (unknown words to <unk>)"),
        }
    }
}

#[derive(Module, Debug)]
pub struct TeacherTraining<B: Backend> {
    pub unet: UNet2DConditionModel<B>,
    pub text_encoder: CLIPTextModel<B>,
    #[module(skip)]
    pub schedule: NoiseSchedule,
    #[module(skip)]
    pub prediction_type: PredictionType,
}

impl<B: Backend> TeacherTraining<B> {
    fn losses(&self, batch: TeacherBatch<B>) -> StepOutput<B> {
        let n = batch.latents.dims()[0];
        let ab = self.schedule.gather_alpha_bar(batch.timesteps.clone());
        let alpha = ab.clone().sqrt();
        let sigma = ab.neg().add_scalar(1.0).sqrt();
        let (a4, s4) = (
            per_sample::<B, 4>(alpha.clone()),
            per_sample::<B, 4>(sigma.clone()),
        );
        let x = batch.latents;
        let z = x.clone() * a4 + batch.noise.clone() * s4;
        let text = self.text_encoder.forward(batch.ids).last_hidden_state;
        let out = self.unet.forward(z, batch.timesteps.float(), text);
        let loss = denoising_loss(self.prediction_type, out, x, batch.noise, alpha, sigma);
        StepOutput::new(loss, vec![], n)
    }
}

impl<B: AutodiffBackend> TrainStep for TeacherTraining<B> {
    type Input = TeacherBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: TeacherBatch<B>) -> TrainOutput<StepOutput<B>> {
        let out = self.losses(batch);
        let grads = out.loss.backward();
        TrainOutput::new(self, grads, out)
    }
}

impl<B: Backend> InferenceStep for TeacherTraining<B> {
    type Input = TeacherBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: TeacherBatch<B>) -> StepOutput<B> {
        self.losses(batch)
    }
}

/// Encodes a dataset's images to scaled latents (posterior means), printing progress.
pub fn encode_dataset<B: Backend>(
    vae: &AutoencoderKL<B>,
    data: &impl Dataset<ImageItem>,
    device: &B::Device,
) -> Vec<LatentItem> {
    let mut out = Vec::with_capacity(data.len());
    let idx: Vec<usize> = (0..data.len()).collect();
    let start = std::time::Instant::now();
    let mut last = start;
    for chunk in idx.chunks(256) {
        let items: Vec<ImageItem> = chunk.iter().filter_map(|&i| data.get(i)).collect();
        let z = vae
            .encode(images_tensor::<B>(&items, device))
            .mode()
            .mul_scalar(vae.scaling_factor);
        let per = z.dims()[1..].iter().product::<usize>();
        let values = codi_core::tensor_ops::to_vec(z);
        for (k, (item, &i)) in items.into_iter().zip(chunk).enumerate() {
            out.push(LatentItem {
                latent: values[k * per..(k + 1) * per].to_vec(),
                caption: item.caption,
                label: item.label,
                index: i,
            });
        }
        if last.elapsed().as_secs() >= 10 {
            last = std::time::Instant::now();
            println!(
                "[encode] {}/{} images ({:.0} s)",
                out.len(),
                data.len(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    out
}

/// Trains UNet + text encoder on the VAE's latents and saves the pipeline parts (unet/, text_encoder/,
/// tokenizer/, scheduler/) into `out` (where `vae/` already is).
pub fn pretrain_teacher<B: AutodiffBackend>(
    config: &TeacherPretrainConfig,
    fashion_dir: &Path,
    vae_dir: &Path,
    run: &RunOptions,
    out: &Path,
    device: &B::Device,
) -> Result<FitReport, TrainError> {
    crate::training::checks::Checked::check(config).map_err(TrainError::Config)?;
    B::seed(device, config.train.seed);
    let tok_dir = out.join("tokenizer");
    crate::text::write_tokenizer(&tok_dir)?;
    let tokenizer = Arc::new(crate::text::load_tokenizer(&tok_dir)?);
    if tokenizer.vocab_size() != config.text_encoder.vocab_size {
        return Err(TrainError::Data {
            file: tok_dir.join("tokenizer.json"),
            reason: format!(
                "the vocabulary has {} words but the config's text_encoder.vocab_size is {}",
                tokenizer.vocab_size(),
                config.text_encoder.vocab_size
            ),
        });
    }
    let vae = AutoencoderKL::<B::InnerBackend>::from_diffusers_dir(vae_dir, device)?;
    let train = Mixed::load(&config.data, fashion_dir, Split::Train)?;
    let test = Mixed::load(&config.data, fashion_dir, Split::Test)?;
    let test = crate::data::Spread::new(test, config.train.valid_items);
    // A finished run only exports its last checkpoint: no need to encode the data.
    let finished = run.resume
        && crate::training::checkpoint::latest_epoch(&run.dir.join("checkpoint"))
            .is_some_and(|e| e >= config.train.num_epochs);
    let (train_latents, test_latents) = if finished {
        (Vec::new(), Vec::new())
    } else {
        println!(
            "[teacher] encoding {} training images with the VAE",
            train.len()
        );
        (
            encode_dataset(&vae, &train, device),
            encode_dataset(&vae, &test, device),
        )
    };
    let shape = {
        let f = vae.factor();
        let size = train.get(0).map_or(32, |i| i.size);
        [vae.latent_channels(), size / f, size / f]
    };
    if config.unet.in_channels != shape[0] || config.unet.out_channels != shape[0] {
        return Err(TrainError::Data {
            file: vae_dir.join("config.json"),
            reason: format!(
                "the VAE's {} latent channels do not match the UNet's in/out channels {}/{}",
                shape[0], config.unet.in_channels, config.unet.out_channels
            ),
        });
    }
    let schedule = config.schedule.init()?;
    let batcher = |rng| TeacherBatcher {
        tokenizer: tokenizer.clone(),
        shape,
        num_train_timesteps: schedule.num_train_timesteps(),
        dropout: config.text_dropout,
        rng,
    };
    let model = TeacherTraining {
        unet: config.unet.init::<B>(device),
        text_encoder: config.text_encoder.init::<B>(device),
        schedule: schedule.clone(),
        prediction_type: config.prediction_type,
    };
    let train_rng = Arc::new(Mutex::new(SeededNoise::new(config.train.seed)));
    // The noise stream restarts at every epoch from (seed, epoch), so a resumed run draws what an unbroken
    // one would.
    let (stream, seed) = (train_rng.clone(), config.train.seed);
    let reseed: crate::data::epoch::EpochStart = Arc::new(move |epoch| {
        let key = crate::data::epoch::mix(seed, epoch as u64, u64::MAX);
        *stream.lock().unwrap() = SeededNoise::new(key);
    });
    let (trained, report) = fit(
        "teacher",
        model,
        &config.train,
        None,
        train_loader::<B, _, _, _, _>(
            batcher(Some(train_rng)),
            InMemDataset::new(train_latents),
            &config.train,
            run,
            Some(reseed),
            device,
        ),
        valid_loader::<B::InnerBackend, _, _, _, _>(
            batcher(None),
            InMemDataset::new(test_latents),
            &config.train,
            device,
        ),
        &[],
        run,
    )?;
    save_pipeline_parts(
        out,
        &trained.unet,
        &config.unet,
        &trained.text_encoder,
        &config.text_encoder,
        &SchedulerFile::new(config.schedule.clone(), config.prediction_type),
    )?;
    Ok(report)
}
