//! `codi eval teacher`: class agreement and FD of text-to-image samples (classifier features); `codi eval task`:
//! a conditional model's scores by step count; `codi eval compare`: several models of one task side by side.

use std::path::PathBuf;

use crate::device::{with_backend, BackendTask, DeviceSpec};
use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::{Args as ClapArgs, ValueEnum};
use codi_core::{Sampler, SamplerKind};
use codi_models::classifier::Classifier;
use codi_pipelines::image_io::save_grid;
use codi_pipelines::ConditionalPipeline;
use codi_pipelines::TextToImage;
use codi_train::compare::{compare, write_report, CompareSettings, MethodSpec};
use codi_train::data::fashion_mnist::{FashionMnist, Split, DEFAULT_DIR};
use codi_train::distill::data::eval_pairs;
use codi_train::distill::data::PairMaker;
use codi_train::distill::export::load_distill_config;
use codi_train::distill::task_source;
use codi_train::evaluate::{evaluate_task, evaluate_teacher};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Target {
    /// The text-to-image teacher: class agreement and FD.
    Teacher,
    /// A distilled adapter: PSNR, SSIM and FD against the ground truth at each step count.
    Task,
    /// Several models of one task (`--methods`) on the same test pairs: results.json, results.md (the paper's
    /// Table 1 layout), fd-vs-steps.svg and grid.svg in `--out`.
    Compare,
}

#[derive(ClapArgs, Clone)]
pub struct Args {
    target: Target,
    #[arg(long, default_value = "assets/tiny")]
    model: PathBuf,
    #[arg(long, default_value = "assets/tiny/classifier")]
    classifier: PathBuf,
    #[arg(long, default_value = DEFAULT_DIR)]
    data: PathBuf,
    /// Samples (teacher) or test pairs (task).
    #[arg(long, value_parser = super::at_least_one, default_value_t = 1000)]
    samples: usize,
    /// task: the adapter folder (a `codi distill` output).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// task: step counts to score, comma-separated.
    #[arg(long, default_value = "1,2,4")]
    step_counts: String,
    /// ddim | ddim-trailing | dpmpp | codi | lcm (default: ddim for the teacher, a conditional teacher and a
    /// progressive student, the CoDi sampler on the adapter's grid for a CoDi adapter)
    #[arg(long)]
    sampler: Option<String>,
    #[arg(long, value_parser = super::at_least_one, default_value_t = 50)]
    steps: usize,
    /// Classifier-free guidance scale (default: 3 for the teacher, 1 for a task adapter).
    #[arg(long, value_parser = super::non_negative)]
    guidance: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images generated per batch.
    #[arg(long, value_parser = super::at_least_one, default_value_t = 100)]
    batch: usize,
    /// Grid of the first samples of each class (one row per class).
    #[arg(long)]
    grid: Option<PathBuf>,
    #[arg(long, value_parser = super::at_least_one, default_value_t = 10)]
    grid_columns: usize,
    /// Write the report as JSON here (compare: the folder for its files).
    #[arg(long)]
    out: Option<PathBuf>,
    /// compare: the task every method is for (checked against their adapters).
    #[arg(long)]
    task: Option<String>,
    /// compare: a JSON file listing {label, adapter, runs: [{sampler, steps}]}, or comma-separated
    /// LABEL=DIR (a conditional teacher is scored with DDIM 50/20/8/4/2/1 and DPM-Solver++ 4/2, a
    /// progressive student with DDIM on its grid at its steps, a CoDi adapter with the CoDi sampler at
    /// 1/2/4/8 steps).
    #[arg(long)]
    methods: Option<String>,
    /// compare: pairs shown in the grid.
    #[arg(long, value_parser = super::at_least_one, default_value_t = 8)]
    grid_rows: usize,
    /// compare: the step count of each method shown in the grid (a teacher also at its most steps).
    #[arg(long, value_parser = super::at_least_one, default_value_t = 4)]
    grid_steps: usize,
}

/// Prints the report, writes it to `--out` and the grid (`columns` wide) to `--grid` when asked.
fn report_out<B: burn::tensor::backend::Backend>(
    a: &Args,
    report: &impl serde::Serialize,
    grid: burn::tensor::Tensor<B, 4>,
    columns: usize,
) -> Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    println!("{json}");
    if let Some(f) = &a.out {
        if let Some(d) = f.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(f, &json).with_context(|| format!("writing {}", f.display()))?;
    }
    if let Some(g) = &a.grid {
        save_grid(grid, columns, 1, g)?;
        println!("wrote {}", g.display());
    }
    Ok(())
}

/// The test pairs of an adapter's task, made as its distillation made them (degradation settings, image folder
/// columns and resolution), seeded by `--seed`.
fn test_pairs(
    a: &Args,
    adapter: &std::path::Path,
    info: &codi_pipelines::AdapterInfo,
) -> Result<Vec<codi_train::tasks::TaskPair>> {
    let distill_cfg = load_distill_config(adapter, info)?;
    let maker = PairMaker::Builtin {
        task: info.task_kind()?,
        sr: distill_cfg.sr.clone(),
        inpaint: distill_cfg.inpaint.clone(),
    };
    // An image folder is scored at the resolution (and with the columns) the adapter was trained with.
    let folder = codi_train::data::imagefolder::is_image_folder(&a.data).then(|| {
        distill_cfg
            .folder
            .clone()
            .unwrap_or_else(codi_train::data::imagefolder::FolderConfig::new)
    });
    let source = task_source(
        &maker,
        &distill_cfg.data,
        folder.as_ref(),
        &a.data,
        Split::Test,
    )?;
    Ok(eval_pairs(source, maker, a.seed + 1, a.samples)?)
}

struct TaskEvalRun(Args);

impl BackendTask for TaskEvalRun {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        let adapter = a
            .adapter
            .clone()
            .ok_or_else(|| anyhow::anyhow!("eval task needs --adapter DIR"))?;
        let pipe = ConditionalPipeline::<B::InnerBackend>::load(&a.model, &adapter, &device)?;
        let classifier = Classifier::<B::InnerBackend>::from_dir(&a.classifier, &device)?;
        let steps = super::parse_step_counts(&a.step_counts)?;
        let kind = match a.sampler.as_deref() {
            // A conditional teacher or progressive student is scored with DDIM, a CoDi adapter with the CoDi
            // sampler.
            None if pipe.native_ddim().is_some() => pipe.native_ddim(),
            None | Some("codi") => None,
            Some(name) => Some(SamplerKind::from_name(name)?),
        };
        let pairs = test_pairs(&a, &adapter, &pipe.info)?;
        let (report, grid) = evaluate_task(
            &pipe,
            Some(&classifier),
            &pairs,
            &steps,
            kind,
            a.guidance.unwrap_or(1.0),
            a.seed,
            a.batch,
            a.grid_columns,
            &device,
        )?;
        report_out(&a, &report, grid, steps.len() + 2)
    }
}

struct Task(Args);

impl BackendTask for Task {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        let pipe = TextToImage::<B::InnerBackend>::load(&a.model, &device)?;
        let classifier = Classifier::<B::InnerBackend>::from_dir(&a.classifier, &device)?;
        if a.samples < 2 {
            anyhow::bail!("--samples {}: the FD needs at least 2 samples", a.samples);
        }
        let test = FashionMnist::load(&a.data, Split::Test)?;
        let sampler = Sampler::new(
            SamplerKind::from_name(a.sampler.as_deref().unwrap_or("ddim"))?,
            a.steps,
        );
        let (report, grid) = evaluate_teacher(
            &pipe,
            &classifier,
            &test,
            a.samples,
            &sampler,
            a.guidance.unwrap_or(3.0),
            a.seed,
            a.batch,
            a.grid_columns,
            &device,
        )?;
        report_out(&a, &report, grid, a.grid_columns)
    }
}

struct CompareRun(Args);

impl BackendTask for CompareRun {
    type Output = Result<()>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        let list = a.methods.as_deref().ok_or_else(|| {
            anyhow::anyhow!("eval compare needs --methods (a JSON file or LABEL=DIR,…)")
        })?;
        let out = a
            .out
            .clone()
            .ok_or_else(|| anyhow::anyhow!("eval compare needs --out DIR"))?;
        let methods = MethodSpec::parse_list(list)?;
        // The pairs are made as the first method's distillation made them; compare checks every adapter's task.
        let first = &methods[0].adapter;
        let (_, info) = codi_pipelines::adapter::read_adapter_info(first)?;
        if let Some(task) = a.task.as_deref().filter(|t| *t != info.task) {
            anyhow::bail!(
                "--task {task}, but {} is an adapter for {}",
                first.display(),
                info.task
            );
        }
        let pairs = test_pairs(&a, first, &info)?;
        let classifier = Classifier::<B::InnerBackend>::from_dir(&a.classifier, &device)?;
        let settings = CompareSettings {
            guidance: a.guidance.unwrap_or(1.0),
            seed: a.seed,
            batch: a.batch,
            grid_rows: a.grid_rows,
            grid_steps: a.grid_steps,
        };
        let (comparison, grid) =
            compare(&a.model, &methods, &pairs, &classifier, &settings, &device)?;
        let command = super::command_line();
        for file in write_report(&out, &comparison, &grid, &command)? {
            println!("wrote {}", file.display());
        }
        Ok(())
    }
}

pub fn run(args: Args, device: DeviceSpec) -> Result<()> {
    match args.target {
        Target::Teacher => with_backend(device, Task(args))?,
        Target::Task => with_backend(device, TaskEvalRun(args))?,
        Target::Compare => with_backend(device, CompareRun(args))?,
    }
}
