//! `codi eval compare`: conditional models of one task (distilled adapters, conditional teachers, and bicubic
//! upsampling for super-resolution) scored on the same test pairs from the same noise, per sampler and step
//! count, with the training budget each one used. Writes `results.json`, `results.md` (methods as rows, the
//! layout of the paper's Table 1), `fd-vs-steps.svg` and `grid.svg`.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use codi_core::loss::{CodiLossConfig, Objective};
use codi_core::metrics::{frechet_distance, FeatureStats};
use codi_core::{Sampler, SamplerKind};
use codi_models::classifier::Classifier;
use codi_pipelines::figures::{labelled_grid, steps_plot, Series};
use codi_pipelines::ConditionalPipeline;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::evaluate::{condition_as_rgb, image_features, sample_pairs};
use crate::tasks::{TaskKind, TaskPair};

/// One sampler and the step counts it is scored at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerRuns {
    /// codi | ddim | dpmpp | lcm
    pub sampler: String,
    pub steps: Vec<usize>,
    /// Classifier-free guidance scale of these runs (default: the comparison's `--guidance`); shown in the
    /// sampler's name, e.g. `ddim w=3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<f64>,
}

impl SamplerRuns {
    /// The sampler's name in the table and plot: with its guidance scale when it has its own.
    fn label(&self) -> String {
        match self.guidance {
            Some(w) => format!("{} w={w}", self.sampler),
            None => self.sampler.clone(),
        }
    }
}

/// One compared model: a `codi distill` output folder and how it is sampled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSpec {
    pub label: String,
    pub adapter: PathBuf,
    /// Default: a conditional teacher with DDIM at 50, 20, 8, 4, 2 and 1 steps and DPM-Solver++(2M) at 4
    /// and 2; a progressive-distillation student with DDIM on its grid at its step count; a CoDi adapter
    /// with the CoDi sampler at 1, 2, 4 and 8 steps.
    #[serde(default)]
    pub runs: Vec<SamplerRuns>,
}

impl MethodSpec {
    /// `--methods`: a JSON file holding a list of methods, or comma-separated `LABEL=DIR` (or `DIR`, labelled by
    /// its folder name) with the default sampling.
    pub fn parse_list(arg: &str) -> Result<Vec<MethodSpec>, TrainError> {
        let file = Path::new(arg);
        let methods: Vec<MethodSpec> = if arg.ends_with(".json") {
            let text = std::fs::read_to_string(file).map_err(|e| data_err(file, e))?;
            serde_json::from_str(&text).map_err(|e| data_err(file, e))?
        } else {
            arg.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|item| {
                    let (label, dir) = match item.split_once('=') {
                        Some((l, d)) => (l.trim().to_string(), d.trim()),
                        None => (folder_label(item.trim()), item.trim()),
                    };
                    MethodSpec {
                        label,
                        adapter: PathBuf::from(dir),
                        runs: Vec::new(),
                    }
                })
                .collect()
        };
        if methods.is_empty() {
            return Err(TrainError::Config(format!("--methods {arg}: no method")));
        }
        for (i, m) in methods.iter().enumerate() {
            if methods[..i].iter().any(|o| o.label == m.label) {
                return Err(TrainError::Config(format!(
                    "--methods: the label \"{}\" names two methods",
                    m.label
                )));
            }
            for r in &m.runs {
                SamplerKind::from_name(&r.sampler)?;
                if r.steps.is_empty() || r.steps.contains(&0) {
                    return Err(TrainError::Config(format!(
                        "--methods: {}: {} needs step counts of at least 1",
                        m.label, r.sampler
                    )));
                }
                if let Some(w) = r.guidance.filter(|w| !(w.is_finite() && *w >= 0.0)) {
                    return Err(TrainError::Config(format!(
                        "--methods: {}: {} has guidance {w}: must be a finite number of at least 0",
                        m.label, r.sampler
                    )));
                }
            }
        }
        Ok(methods)
    }

    /// The runs of this method: its own, else the default for how its adapter was trained.
    fn runs_for(&self, loss: &CodiLossConfig) -> Vec<SamplerRuns> {
        if !self.runs.is_empty() {
            return self.runs.clone();
        }
        let run = |sampler: &str, steps: &[usize]| SamplerRuns {
            sampler: sampler.into(),
            steps: steps.to_vec(),
            guidance: None,
        };
        match loss.objective {
            Objective::Denoising => {
                vec![run("ddim", &[50, 20, 8, 4, 2, 1]), run("dpmpp", &[4, 2])]
            }
            // A progressive student at the step count it was distilled for, on its grid.
            Objective::Progressive => {
                let kind = SamplerKind::ddim_spaced(loss.progressive.spacing);
                vec![run(kind.name(), &[loss.progressive.student_steps])]
            }
            Objective::Consistency => vec![run("codi", &[1, 2, 4, 8])],
        }
    }
}

fn folder_label(dir: &str) -> String {
    let name = Path::new(dir)
        .file_name()
        .map(|n| n.to_string_lossy().to_string());
    name.unwrap_or_else(|| dir.to_string())
}

fn data_err(file: &Path, reason: impl ToString) -> TrainError {
    TrainError::Data {
        file: file.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Scores of one method at one sampler and step count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareRow {
    pub method: String,
    pub sampler: String,
    /// 0 for a method without steps (bicubic upsampling).
    pub steps: usize,
    /// FD of the classifier's features of the outputs to those of the ground truth.
    pub fd: f64,
    /// Mean squared distance between the unit-normalised classifier features of each output and its ground
    /// truth: a per-image perceptual distance on the classifier's features (LPIPS-like, not LPIPS).
    pub feature_distance: f64,
    pub psnr: f64,
    pub ssim: f64,
    /// Fraction of outputs the classifier puts in the same class as their ground truth.
    pub class_agreement: f64,
    /// Wall time per image: the median over the scoring pass's full batches, divided by the batch size.
    pub ms_per_image: Option<f64>,
    /// Optimizer steps the method was trained for (its config), and the wall time of the run that wrote it.
    pub train_steps: Option<usize>,
    pub train_wall_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub task: String,
    pub pairs: usize,
    pub seed: u64,
    pub guidance: f64,
    pub batch: usize,
    pub rows: Vec<CompareRow>,
    pub wall_time_s: f64,
}

/// How [`compare`] samples and what it keeps for the grid.
#[derive(Debug, Clone)]
pub struct CompareSettings {
    pub guidance: f64,
    pub seed: u64,
    pub batch: usize,
    /// Pairs shown in the grid, and the step count shown for each method (a teacher also at its most steps).
    pub grid_rows: usize,
    pub grid_steps: usize,
}

/// The grid's columns: (label, one image per shown pair).
pub type GridColumns = Vec<(String, Vec<Vec<f32>>)>;

/// Ground truth features, labels and statistics, computed once.
struct Reference {
    feats: Vec<f32>,
    dim: usize,
    labels: Vec<usize>,
    stats: FeatureStats,
}

/// Scores every method on `pairs`. `teacher_dir` is the pipeline the adapters belong to.
pub fn compare<B: Backend>(
    teacher_dir: &Path,
    methods: &[MethodSpec],
    pairs: &[TaskPair],
    classifier: &Classifier<B>,
    settings: &CompareSettings,
    device: &B::Device,
) -> Result<(Comparison, GridColumns), TrainError> {
    let start = std::time::Instant::now();
    let size = pairs.first().map_or(32, |p| p.size);
    let targets: Vec<Vec<f32>> = pairs.iter().map(|p| p.target.clone()).collect();
    let (feats, dim, labels) = image_features(classifier, &targets, size, device);
    let reference = Reference {
        stats: FeatureStats::from_features(&feats, dim),
        feats,
        dim,
        labels,
    };
    let shown = settings.grid_rows.min(pairs.len());
    let (mut rows, mut grid, mut task) = (Vec::new(), Vec::new(), None::<String>);
    for method in methods {
        let pipe = ConditionalPipeline::<B>::load(teacher_dir, &method.adapter, device)?;
        let is_teacher = pipe.is_teacher();
        if grid.is_empty() {
            let cc = pipe.info.condition_channels;
            grid.push((
                "condition".to_string(),
                pairs[..shown]
                    .iter()
                    .map(|p| condition_as_rgb(p, cc))
                    .collect(),
            ));
        }
        match &task {
            Some(t) if *t != pipe.info.task => {
                return Err(data_err(
                    &method.adapter,
                    format!("an adapter for {}, not {t}", pipe.info.task),
                ))
            }
            _ => task = Some(pipe.info.task.clone()),
        }
        let (train_steps, train_wall_s) = crate::distill::export::training_budget(&method.adapter)?;
        let runs = method.runs_for(&pipe.info.loss);
        let most = runs.iter().flat_map(|r| r.steps.iter().copied()).max();
        for run in &runs {
            for &steps in &run.steps {
                let sampler = match run.sampler.as_str() {
                    "codi" => pipe.codi_sampler(steps),
                    name => Sampler::new(SamplerKind::from_name(name)?, steps),
                };
                let g = run.guidance.unwrap_or(settings.guidance);
                let (s, b) = (settings.seed, settings.batch);
                let sampled = sample_pairs(&pipe, pairs, &sampler, g, s, b, device)?;
                let mut row = score(
                    classifier,
                    &reference,
                    &sampled.images,
                    &targets,
                    size,
                    device,
                );
                row.method = method.label.clone();
                row.sampler = run.label();
                row.steps = steps;
                row.ms_per_image = sampled.median_ms_per_image(b);
                row.train_steps = train_steps;
                row.train_wall_s = train_wall_s;
                println!(
                    "[compare] {} {} {steps}: FD {:.3}, PSNR {:.2} ({:.0} s)",
                    row.method,
                    row.sampler,
                    row.fd,
                    row.psnr,
                    start.elapsed().as_secs_f64()
                );
                if steps == settings.grid_steps || (is_teacher && Some(steps) == most) {
                    let label = format!("{}, {} {steps}", method.label, run.label());
                    grid.push((label, sampled.images[..shown].to_vec()));
                }
                rows.push(row);
            }
        }
    }
    let task = task.unwrap_or_default();
    if task == TaskKind::SuperResolution.name() {
        // The degraded input is stored upsampled (bicubic) to the target's size.
        let bicubic: Vec<Vec<f32>> = pairs.iter().map(|p| p.condition.clone()).collect();
        let mut row = score(classifier, &reference, &bicubic, &targets, size, device);
        row.method = "bicubic".into();
        row.sampler = "-".into();
        grid.push(("bicubic".into(), bicubic[..shown].to_vec()));
        rows.push(row);
    }
    grid.push(("ground truth".into(), targets[..shown].to_vec()));
    let comparison = Comparison {
        task,
        pairs: pairs.len(),
        seed: settings.seed,
        guidance: settings.guidance,
        batch: settings.batch,
        rows,
        wall_time_s: start.elapsed().as_secs_f64(),
    };
    Ok((comparison, grid))
}

/// (optimizer steps of the config, wall time of the run) from the folder's `distill.json`, when it has one; a
/// run started from another (`init_from`, a second stage) adds that run's budget, so a two-stage method is
/// charged for both stages (`stages_left` bounds a chain of them).
fn score<B: Backend>(
    classifier: &Classifier<B>,
    reference: &Reference,
    outputs: &[Vec<f32>],
    targets: &[Vec<f32>],
    size: usize,
    device: &B::Device,
) -> CompareRow {
    let n = outputs.len().max(1) as f64;
    let mean = |f: &dyn Fn(&[f32], &[f32]) -> f64| {
        outputs
            .iter()
            .zip(targets)
            .map(|(o, t)| f(o, t))
            .sum::<f64>()
            / n
    };
    let psnr = mean(&|o, t| codi_core::metrics::psnr(o, t, 1.0));
    let ssim = mean(&|o, t| codi_core::metrics::ssim(o, t, 3, size, size, 1.0));
    let (feats, dim, labels) = image_features(classifier, outputs, size, device);
    let fd = frechet_distance(&FeatureStats::from_features(&feats, dim), &reference.stats);
    let agree = labels
        .iter()
        .zip(&reference.labels)
        .filter(|(a, b)| a == b)
        .count();
    let feature_distance = feats
        .chunks(dim)
        .zip(reference.feats.chunks(reference.dim))
        .map(|(a, b)| unit_distance(a, b))
        .sum::<f64>()
        / n;
    CompareRow {
        method: String::new(),
        sampler: String::new(),
        steps: 0,
        fd,
        feature_distance,
        psnr,
        ssim,
        class_agreement: agree as f64 / n,
        ms_per_image: None,
        train_steps: None,
        train_wall_s: None,
    }
}

/// ‖a/‖a‖ − b/‖b‖‖²
fn unit_distance(a: &[f32], b: &[f32]) -> f64 {
    let norm = |v: &[f32]| {
        v.iter()
            .map(|&x| (x as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-12)
    };
    let (na, nb) = (norm(a), norm(b));
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 / na - y as f64 / nb).powi(2))
        .sum()
}

/// Writes `results.json`, `results.md`, `fd-vs-steps.svg` and `grid.svg` into `dir`. `command` is quoted in the
/// Markdown so the table can be made again.
pub fn write_report(
    dir: &Path,
    comparison: &Comparison,
    grid: &GridColumns,
    command: &str,
) -> Result<Vec<PathBuf>, TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| data_err(dir, e))?;
    let json = dir.join("results.json");
    let text = serde_json::to_string_pretty(comparison).map_err(|e| data_err(&json, e))?;
    write_atomic(&json, &text)?;
    let md = dir.join("results.md");
    write_atomic(&md, &markdown(comparison, command))?;
    let plot = dir.join("fd-vs-steps.svg");
    let mut series: Vec<Series> = Vec::new();
    for row in comparison.rows.iter().filter(|r| r.steps > 0) {
        let label = format!("{} ({})", row.method, row.sampler);
        match series.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push((row.steps, row.fd)),
            None => series.push(Series {
                label,
                points: vec![(row.steps, row.fd)],
            }),
        }
    }
    for s in &mut series {
        s.points.sort_by_key(|p| p.0);
    }
    let floor = comparison
        .rows
        .iter()
        .find(|r| r.steps == 0)
        .map(|r| (r.method.as_str(), r.fd));
    let title = format!(
        "{}: FD (classifier features) by sampling steps",
        comparison.task
    );
    steps_plot(&plot, &title, "FD ↓", &series, floor)?;
    let grid_file = dir.join("grid.svg");
    let size = grid
        .first()
        .and_then(|c| c.1.first())
        .map_or(32, |img| ((img.len() / 3) as f64).sqrt().round() as usize);
    labelled_grid(&grid_file, grid, size, (128 / size.max(1)).max(1))?;
    Ok(vec![json, md, plot, grid_file])
}

fn write_atomic(file: &Path, text: &str) -> Result<(), TrainError> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| data_err(file, e))?;
    std::fs::rename(&tmp, file).map_err(|e| data_err(file, e))
}

/// The table in the layout of the paper's Table 1: methods as rows.
pub fn markdown(c: &Comparison, command: &str) -> String {
    let mut out = format!(
        "# {}: {} test pairs, seed {}, guidance {}\n\n`{command}`\n\n\
         | Method | Sampler | Steps | FD ↓ | Feature distance ↓ | PSNR ↑ | SSIM ↑ | Class agreement ↑ | ms / image | Training steps | Training wall time |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        c.task, c.pairs, c.seed, c.guidance
    );
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "–".into());
    for r in &c.rows {
        let steps = if r.steps == 0 {
            "–".to_string()
        } else {
            r.steps.to_string()
        };
        out += &format!(
            "| {} | {} | {} | {:.3} | {:.4} | {:.2} | {:.4} | {:.3} | {} | {} | {} |\n",
            r.method,
            r.sampler,
            steps,
            r.fd,
            r.feature_distance,
            r.psnr,
            r.ssim,
            r.class_agreement,
            or_dash(r.ms_per_image.map(|v| format!("{v:.1}"))),
            or_dash(r.train_steps.map(|v| v.to_string())),
            or_dash(r.train_wall_s.map(|v| format!("{:.1} min", v / 60.0))),
        );
    }
    out += &format!(
        "\nFD and the feature distance use the evaluation classifier's features; wall time per image is the median \
         over the scoring pass's batches of {} (one machine, one run); the training wall time is that of the \
         run that wrote the folder. The whole comparison took {:.0} s.\n",
        c.batch, c.wall_time_s
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_from_a_list_or_a_file_and_bad_ones_are_errors() {
        let m = MethodSpec::parse_list("CoDi=runs/a, runs/teacher-pe").unwrap();
        assert_eq!(m[0].label, "CoDi");
        assert_eq!(m[1].label, "teacher-pe");
        assert_eq!(m[1].adapter, PathBuf::from("runs/teacher-pe"));
        let objective = |objective| CodiLossConfig {
            objective,
            ..Default::default()
        };
        assert_eq!(
            m[0].runs_for(&objective(Objective::Consistency))[0].steps,
            vec![1, 2, 4, 8]
        );
        let teacher = objective(Objective::Denoising);
        assert_eq!(m[1].runs_for(&teacher).len(), 2, "DDIM and DPM-Solver++");
        let student = m[1].runs_for(&objective(Objective::Progressive));
        assert_eq!(
            (student[0].sampler.as_str(), &student[0].steps[..]),
            ("ddim-trailing", &[4][..])
        );
        assert!(MethodSpec::parse_list("a=x,a=y").is_err(), "a label twice");
        assert!(MethodSpec::parse_list("").is_err());
        let dir = std::env::temp_dir().join(format!("codi-methods-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("m.json");
        std::fs::write(
            &file,
            r#"[{"label": "T", "adapter": "x", "runs": [{"sampler": "ddim", "steps": [4], "guidance": 3}]}]"#,
        )
        .unwrap();
        let m = MethodSpec::parse_list(file.to_str().unwrap()).unwrap();
        let runs = m[0].runs_for(&teacher);
        assert_eq!(
            runs,
            vec![SamplerRuns {
                sampler: "ddim".into(),
                steps: vec![4],
                guidance: Some(3.0),
            }]
        );
        assert_eq!(runs[0].label(), "ddim w=3");
        std::fs::write(
            &file,
            r#"[{"label": "T", "adapter": "x", "runs": [{"sampler": "ddim", "steps": [4], "guidance": -1}]}]"#,
        )
        .unwrap();
        assert!(
            MethodSpec::parse_list(file.to_str().unwrap()).is_err(),
            "a negative guidance scale"
        );
        std::fs::write(
            &file,
            r#"[{"label": "T", "adapter": "x", "runs": [{"sampler": "euler", "steps": [4]}]}]"#,
        )
        .unwrap();
        assert!(
            MethodSpec::parse_list(file.to_str().unwrap()).is_err(),
            "an unknown sampler"
        );
        std::fs::write(&file, "[{").unwrap();
        let err = MethodSpec::parse_list(file.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.json"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_feature_distance_ignores_scale_and_grows_with_the_angle() {
        assert!(unit_distance(&[1.0, 2.0], &[2.0, 4.0]) < 1e-12);
        assert!((unit_distance(&[1.0, 0.0], &[0.0, 3.0]) - 2.0).abs() < 1e-12);
    }
}
