//! A distilled adapter's identity and the adapted model: `codi_adapter.json` names the task, the mode and the
//! backbone by the hash of its weights, so that loading an adapter onto another backbone is refused.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use codi_core::loss::CodiLossConfig;
use codi_models::{ControlNetModel, UNet2DConditionModel};
use serde::{Deserialize, Serialize};

use crate::error::PipelineError;
use crate::task::TaskKind;

/// CoDi trains backbone and adapter; PE-CoDi only the adapter (and μ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DistillMode {
    /// CoDi: backbone and adapter trained.
    Codi,
    /// PE-CoDi: the backbone frozen, only the adapter trained.
    PeCodi,
}

impl DistillMode {
    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            DistillMode::Codi => "codi",
            DistillMode::PeCodi => "pe-codi",
        }
    }
}

/// The adapted model ŵ(z, c, t): backbone with the adapter's residuals.
#[derive(Module, Debug)]
pub struct CodiNet<B: Backend> {
    /// The backbone.
    pub unet: UNet2DConditionModel<B>,
    /// The adapter whose residuals are added to the backbone's.
    pub adapter: ControlNetModel<B>,
}

impl<B: Backend> CodiNet<B> {
    /// z: [b, c, h, w], t: \[b\], text: [b, tokens, hidden], cond: [b, cc, H, W] in [0, 1] → [b, c, h, w]
    pub fn forward(
        &self,
        z: Tensor<B, 4>,
        t: Tensor<B, 1>,
        text: Tensor<B, 3>,
        cond: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let r = self
            .adapter
            .forward(z.clone(), t.clone(), text.clone(), cond, 1.0);
        self.unet.forward_with_residuals(z, t, text, Some(r))
    }
}

/// `codi_adapter.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterInfo {
    /// The task the adapter was distilled for: a [`TaskKind`] name, or the name of a task a program defined.
    pub task: String,
    /// Whether the backbone was trained too (then it is saved beside the adapter).
    pub mode: DistillMode,
    /// The backbone's [`backbone_hash`] (a digest of its weights' names, dtypes, shapes and values); files
    /// written before that digest existed carry the FNV-1a 64 of the weight files' bytes, still accepted.
    pub backbone_hash: String,
    /// Where the backbone was when the adapter was saved (`unet/` beside it for full CoDi).
    pub backbone: PathBuf,
    /// Channels of the condition image.
    pub condition_channels: usize,
    /// The loss settings, whose timestep grid the few-step sampler follows.
    pub loss: CodiLossConfig,
    /// Whether the EMA weights were exported (else the online ones).
    pub ema: bool,
}

impl AdapterInfo {
    /// The built-in task the adapter was distilled for; an error for a task a program defined, whose
    /// conditions only that program knows how to make.
    pub fn task_kind(&self) -> Result<TaskKind, PipelineError> {
        TaskKind::from_name(&self.task).ok_or_else(|| PipelineError::Data {
            file: PathBuf::from("codi_adapter.json"),
            reason: format!(
                "the adapter was distilled for the task {:?}, which is not one of codi's ({}): build its \
                 conditions in your program and sample with `ConditionalPipeline::generate`",
                self.task,
                TaskKind::ALL.map(|t| t.name()).join(", ")
            ),
        })
    }
}

/// The identity of a backbone: a digest of what its weights are (names, dtypes, shapes, values), so that a
/// re-saved or re-sharded copy of the same weights is the same backbone.
pub fn backbone_hash(unet_dir: &Path) -> Result<String, PipelineError> {
    Ok(codi_models::io::weights_digest(unet_dir)?)
}

/// The identity adapters saved before the content digest carried: FNV-1a 64 of the weight files' bytes.
fn legacy_file_hash(unet_dir: &Path) -> Result<String, PipelineError> {
    let mut h = codi_models::io::FNV_OFFSET;
    let mut buf = vec![0u8; 1 << 20];
    for f in codi_models::io::weight_files(unet_dir)? {
        let io = |e: std::io::Error| PipelineError::Data {
            file: f.clone(),
            reason: e.to_string(),
        };
        let file = std::fs::File::open(&f).map_err(io)?;
        codi_models::io::fnv1a_read(&mut h, file, &mut buf).map_err(io)?;
    }
    Ok(format!("{h:016x}"))
}

/// Reads `dir/codi_adapter.json`. → (the file, its contents)
pub fn read_adapter_info(dir: &Path) -> Result<(PathBuf, AdapterInfo), PipelineError> {
    let file = dir.join("codi_adapter.json");
    let info =
        serde_json::from_value(codi_models::diffusers_json::read_json(&file)?).map_err(|e| {
            PipelineError::Data {
                file: file.clone(),
                reason: e.to_string(),
            }
        })?;
    Ok((file, info))
}

/// Loads a distilled adapter for the backbone in `unet_dir`, refusing a backbone other than the one it was
/// distilled for.
pub fn load_adapter<B: Backend>(
    dir: &Path,
    unet_dir: &Path,
    device: &B::Device,
) -> Result<(ControlNetModel<B>, AdapterInfo), PipelineError> {
    let (file, info) = read_adapter_info(dir)?;
    let found = backbone_hash(unet_dir)?;
    if found != info.backbone_hash && legacy_file_hash(unet_dir)? != info.backbone_hash {
        return Err(PipelineError::Data {
            file,
            reason: format!(
                "this {} adapter was distilled for the backbone with weights hash {} ({}), but {} has hash {found}",
                info.task,
                info.backbone_hash,
                info.backbone.display(),
                unet_dir.display()
            ),
        });
    }
    let adapter = ControlNetModel::from_diffusers_dir(&dir.join("controlnet"), device)?;
    Ok((adapter, info))
}
