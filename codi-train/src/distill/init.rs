//! Starting a run from a finished one (`init_from`): the adapter, and for a run that trains the backbone its
//! backbone too, as a second stage starts from its first — a conditional teacher (`objective: "denoising"`)
//! consistency-distilled afterwards is the paper's two-stage baseline (CM-II).

use std::path::Path;

use burn::tensor::backend::Backend;
use codi_models::{ControlNetConfig, ControlNetModel, UNet2DConditionModel};
use codi_pipelines::adapter::{backbone_hash, read_adapter_info};
use codi_pipelines::DistillMode;

use crate::error::TrainError;

/// The backbone and adapter a run starts from, read from the output folder `dir` of an earlier run of the same
/// task: its adapter must have the shapes `adapter_cfg` gives (every weight is loaded into that config), and
/// it must have been trained on the backbone this run starts from. A PE-CoDi run keeps `teacher_unet`
/// frozen, so it cannot start from a run that trained its backbone. → (backbone, adapter)
pub fn load_start<B: Backend>(
    dir: &Path,
    task: &str,
    mode: DistillMode,
    teacher_unet: (&Path, UNet2DConditionModel<B>),
    adapter_cfg: &ControlNetConfig,
    device: &B::Device,
) -> Result<(UNet2DConditionModel<B>, ControlNetModel<B>), TrainError> {
    let (file, info) = read_adapter_info(dir)?;
    let refuse = |reason: String| TrainError::Data {
        file: file.clone(),
        reason: format!("init_from: {reason}"),
    };
    if info.task != task {
        return Err(refuse(format!(
            "this run was trained for the task {:?}, not {task:?}",
            info.task
        )));
    }
    let (unet_dir, unet) = match (info.mode, mode) {
        (DistillMode::Codi, DistillMode::PeCodi) => {
            return Err(refuse(
                "this run trained its backbone, but PE-CoDi keeps the teacher's backbone frozen: start a \
                 pe-codi run from a pe-codi run, or train the backbone too (--mode codi)"
                    .into(),
            ))
        }
        (DistillMode::Codi, DistillMode::Codi) => {
            let dir = dir.join("unet");
            let unet = UNet2DConditionModel::from_diffusers_dir(&dir, device)?;
            (dir, unet)
        }
        (DistillMode::PeCodi, _) => (teacher_unet.0.to_path_buf(), teacher_unet.1),
    };
    let found = backbone_hash(&unet_dir)?;
    if found != info.backbone_hash {
        return Err(refuse(format!(
            "its adapter was trained on the backbone with weights hash {}, but {} has hash {found}",
            info.backbone_hash,
            unet_dir.display()
        )));
    }
    let weights = codi_models::io::weight_files(&dir.join("controlnet"))?;
    let adapter = codi_models::io::load_safetensors(adapter_cfg.init(device), &weights)?;
    Ok((unet, adapter))
}
