//! Activation checkpointing (`codi distill --checkpointing`): burn-autodiff's balanced strategy recomputes
//! element-wise ops' outputs in the backward pass instead of keeping them. It must not change what trains:
//! PE-CoDi of the tiny SD pipeline on the image folder gives the same adapter with and without it, on the
//! host kernels' path and on burn's generic path (CI runs this file with `CODI_GENERIC_OPS=1` too).

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use codi_core::backend::{CpuAutodiff, CpuAutodiffCheckpointed};
use codi_pipelines::{DistillMode, TaskKind};
use codi_tests::fixture;
use codi_train::data::imagefolder::FolderConfig;
use codi_train::data::mixed::DataConfig;
use codi_train::distill::{distill, DistillConfig};
use codi_train::training::{RunOptions, TrainLoopConfig};

struct Values(Vec<f32>);

impl<Bk: Backend> ModuleVisitor<Bk> for Values {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Bk, D>>) {
        self.0.extend(codi_core::tensor_ops::to_vec(p.val()));
    }
}

fn trained_adapter<B: AutodiffBackend>(root: &Path, name: &str) -> (Vec<f32>, Vec<f64>) {
    let config = DistillConfig::new(
        TaskKind::SuperResolution,
        DistillMode::Codi,
        TrainLoopConfig::new()
            .with_batch_size(4)
            .with_num_epochs(1)
            .with_steps_per_epoch(3)
            .with_valid_items(4),
        DataConfig::new(),
    )
    .with_conditioning_embedding_out_channels(vec![16, 32])
    .with_folder(Some(FolderConfig::new().with_resolution(16)));
    let device = Default::default();
    let d = distill::<B>(
        &config,
        &fixture("sd-tiny"),
        &fixture("image-folder"),
        &RunOptions::new(root.join(name).join("run")),
        &root.join(name).join("out"),
        &device,
    )
    .unwrap();
    let mut v = Values(Vec::new());
    d.model.online.adapter.visit(&mut v);
    d.model.online.unet.visit(&mut v);
    let losses = d
        .report
        .history
        .train
        .iter()
        .map(|(_, m)| m["Loss"])
        .collect();
    (v.0, losses)
}

#[test]
fn checkpointing_trains_the_same_model() {
    let root: PathBuf =
        std::env::temp_dir().join(format!("codi-checkpointing-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    let (kept, kept_loss) = trained_adapter::<CpuAutodiff>(&root, "kept");
    let (recomputed, recomputed_loss) =
        trained_adapter::<CpuAutodiffCheckpointed>(&root, "recomputed");
    assert_eq!(kept_loss, recomputed_loss);
    assert_eq!(kept.len(), recomputed.len());
    let d = kept
        .iter()
        .zip(&recomputed)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("adapter and backbone after 3 CoDi steps: max |diff| = {d:e}");
    assert_eq!(d, 0.0, "recomputing gives the same numbers");
    std::fs::remove_dir_all(&root).ok();
}
