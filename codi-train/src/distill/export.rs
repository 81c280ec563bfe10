//! Saving a distilled model: the adapter in diffusers' ControlNet layout (`controlnet/`), the backbone for
//! full CoDi (`unet/`), and `codi_adapter.json` naming the task and the backbone by the hash of its weights —
//! loading an adapter onto another backbone is refused.

use std::path::Path;

use burn::tensor::backend::Backend;
use codi_models::ControlNetConfig;
use serde::Serialize;

use super::model::Distillation;
use super::{DistillConfig, DistillMode};
use crate::error::TrainError;
use codi_pipelines::adapter::{backbone_hash, AdapterInfo};

/// The distillation config an adapter was trained with (`distill.json` beside it, written by `codi distill`),
/// else the preset for its task and mode — its task settings (degradation, boxes) make evaluation pairs.
pub fn load_distill_config(
    adapter_dir: &Path,
    info: &AdapterInfo,
) -> Result<DistillConfig, TrainError> {
    let file = adapter_dir.join("distill.json");
    if !file.exists() {
        return Ok(super::preset(info.task_kind()?, info.mode));
    }
    let err = |reason: String| TrainError::Data {
        file: file.clone(),
        reason,
    };
    let v = codi_models::diffusers_json::read_json(&file)?;
    let cfg = v
        .get("config")
        .ok_or_else(|| err("no \"config\" entry".into()))?;
    crate::training::config_from_json::<DistillConfig>(&cfg.to_string()).map_err(err)
}

/// Starting runs followed at most: a longer `init_from` chain (or a loop) leaves the budget unknown.
const MAX_STAGES: usize = 16;

/// The optimizer steps and wall time (s) that made an adapter, its starting runs' (`init_from`) included:
/// the `budget` its `distill.json` records, else (files written before it existed) the sum of its own and its
/// starting run's. None where a stage's record is missing.
pub fn training_budget(adapter: &Path) -> Result<(Option<usize>, Option<f64>), TrainError> {
    stage_budget(adapter, MAX_STAGES)
}

fn stage_budget(adapter: &Path, left: usize) -> Result<(Option<usize>, Option<f64>), TrainError> {
    let file = adapter.join("distill.json");
    if left == 0 || !file.exists() {
        return Ok((None, None));
    }
    let v = codi_models::diffusers_json::read_json(&file)?;
    if let Some(b) = v.get("budget") {
        return Ok((
            b["train_steps"].as_u64().map(|s| s as usize),
            b["wall_time_s"].as_f64(),
        ));
    }
    let train = &v["config"]["train"];
    let steps = train["num_epochs"]
        .as_u64()
        .zip(train["steps_per_epoch"].as_u64())
        .map(|(e, s)| (e * s) as usize);
    let wall = v["wall_time_s"].as_f64();
    match v["config"]["init_from"].as_str() {
        Some(first) => {
            let (first_steps, first_wall) = stage_budget(Path::new(first), left - 1)?;
            Ok((
                steps.zip(first_steps).map(|(a, b)| a + b),
                wall.zip(first_wall).map(|(a, b)| a + b),
            ))
        }
        None => Ok((steps, wall)),
    }
}

fn write_json(file: &Path, v: &impl Serialize) -> Result<(), TrainError> {
    let err = |e: String| TrainError::Data {
        file: file.to_path_buf(),
        reason: e,
    };
    let tmp = file.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(v).map_err(|e| err(e.to_string()))?,
    )
    .map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, file).map_err(|e| err(e.to_string()))
}

/// Writes `out/controlnet/`, `out/unet/` (CoDi) and `out/codi_adapter.json`.
pub fn save<B: Backend>(
    trained: &Distillation<B>,
    config: &DistillConfig,
    task_name: &str,
    adapter_cfg: &ControlNetConfig,
    teacher_dir: &Path,
    out: &Path,
) -> Result<AdapterInfo, TrainError> {
    let adapter = if config.export_ema {
        &trained.ema_adapter
    } else {
        &trained.online.adapter
    };
    let backbone = match config.mode {
        DistillMode::PeCodi => teacher_dir.join("unet"),
        DistillMode::Codi => {
            let unet = match (&trained.ema_unet, config.export_ema) {
                (Some(u), true) => u,
                _ => &trained.online.unet,
            };
            let dir = out.join("unet");
            codi_models::io::save_diffusers_dir(unet, &adapter_cfg.unet.to_diffusers(), &dir)?;
            dir
        }
    };
    codi_models::io::save_diffusers_dir(
        adapter,
        &adapter_cfg.to_diffusers(),
        &out.join("controlnet"),
    )?;
    let info = AdapterInfo {
        task: task_name.to_string(),
        mode: config.mode,
        backbone_hash: backbone_hash(&backbone)?,
        backbone,
        condition_channels: adapter_cfg.conditioning_channels,
        loss: config.loss,
        ema: config.export_ema,
    };
    write_json(&out.join("codi_adapter.json"), &info)?;
    Ok(info)
}
