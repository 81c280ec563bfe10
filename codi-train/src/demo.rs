//! `codi demo`: every distilled adapter of a pipeline folder, sampled in a few steps on the bundled test images
//! (`<model>/demo/fashion-mnist`: a Fashion-MNIST test subset, plus procedural scenes), one grid per adapter
//! and a summary. Needs no dataset.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::Serialize;

use crate::data::fashion_mnist::Split;
use crate::data::mixed::DataConfig;
use crate::distill::data::eval_pairs;
use crate::distill::data::PairMaker;
use crate::distill::export::load_distill_config;
use crate::distill::task_source;
use crate::error::TrainError;
use crate::evaluate::{evaluate_task, TaskScores};
use codi_pipelines::image_io::save_grid;
use codi_pipelines::ConditionalPipeline;

/// Scenes generated for the demo's image source (the Fashion-MNIST subset comes first).
const DEMO_SCENES: usize = 20;

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Pairs per adapter (spread over the bundled images).
    pub pairs: usize,
    pub step_counts: Vec<usize>,
    pub guidance: f64,
    pub seed: u64,
}

/// One adapter's demo result.
#[derive(Debug, Clone, Serialize)]
pub struct DemoResult {
    /// The adapter folder's name relative to the model folder (`adapters/sr`, `codi-sr`).
    pub adapter: String,
    pub task: String,
    pub mode: String,
    pub pairs: usize,
    pub scores: Vec<TaskScores>,
    pub bicubic: Option<TaskScores>,
    pub grid: PathBuf,
    pub wall_time_s: f64,
}

/// The adapter folders of a pipeline folder: `adapters/*` (PE-CoDi) and `codi-*` (CoDi), sorted.
pub fn find_adapters(model_dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut scan = |dir: &Path, keep: &dyn Fn(&str) -> bool| {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().to_string();
                if keep(&name) && p.join("codi_adapter.json").is_file() {
                    found.push(p);
                }
            }
        }
    };
    scan(&model_dir.join("adapters"), &|_| true);
    scan(model_dir, &|n| n.starts_with("codi-"));
    found.sort();
    found
}

/// Runs every adapter of `model_dir` on the bundled images; writes `<out>/<adapter>.png` (rows: condition |
/// one sample per step count | ground truth).
pub fn run_demo<B: Backend>(
    model_dir: &Path,
    out: &Path,
    options: &DemoOptions,
    device: &B::Device,
) -> Result<Vec<DemoResult>, TrainError> {
    let adapters = find_adapters(model_dir);
    if adapters.is_empty() {
        return Err(TrainError::Data {
            file: model_dir.to_path_buf(),
            reason:
                "no distilled adapters (adapters/<task>/ or codi-<task>/ with codi_adapter.json)"
                    .into(),
        });
    }
    let images = model_dir.join("demo").join("fashion-mnist");
    let data = DataConfig::new().with_scenes_test(DEMO_SCENES);
    std::fs::create_dir_all(out).map_err(|e| TrainError::Data {
        file: out.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut results = Vec::new();
    for dir in adapters {
        let name = dir
            .strip_prefix(model_dir)
            .unwrap_or(&dir)
            .to_string_lossy()
            .to_string();
        let pipe = ConditionalPipeline::<B>::load(model_dir, &dir, device)?;
        let cfg = load_distill_config(&dir, &pipe.info)?;
        let task = pipe.info.task_kind()?;
        let maker = PairMaker::Builtin {
            task,
            sr: cfg.sr.clone(),
            inpaint: cfg.inpaint.clone(),
        };
        let source = task_source(&maker, &data, None, &images, Split::Test)?;
        let pairs = eval_pairs(source, maker, options.seed + 1, options.pairs)?;
        let (report, grid) = evaluate_task(
            &pipe,
            None,
            &pairs,
            &options.step_counts,
            None,
            options.guidance,
            options.seed,
            options.pairs.max(1),
            options.pairs,
            device,
        )?;
        let file = out.join(format!("{}.png", name.replace(['/', '\\'], "-")));
        save_grid(grid, options.step_counts.len() + 2, 1, &file)?;
        results.push(DemoResult {
            adapter: name,
            task: task.name().to_string(),
            mode: pipe.info.mode.name().to_string(),
            pairs: report.pairs,
            scores: report.scores,
            bicubic: report.bicubic,
            grid: file,
            wall_time_s: report.wall_time_s,
        });
    }
    Ok(results)
}

/// The summary table: one line per adapter, PSNR / SSIM at each step count.
pub fn summary_table(results: &[DemoResult]) -> String {
    let mut s = format!("{:<16} {:<8} {:>5}", "adapter", "mode", "pairs");
    let steps: Vec<usize> = results
        .first()
        .map(|r| r.scores.iter().map(|x| x.steps).collect())
        .unwrap_or_default();
    for k in &steps {
        s += &format!("  {:>13}", format!("{k}-step PSNR/SSIM"));
    }
    s += "   bicubic   seconds\n";
    for r in results {
        s += &format!("{:<16} {:<8} {:>5}", r.adapter, r.mode, r.pairs);
        for x in &r.scores {
            s += &format!("  {:>8.2} / {:.3}", x.psnr, x.ssim);
        }
        match &r.bicubic {
            Some(b) => s += &format!("  {:>8.2}", b.psnr),
            None => s += &format!("  {:>8}", "-"),
        }
        s += &format!("  {:>8.1}\n", r.wall_time_s);
    }
    s
}
