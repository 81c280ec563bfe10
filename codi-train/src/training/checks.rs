//! What a training config may ask for, checked when it is loaded and again before a run starts (command-line
//! flags change it in between): every problem named by its key, before any data is read or model built.

use codi_models::limits::{Check, MAX_CHANNELS, MAX_LEVELS};

use super::TrainLoopConfig;
use crate::data::fashion_mnist::SIZE;
use crate::data::imagefolder::FolderConfig;
use crate::data::mixed::DataConfig;
use crate::distill::DistillConfig;
use crate::pretrain::classifier::ClassifierPretrainConfig;
use crate::pretrain::teacher::TeacherPretrainConfig;
use crate::pretrain::vae::VaePretrainConfig;
use crate::tasks::{InpaintConfig, SrConfig, TaskKind};
use codi_core::loss::{Objective, OdeStepModel};

/// A config that knows its own bounds.
pub trait Checked {
    /// → Ok, or every problem, each named by its key
    fn check(&self) -> Result<(), String>;
}

/// Most items of a split, steps of an epoch and epochs of a run.
const MAX_COUNT: usize = 1 << 32;

fn train_loop(c: &mut Check, t: &TrainLoopConfig) {
    c.count("train.batch_size", t.batch_size, 1, 1 << 16)
        .count("train.num_epochs", t.num_epochs, 1, MAX_COUNT)
        .count("train.steps_per_epoch", t.steps_per_epoch, 1, MAX_COUNT)
        .count("train.valid_items", t.valid_items, 1, MAX_COUNT)
        .count("train.num_workers", t.num_workers, 0, 1024)
        .real(
            "train.learning_rate",
            t.learning_rate,
            f64::MIN_POSITIVE,
            1e3,
        )
        .real("train.weight_decay", t.weight_decay, 0.0, 1e3)
        .real("train.grad_clip", t.grad_clip, 0.0, 1e12);
    if let Some(s) = &t.lr_schedule {
        c.count(
            "train.lr_schedule.warmup_steps",
            s.warmup_steps,
            0,
            MAX_COUNT,
        )
        .real("train.lr_schedule.final_ratio", s.final_ratio, 0.0, 1.0);
    }
}

fn data(c: &mut Check, d: &DataConfig) {
    c.count("data.scenes_train", d.scenes_train, 0, MAX_COUNT)
        .count("data.scenes_test", d.scenes_test, 0, MAX_COUNT)
        .require(d.fashion_mnist || d.scenes_train > 0, || {
            "`data`: no training data (fashion_mnist is false and scenes_train is 0)".into()
        });
}

fn sr(c: &mut Check, s: &SrConfig, size: usize) {
    c.require(s.factor >= 2 && size.is_multiple_of(s.factor), || {
        format!(
            "`sr.factor` = {}: must be at least 2 and divide the image size {size}",
            s.factor
        )
    })
    .real("sr.blur_sigma", s.blur_sigma as f64, 0.0, size as f64)
    .real("sr.noise_std", s.noise_std as f64, 0.0, 1.0);
    if let Some(q) = s.jpeg_quality {
        c.count("sr.jpeg_quality", q as usize, 1, 100);
    }
}

fn inpaint(c: &mut Check, i: &InpaintConfig, size: usize) {
    c.count("inpaint.min_side", i.min_side, 1, size)
        .count("inpaint.max_side", i.max_side, i.min_side.max(1), size)
        .count("inpaint.max_boxes", i.max_boxes, 1, 64);
    if let Some(strokes) = &i.strokes {
        c.count("inpaint.strokes.max_count", strokes.max_count, 0, 64)
            .count("inpaint.strokes.max_width", strokes.max_width, 1, size);
    }
}

/// Image folders: a resolution the image crate can make, and columns with names.
const MAX_RESOLUTION: usize = 8192;

fn folder(c: &mut Check, f: &FolderConfig) {
    c.count("folder.resolution", f.resolution, 8, MAX_RESOLUTION);
    let columns = [
        ("folder.image_column", &f.image_column),
        ("folder.caption_column", &f.caption_column),
        (
            "folder.conditioning_image_column",
            &f.conditioning_image_column,
        ),
        ("folder.original_image_column", &f.original_image_column),
        ("folder.edit_prompt_column", &f.edit_prompt_column),
        ("folder.edited_image_column", &f.edited_image_column),
    ];
    for (key, name) in columns {
        c.require(!name.is_empty(), || format!("`{key}` is empty"));
    }
}

impl Checked for DistillConfig {
    fn check(&self) -> Result<(), String> {
        let mut c = Check::new();
        train_loop(&mut c, &self.train);
        data(&mut c, &self.data);
        // The degradation settings are checked against the image size of the task that uses them.
        let size = self.folder.as_ref().map_or(SIZE, |f| f.resolution);
        match self.task {
            TaskKind::SuperResolution => sr(&mut c, &self.sr, size),
            TaskKind::Inpainting => inpaint(&mut c, &self.inpaint, size),
            _ => {}
        }
        if let Some(f) = &self.folder {
            folder(&mut c, f);
        }
        c.require(self.devices != Some(0), || {
            "devices is 0: at least one device trains".into()
        });
        let ch = &self.conditioning_embedding_out_channels;
        let loss = &self.loss;
        c.require(
            loss.step_model != OdeStepModel::Initial || self.init_from.is_some(),
            || {
                "loss.step_model \"initial\" takes the PF-ODE step with the model the run starts from: \
                 name that run's output folder in init_from (without it the start is the backbone alone: \
                 use \"teacher\")"
                    .into()
            },
        );
        c.require(
            loss.objective != Objective::Progressive || loss.step_model == OdeStepModel::Initial,
            || {
                "loss.objective \"progressive\" distils the model the run starts from: set \
                 loss.step_model to \"initial\" and name that model's folder in init_from"
                    .into()
            },
        );
        c.real("ema_decay", self.ema_decay, 0.0, 1.0)
            .entries(
                "conditioning_embedding_out_channels",
                ch.len(),
                1,
                MAX_LEVELS,
            )
            .counts("conditioning_embedding_out_channels", ch, 1, MAX_CHANNELS)
            .real("loss.lambda", loss.lambda, 0.0, 1e6)
            .real("loss.consistency_weight", loss.consistency_weight, 0.0, 1e6)
            .real("loss.cfg_scale[0]", loss.cfg_scale[0], 0.0, 1e3)
            .real(
                "loss.cfg_scale[1]",
                loss.cfg_scale[1],
                loss.cfg_scale[0],
                1e3,
            )
            .count(
                "loss.intervals",
                loss.intervals,
                2,
                codi_core::schedule::MAX_TRAIN_TIMESTEPS,
            )
            .positive("loss.boundary.sigma_data", loss.boundary.sigma_data)
            .real(
                "loss.boundary.timestep_scaling",
                loss.boundary.timestep_scaling,
                0.0,
                1e6,
            );
        c.finish()
    }
}

impl Checked for TeacherPretrainConfig {
    fn check(&self) -> Result<(), String> {
        self.unet.check().map_err(|e| format!("`unet`: {e}"))?;
        self.text_encoder
            .check()
            .map_err(|e| format!("`text_encoder`: {e}"))?;
        self.schedule
            .init()
            .map_err(|e| format!("`schedule`: {e}"))?;
        let mut c = Check::new();
        train_loop(&mut c, &self.train);
        data(&mut c, &self.data);
        // Its noise comes from one stream in batch order: workers would draw it in a varying order.
        c.require(self.train.num_workers == 0, || {
            "`train.num_workers` must be 0 for the teacher: its latents are in memory and its noise is \
             drawn in batch order"
                .into()
        });
        c.real("text_dropout", self.text_dropout, 0.0, 1.0).finish()
    }
}

impl Checked for VaePretrainConfig {
    fn check(&self) -> Result<(), String> {
        self.model.check().map_err(|e| format!("`model`: {e}"))?;
        let mut c = Check::new();
        train_loop(&mut c, &self.train);
        data(&mut c, &self.data);
        c.real("kl_weight", self.kl_weight, 0.0, 1e6).finish()
    }
}

impl Checked for ClassifierPretrainConfig {
    fn check(&self) -> Result<(), String> {
        self.model.check().map_err(|e| format!("`model`: {e}"))?;
        let mut c = Check::new();
        train_loop(&mut c, &self.train);
        data(&mut c, &self.data);
        c.finish()
    }
}
