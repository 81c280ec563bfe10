//! CoDi and PE-CoDi distillation on burn-train (method.md §3): the adapted model trains on one task's pairs
//! with the CoDi loss; the EMA target, the frozen text encoder and VAE run without gradient. PE-CoDi freezes the
//! backbone and saves only the adapter, tagged with the hash of the backbone it belongs to.

pub mod data;
pub mod ema;
pub mod export;
pub mod init;
pub mod model;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use burn::config::Config;
use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::tensor::backend::AutodiffBackend;
use codi_core::loss::{CodiLossConfig, GuidanceDistance, OdeStepModel};
use codi_models::fresh::copy_with_fresh_ids;
use codi_models::{
    AutoencoderKL, AutoencoderKLConfig, CLIPTextModel, ControlNetConfig, FusionKind,
    UNet2DConditionModel, UNet2DConditionModelConfig,
};
pub use codi_pipelines::DistillMode;

use crate::data::fashion_mnist::Split;
use crate::data::imagefolder::{FolderConfig, ImageFolder};
use crate::data::mixed::{DataConfig, Mixed};
use crate::data::scenes::Scenes;
use crate::error::TrainError;
use crate::tasks::{InpaintConfig, SrConfig, TaskKind};
use crate::training::checks::Checked;
use crate::training::{fit, ordered_loader, FitReport, RunOptions, TrainLoopConfig};
use codi_pipelines::SchedulerFile;
use data::{
    DistillBatcher, EpochPairs, FixedPairs, FrozenText, FrozenVae, PairMaker, Shard, TaskSource,
};
use model::{Distillation, StepSettings, TERMS};

#[derive(Config, Debug)]
pub struct DistillConfig {
    pub task: TaskKind,
    pub mode: DistillMode,
    #[config(default = "CodiLossConfig::default()")]
    pub loss: CodiLossConfig,
    /// γ of θ⁻ ← γθ⁻ + (1 − γ)θ.
    #[config(default = 0.999)]
    pub ema_decay: f64,
    /// The adapter's condition-embedding CNN: one entry per level, each level after the first halves the
    /// resolution (pixels → latents).
    #[config(default = "vec![16, 32, 32]")]
    pub conditioning_embedding_out_channels: Vec<usize>,
    #[config(default = "FusionKind::Mix")]
    pub fusion: FusionKind,
    /// Start the condition embedding's last conv at zero, as diffusers does (see [`preset`]).
    #[config(default = true)]
    pub conditioning_embedding_zero_out: bool,
    #[config(default = "SrConfig::new()")]
    pub sr: SrConfig,
    #[config(default = "InpaintConfig::new()")]
    pub inpaint: InpaintConfig,
    pub train: TrainLoopConfig,
    pub data: DataConfig,
    /// Train on an image folder (`--data DIR` in the `imagefolder` convention) instead of the embedded data.
    pub folder: Option<FolderConfig>,
    /// Export the EMA weights (else the online ones).
    #[config(default = true)]
    pub export_ema: bool,
    /// Start from the output folder of an earlier run of the same task (its adapter, and its backbone when
    /// both runs train theirs) instead of a fresh adapter: a second stage, e.g. consistency distillation of a
    /// conditional teacher. Relative to the working directory.
    pub init_from: Option<PathBuf>,
    /// Data-parallel replicas on this machine (`--devices`); absent: 1. Each trains on `train.batch_size`
    /// items of every batch, so a step sees `devices × batch_size` (times the nodes, with `--nodes`).
    pub devices: Option<usize>,
}

/// The task's source of pairs for a split: the image folder `dir` when `folder` is set, else the embedded
/// data (Fashion-MNIST from `dir`, the scenes).
pub fn task_source(
    maker: &PairMaker,
    data: &DataConfig,
    folder: Option<&FolderConfig>,
    dir: &Path,
    split: Split,
) -> Result<TaskSource, TrainError> {
    if let Some(folder) = folder {
        let columns = maker.folder_columns(folder);
        return Ok(TaskSource::Folder(ImageFolder::open(
            dir, split, &columns, folder,
        )?));
    }
    if let PairMaker::Builtin {
        task: TaskKind::ControlNet,
        ..
    } = maker
    {
        return Err(TrainError::Config(
            "the controlnet task reads its conditions from an image folder's conditioning_image column: \
             give one with --data DIR"
                .into(),
        ));
    }
    Ok(if maker.needs_depth() {
        TaskSource::Scenes(match split {
            Split::Train => Scenes::train(data.scenes_train),
            Split::Test => Scenes::test(data.scenes_test),
        })
    } else {
        TaskSource::Images(Mixed::load(data, dir, split)?)
    })
}

/// Refuses an adapter whose condition embedding does not end at the latents' size, and images the networks
/// cannot take.
fn check_fits_teacher(
    config: &DistillConfig,
    vae: &AutoencoderKLConfig,
    unet: &UNet2DConditionModelConfig,
) -> Result<(), TrainError> {
    let levels = config.conditioning_embedding_out_channels.len();
    let factor = vae.factor();
    if levels == 0 || 1usize << (levels - 1) != factor {
        return Err(TrainError::Config(format!(
            "conditioning_embedding_out_channels has {levels} entries, so the condition embedding \
             downsamples by {}, but the teacher's VAE by {factor}: give {} entries (e.g. {:?})",
            1usize << levels.saturating_sub(1),
            factor.trailing_zeros() + 1,
            condition_embedding_channels(factor)
        )));
    }
    if let Some(folder) = &config.folder {
        let multiple = factor << unet.down_block_types.len().saturating_sub(1);
        if folder.resolution == 0 || !folder.resolution.is_multiple_of(multiple) {
            return Err(TrainError::Config(format!(
                "folder.resolution {} is not a multiple of {multiple} (the teacher's VAE factor {factor} \
                 times its UNet's downsampling)",
                folder.resolution
            )));
        }
    }
    Ok(())
}

/// [`preset`] fitted to the teacher in `teacher_dir` and the data: the condition embedding sized to the
/// teacher's VAE factor (the embedded default's own when it fits), and with an image folder the inpainting
/// holes scaled to its resolution.
pub fn preset_for(
    task: TaskKind,
    mode: DistillMode,
    teacher_dir: &Path,
    folder: Option<FolderConfig>,
) -> Result<DistillConfig, TrainError> {
    let mut config = preset(task, mode);
    let file = teacher_dir.join("vae").join("config.json");
    let factor = AutoencoderKLConfig::from_diffusers(
        &codi_models::diffusers_json::read_json(&file)?,
        &file,
    )?
    .factor();
    if 1usize << (config.conditioning_embedding_out_channels.len() - 1) != factor {
        config.conditioning_embedding_out_channels = condition_embedding_channels(factor);
    }
    if let Some(f) = &folder {
        config.inpaint = InpaintConfig::for_resolution(f.resolution);
    }
    config.folder = folder;
    Ok(config)
}

/// diffusers' ControlNet condition embedding (16, 32, 96, 256), cut to the levels of a VAE factor: a factor of
/// 8 (Stable Diffusion) gives diffusers' default.
pub fn condition_embedding_channels(vae_factor: usize) -> Vec<usize> {
    let levels = vae_factor.max(1).trailing_zeros() as usize + 1;
    [16, 32, 96, 256, 256, 256, 256, 256][..levels.min(8)].to_vec()
}

/// Held while a run builds its networks (see [`distill_with`]).
static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Reads every parameter once, so lazily initialised ones draw their random values now.
struct Materialize;

impl<B: burn::tensor::backend::Backend> burn::module::ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(
        &mut self,
        param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
    ) {
        let _ = param.val();
    }
}

/// Distils the text-to-image pipeline in `teacher_dir` for `config.task` and writes the result to `out`.
pub fn distill<B: AutodiffBackend>(
    config: &DistillConfig,
    teacher_dir: &Path,
    data_dir: &Path,
    run: &RunOptions,
    out: &Path,
    device: &B::Device,
) -> Result<Distilled<B::InnerBackend>, TrainError> {
    let maker = PairMaker::from_config(config);
    distill_with::<B>(config, maker, teacher_dir, data_dir, run, out, device)
}

/// [`distill`] for the task `maker` makes pairs for, built-in or a [`crate::tasks::CustomTask`]; the config's
/// own task settings (`task`, `sr`, `inpaint`) are not read.
pub fn distill_with<B: AutodiffBackend>(
    config: &DistillConfig,
    maker: PairMaker,
    teacher_dir: &Path,
    data_dir: &Path,
    run: &RunOptions,
    out: &Path,
    device: &B::Device,
) -> Result<Distilled<B::InnerBackend>, TrainError> {
    config.check().map_err(TrainError::Config)?;
    // Replicas in one process build their networks one at a time: the CPU backend's random initialisation
    // draws from one process-wide generator, and the first replica must draw what one device would.
    let building = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    B::seed(device, config.train.seed);
    let unet_dir = teacher_dir.join("unet");
    let unet_file = unet_dir.join("config.json");
    let unet_cfg = UNet2DConditionModelConfig::from_diffusers(
        &codi_models::diffusers_json::read_json(&unet_file)?,
        &unet_file,
    )?;
    let vae_dir = teacher_dir.join("vae");
    let vae_file = vae_dir.join("config.json");
    let vae_cfg = AutoencoderKLConfig::from_diffusers(
        &codi_models::diffusers_json::read_json(&vae_file)?,
        &vae_file,
    )?;
    check_fits_teacher(config, &vae_cfg, &unet_cfg)?;
    let scheduler =
        SchedulerFile::read(&teacher_dir.join("scheduler").join("scheduler_config.json"))?;
    let schedule = scheduler.schedule.init()?;
    // The loss settings are checked against this schedule here, not at the first training step.
    codi_core::loss::timestep_pairs(&config.loss, schedule.num_train_timesteps(), 1, &[0.5])?;
    if config.loss.objective == codi_core::loss::Objective::Progressive {
        config
            .loss
            .progressive
            .check(schedule.num_train_timesteps())?;
    }

    let unet = UNet2DConditionModel::<B>::from_diffusers_dir(&unet_dir, device)?;
    let adapter_cfg = ControlNetConfig::new(unet_cfg)
        .with_conditioning_channels(maker.condition_channels())
        .with_conditioning_embedding_out_channels(
            config.conditioning_embedding_out_channels.clone(),
        )
        .with_fusion(config.fusion)
        .with_conditioning_embedding_zero_out(config.conditioning_embedding_zero_out);
    let (unet, adapter) = match &config.init_from {
        Some(dir) => init::load_start(
            dir,
            &maker.name(),
            config.mode,
            (&unet_dir, unet),
            &adapter_cfg,
            device,
        )?,
        None => {
            let adapter = adapter_cfg.init_from_unet(&unet, device);
            (unet, adapter)
        }
    };
    let teacher = (config.loss.step_model == OdeStepModel::Teacher)
        .then(|| copy_with_fresh_ids(&unet).no_grad());
    let guidance_vae = match config.loss.guidance {
        GuidanceDistance::Latent => None,
        _ => Some(AutoencoderKL::<B>::from_diffusers_dir(&vae_dir, device)?.no_grad()),
    };
    let model = Distillation::new(
        unet,
        adapter,
        config.mode,
        teacher,
        guidance_vae,
        schedule,
        StepSettings {
            loss: config.loss,
            prediction_type: scheduler.prediction_type,
            ema_decay: config.ema_decay,
            grad_clip: config.train.grad_clip,
            divergence: run.divergence.clone(),
            replica: run.replica.clone(),
        },
    );
    model.visit(&mut Materialize);
    drop(building);
    let model = match &run.replica {
        Some(replica) => {
            let fail = |e: String| TrainError::Config(format!("replica {}: {e}", replica.rank));
            replica.register::<B::InnerBackend>(device).map_err(fail)?;
            replica.share_parameters(model).map_err(fail)?
        }
        None => model,
    };

    let text = FrozenText::new(
        CLIPTextModel::<B::InnerBackend>::from_pretrained_dir(
            &teacher_dir.join("text_encoder"),
            device,
        )?,
        crate::text::load_tokenizer(&teacher_dir.join("tokenizer"))?,
        device.clone(),
    );
    let vae = FrozenVae {
        vae: AutoencoderKL::<B::InnerBackend>::from_diffusers_dir(&vae_dir, device)?,
        device: device.clone(),
    };
    let batcher = DistillBatcher {
        text: Arc::new(text),
        vae: Arc::new(vae),
        condition_channels: maker.condition_channels(),
        unconditional: config.loss.folds_cfg(),
    };
    // The data order continues from the checkpoint's epoch, so a resumed run sees the same batches.
    let start_epoch = crate::training::completed_epochs(run);
    let task_name = maker.name();
    let name = format!("{}-{}", config.mode.name(), task_name);
    let folder = config.folder.as_ref();
    let train = EpochPairs {
        source: task_source(&maker, &config.data, folder, data_dir, Split::Train)?,
        maker: maker.clone(),
        seed: config.train.seed,
        len: config.train.steps_per_epoch * config.train.batch_size,
        epoch: Arc::new(AtomicUsize::new(start_epoch)),
        watch: Some(run.divergence.clone()),
        shard: match &run.replica {
            Some(r) => Shard {
                index: r.rank,
                count: r.world,
                batch: config.train.batch_size,
            },
            None => Shard::whole(config.train.batch_size),
        },
    };
    let valid = FixedPairs {
        source: task_source(&maker, &config.data, folder, data_dir, Split::Test)?,
        maker,
        seed: config.train.seed,
        // Validation runs once, on the first replica.
        len: if run.is_primary() {
            config.train.valid_items
        } else {
            0
        },
        watch: Some(run.divergence.clone()),
    };
    let skipped = [&train.source, &valid.source].map(|s| match s {
        TaskSource::Folder(f) => Some(f.skipped.clone()),
        _ => None,
    });
    let loop_cfg = &config.train;
    let workers = loop_cfg.num_workers;
    let optim = AdamWConfig::new()
        .with_weight_decay(config.train.weight_decay as f32)
        .with_epsilon(1e-8);
    let (trained, report) = fit(
        &name,
        model,
        loop_cfg,
        Some(optim),
        ordered_loader::<B, _, _, _, _>(
            batcher.clone(),
            train.clone(),
            loop_cfg.batch_size,
            workers,
            Some(train.pass_start()),
            device,
        ),
        ordered_loader::<B::InnerBackend, _, _, _, _>(
            batcher,
            valid,
            loop_cfg.batch_size,
            workers,
            None,
            device,
        ),
        &TERMS,
        run,
    )?;
    if let Some(replica) = &run.replica {
        replica
            .finish::<B::InnerBackend>()
            .map_err(|e| TrainError::Config(format!("replica {}: {e}", replica.rank)))?;
    }
    let info = match run.is_primary() {
        true => Some(export::save(
            &trained,
            config,
            &task_name,
            &adapter_cfg,
            teacher_dir,
            out,
        )?),
        false => None,
    };
    let skipped_images = skipped
        .iter()
        .flatten()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    Ok(Distilled {
        model: trained,
        report,
        info,
        skipped_images,
    })
}

/// What [`distill`] returns: the trained model (online, EMA), its history and what was saved.
pub struct Distilled<B: burn::tensor::backend::Backend> {
    pub model: Distillation<B>,
    pub report: FitReport,
    /// What was saved; none on a data-parallel replica other than the first (it saves nothing).
    pub info: Option<codi_pipelines::AdapterInfo>,
    /// Folder images that could not be read and were skipped (`skip_bad_images`).
    pub skipped_images: usize,
}

/// The embedded default's distillation config for a task and mode: 600 steps of batch 32 (≈ 25 minutes per
/// adapter on this 2-core CPU). The adapter joins the backbone by plain addition through zero convs: with CoDi's
/// μ-mix, μ, the zero convs and the condition embedding all start at zero and a run this short learns too
/// slowly. For the same reason the condition embedding's last conv starts random: the zero convs alone keep
/// the adapted model equal to the backbone at step 0. The EMA rate is 0.99, not the paper's 0.999: over 600
/// steps an EMA at 0.999 still holds 0.999⁶⁰⁰ ≈ 55 % of the initial (zero) adapter, and exporting it cost
/// 4.5 dB on super-resolution (book: distillation, "Short runs").
pub fn preset(task: TaskKind, mode: DistillMode) -> DistillConfig {
    DistillConfig::new(
        task,
        mode,
        TrainLoopConfig::new()
            .with_batch_size(32)
            .with_num_epochs(4)
            .with_steps_per_epoch(150)
            .with_valid_items(256)
            .with_learning_rate(if mode == DistillMode::Codi {
                5e-4
            } else {
                1e-3
            })
            .with_weight_decay(1e-2),
        DataConfig::new(),
    )
    .with_fusion(FusionKind::Add)
    .with_conditioning_embedding_zero_out(false)
    .with_ema_decay(0.99)
}
