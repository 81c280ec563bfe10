//! The training loop that pretraining and distillation share: burn-train's Learner with AdamW, gradient
//! clipping, a warm-up + cosine learning-rate schedule, atomic checkpoints every epoch and exact resume, the
//! log renderer, and the data loaders.

pub mod checkpoint;
pub mod checks;
pub mod config_keys;
pub mod divergence;
pub mod lock;
pub mod lr;
pub mod output;
pub mod renderer;
pub mod replicas;

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use burn::config::Config;
use burn::data::dataloader::DataLoader;
use burn::module::AutodiffModule;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::AdamWConfig;
use burn::tensor::backend::AutodiffBackend;
use burn::train::metric::{LearningRateMetric, LossMetric};
use burn::train::{InferenceStep, Learner, SupervisedTraining, TrainStep};

use crate::data::epoch::{EpochSampled, EpochStart};
use crate::data::loader::{OrderedLoader, PassStart};
use crate::error::TrainError;
use output::{StepOutput, TermMetric};
use renderer::{History, LogRenderer};

/// The optimisation settings every pretraining shares.
#[derive(Config, Debug)]
pub struct TrainLoopConfig {
    #[config(default = 64)]
    pub batch_size: usize,
    #[config(default = 10)]
    pub num_epochs: usize,
    /// Optimizer steps per epoch (a checkpoint is written after each epoch); items are drawn at random.
    #[config(default = 500)]
    pub steps_per_epoch: usize,
    /// Items of the test split scored after each epoch.
    #[config(default = 512)]
    pub valid_items: usize,
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    #[config(default = 0.0)]
    pub weight_decay: f64,
    /// Gradient norm clip (0 = off): per parameter in pretraining (burn's AdamW clipping), over all
    /// parameters together in distillation.
    #[config(default = 1.0)]
    pub grad_clip: f64,
    #[config(default = 0)]
    pub seed: u64,
    /// Data loader threads building batches ahead, in order (0 = build them in the training thread).
    #[config(default = 0)]
    pub num_workers: usize,
    /// Warm-up + cosine decay of the learning rate over the run; absent (older configs) = constant.
    pub lr_schedule: Option<lr::CosineScheduleConfig>,
}

impl TrainLoopConfig {
    pub fn optimizer(&self) -> AdamWConfig {
        let c = AdamWConfig::new().with_weight_decay(self.weight_decay as f32);
        if self.grad_clip > 0.0 {
            c.with_grad_clipping(Some(GradientClippingConfig::Norm(self.grad_clip as f32)))
        } else {
            c
        }
    }
}

/// Where and how one run goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run folder: checkpoints, burn-train's metric logs, `train.log`.
    pub dir: PathBuf,
    /// Continue from the latest complete checkpoint in `dir` (if any).
    pub resume: bool,
    /// Seconds between progress lines.
    pub log_every: Duration,
    /// Stops the run at the first non-finite loss or gradient; a model reports its gradients here.
    pub divergence: divergence::DivergenceWatch,
    /// This run's replica in data-parallel training (none: one device). Replicas other than the first keep
    /// their metric logs in `dir/replicas/<rank>`, print nothing, write no checkpoint and resume from the
    /// first's.
    pub replica: Option<replicas::Replica>,
}

impl RunOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            resume: false,
            log_every: Duration::from_secs(10),
            divergence: divergence::DivergenceWatch::default(),
            replica: None,
        }
    }

    /// Whether this run writes checkpoints and logs: one device, or the first replica.
    pub fn is_primary(&self) -> bool {
        self.replica.as_ref().is_none_or(|r| r.is_primary())
    }

    /// Where burn-train writes this replica's metric logs: the run folder for the first.
    fn own_dir(&self) -> PathBuf {
        match &self.replica {
            Some(r) if !r.is_primary() => self.dir.join("replicas").join(r.rank.to_string()),
            _ => self.dir.clone(),
        }
    }
}

/// What a run returns besides the model.
#[derive(Debug, Clone)]
pub struct FitReport {
    /// The epoch training started at (1, or the checkpoint's + 1).
    pub start_epoch: usize,
    pub history: History,
}

/// Loads a config file written as JSON by [`Config::save`] (or by hand), naming the file on error.
/// A key the config does not have (a misspelling) is an error that names it, not a silent default, and so is
/// a value outside the config's bounds ([`checks::Checked`]).
pub fn load_config<C: Config + checks::Checked>(file: &Path) -> Result<C, TrainError> {
    let err = |reason: String| TrainError::Data {
        file: file.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(file).map_err(|e| err(e.to_string()))?;
    let config: C = config_from_json(&text).map_err(err)?;
    config.check().map_err(err)?;
    Ok(config)
}

/// A config from JSON text, refusing keys the config does not have. → the config, or what is wrong
pub fn config_from_json<C: Config>(text: &str) -> Result<C, String> {
    let written: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let config = C::load_binary(text.as_bytes()).map_err(|e| {
        let e = e.to_string();
        let hint = config_keys::missing_field(&e)
            .and_then(|field| config_keys::near_key(&written, field))
            .map(|near| format!(" (the file has `{near}`: misspelled?)"))
            .unwrap_or_default();
        format!("not a valid config: {e}{hint}")
    })?;
    let known = serde_json::to_value(&config).map_err(|e| e.to_string())?;
    match config_keys::describe(&config_keys::unknown_keys(&written, &known)) {
        Some(reason) => Err(reason),
        None => Ok(config),
    }
}

/// Trains `model` with burn-train's SupervisedTraining: loss + `terms` as metrics, the [`LogRenderer`],
/// atomic checkpoints each epoch, resume from the latest. Returns the trained (inner) model.
#[allow(clippy::too_many_arguments)]
pub fn fit<B, M>(
    name: &str,
    model: M,
    loop_cfg: &TrainLoopConfig,
    optimizer: Option<AdamWConfig>,
    train: Arc<dyn DataLoader<B, M::Input>>,
    valid: Arc<dyn DataLoader<B::InnerBackend, <M::InnerModule as InferenceStep>::Input>>,
    terms: &[(&str, bool)],
    run: &RunOptions,
) -> Result<(M::InnerModule, FitReport), TrainError>
where
    B: AutodiffBackend,
    M: TrainStep<Output = StepOutput<B>> + AutodiffModule<B> + Display + 'static,
    M::InnerModule: InferenceStep<Output = StepOutput<B::InnerBackend>>,
{
    let own_dir = run.own_dir();
    std::fs::create_dir_all(&own_dir).map_err(|e| TrainError::Data {
        file: own_dir.clone(),
        reason: format!("cannot create the run folder: {e}"),
    })?;
    let _lock = lock::RunLock::acquire(&own_dir)?;
    if run.is_primary() {
        checkpoint::remove_incomplete(&run.dir.join("checkpoint")).map_err(|e| {
            TrainError::Data {
                file: run.dir.join("checkpoint"),
                reason: format!("cannot remove an incomplete checkpoint: {e}"),
            }
        })?;
    }
    let checkpoint = if run.resume {
        checkpoint::latest_epoch(&run.dir.join("checkpoint"))
    } else {
        None
    };
    if run.resume && checkpoint.is_none() && run.is_primary() {
        println!(
            "[{name}] no checkpoint in {} yet: starting from scratch",
            run.dir.display()
        );
    }
    match checkpoint.filter(|_| run.is_primary()) {
        Some(e) if e >= loop_cfg.num_epochs => println!(
            "[{name}] the checkpoint of epoch {e} completes the run's {} epochs: exporting it",
            loop_cfg.num_epochs
        ),
        Some(e) => println!("[{name}] resuming after epoch {e}"),
        None => {}
    }
    let history = Arc::new(Mutex::new(History::default()));
    let (renderer, recorder) = if run.is_primary() {
        let log = run.dir.join("train.log");
        let renderer = LogRenderer::new(name, run.log_every, Some(&log), history.clone());
        (renderer, checkpoint::AtomicRecorder::default())
    } else {
        let renderer = LogRenderer::new(name, run.log_every, None, history.clone()).quiet();
        let checkpoints = run.dir.join("checkpoint");
        (renderer, checkpoint::AtomicRecorder::follower(&checkpoints))
    };
    let mut training = SupervisedTraining::new(&own_dir, train, valid)
        .metric_train_numeric(LossMetric::new())
        .metric_train_numeric(LearningRateMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .with_file_checkpointer(recorder.clone())
        .metric_train(divergence::DivergenceGuard::new(
            run.divergence.clone(),
            terms,
        ))
        .with_interrupter(run.divergence.interrupter())
        .num_epochs(loop_cfg.num_epochs)
        .renderer(renderer);
    for (i, (term, higher_is_better)) in terms.iter().enumerate() {
        training = training
            .metric_train_numeric(TermMetric::new(i, term, *higher_is_better))
            .metric_valid_numeric(TermMetric::new(i, term, *higher_is_better));
    }
    if let Some(e) = checkpoint {
        training = training.checkpoint(e);
    }
    let optim = optimizer
        .unwrap_or_else(|| loop_cfg.optimizer())
        .init::<B, M>();
    let resumed = checkpoint.filter(|&e| e < loop_cfg.num_epochs);
    let kept = match resumed {
        Some(_) => Some(EpochOneLogs::set_aside(&own_dir)?),
        None => None,
    };
    // A checkpoint that cannot be written (a full disk) panics in burn-train's checkpointer thread, which
    // the loop does not always notice: the recorder keeps the failure, and the run ends with an error.
    let launched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        training.launch(Learner::new(model, optim, lr::schedule(loop_cfg)))
    }));
    if let (Some(e), Some(kept)) = (resumed, kept) {
        kept.restore(e + 1)?;
    }
    let cause = recorder
        .failure()
        .map(|failure| format!("writing a checkpoint failed: {failure}"))
        .or_else(|| {
            let panic = launched.as_ref().err()?;
            Some(format!("training panicked: {}", panic_message(panic)))
        });
    let result = match (launched, cause) {
        (Ok(result), None) => result,
        (_, cause) => {
            let kept = intact(run, "no earlier checkpoint");
            return Err(TrainError::Data {
                file: run.dir.clone(),
                reason: format!("the run stopped: {}; {kept}", cause.unwrap_or_default()),
            });
        }
    };
    // burn-train's rule once more, on the whole run folder: a resumed run's own pass covers only its epochs,
    // and burn-train picks the best epoch from metrics its logger may not have written yet (under load an
    // unbroken run kept epoch 1 of 3 with the validation loss falling).
    if run.is_primary() {
        checkpoint::apply_retention(&run.dir, 2).map_err(|e| TrainError::Data {
            file: run.dir.join("checkpoint"),
            reason: format!("cannot remove an old checkpoint: {e}"),
        })?;
    }
    if let Some(report) = run.divergence.data_report() {
        let kept = intact(run, "no epoch had completed");
        return Err(TrainError::Data {
            file: run.dir.clone(),
            reason: format!(
                "the run stopped at unreadable data: {report}; {kept}: fix or remove the file, or skip such \
                 files (--skip-bad-images, folder.skip_bad_images), and resume"
            ),
        });
    }
    if let Some(report) = run.divergence.failure_report() {
        let kept = intact(run, "no epoch had completed");
        return Err(TrainError::Data {
            file: run.dir.clone(),
            reason: format!("the run stopped: {report}; {kept}: resume it with --resume"),
        });
    }
    if let Some(report) = run.divergence.report() {
        let kept = checkpoint::latest_epoch(&run.dir.join("checkpoint")).map_or_else(
            || "no epoch had completed: nothing was checkpointed".to_string(),
            |e| format!("the last good checkpoint (epoch {e}) is kept; resume from it with a lower learning rate or stronger clipping"),
        );
        return Err(TrainError::Data {
            file: run.dir.clone(),
            reason: format!("{report}; the run stopped without exporting; {kept}"),
        });
    }
    let history = history.lock().unwrap().clone();
    Ok((
        result.model,
        FitReport {
            start_epoch: checkpoint.map_or(1, |e| e + 1),
            history,
        },
    ))
}

/// What a stopped run kept: the latest checkpoint's epoch, or `none`.
fn intact(run: &RunOptions, none: &str) -> String {
    checkpoint::latest_epoch(&run.dir.join("checkpoint")).map_or_else(
        || none.to_string(),
        |e| format!("the checkpoint of epoch {e} is intact"),
    )
}

/// The text of a caught panic.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// burn-train 0.21 writes the metric logs of the first epoch after a resume into `{train,valid}/epoch-1`
/// (its logger starts counting at 1), over the logs of the real epoch 1. This moves the original epoch-1
/// logs aside before the run and, after it, moves what was written there to the resumed epoch's number.
struct EpochOneLogs {
    dir: PathBuf,
}

impl EpochOneLogs {
    const SPLITS: [&'static str; 2] = ["train", "valid"];

    fn set_aside(run: &Path) -> Result<Self, TrainError> {
        for split in Self::SPLITS {
            let (one, aside) = Self::paths(run, split);
            if one.exists() && !aside.exists() {
                rename(&one, &aside)?;
            }
        }
        Ok(Self {
            dir: run.to_path_buf(),
        })
    }

    fn restore(self, first_epoch: usize) -> Result<(), TrainError> {
        for split in Self::SPLITS {
            let (one, aside) = Self::paths(&self.dir, split);
            let target = self.dir.join(split).join(format!("epoch-{first_epoch}"));
            if one.exists() && !target.exists() {
                rename(&one, &target)?;
            }
            if aside.exists() {
                if one.exists() {
                    std::fs::remove_dir_all(&one).map_err(|e| TrainError::Data {
                        file: one.clone(),
                        reason: format!("cannot remove: {e}"),
                    })?;
                }
                rename(&aside, &one)?;
            }
        }
        Ok(())
    }

    fn paths(run: &Path, split: &str) -> (PathBuf, PathBuf) {
        let d = run.join(split);
        (d.join("epoch-1"), d.join("epoch-1.before-resume"))
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), TrainError> {
    std::fs::rename(from, to).map_err(|e| TrainError::Data {
        file: from.to_path_buf(),
        reason: format!("cannot move to {}: {e}", to.display()),
    })
}

/// The epochs a run has completed before it starts: the latest checkpoint's when it resumes, else 0.
pub fn completed_epochs(run: &RunOptions) -> usize {
    if run.resume {
        checkpoint::latest_epoch(&run.dir.join("checkpoint")).unwrap_or(0)
    } else {
        0
    }
}

/// A training loader: `steps_per_epoch × batch_size` items drawn with replacement each epoch, at positions
/// keyed by (seed, epoch, position) ([`EpochSampled`]), so a resumed run reads the batches an unbroken run
/// would. `on_start` reseeds what the run draws per epoch. `num_workers` threads build the batches ahead, in
/// the same order ([`OrderedLoader`]).
pub fn train_loader<B, I, O, D, Bt>(
    batcher: Bt,
    dataset: D,
    cfg: &TrainLoopConfig,
    run: &RunOptions,
    on_start: Option<EpochStart>,
    device: &B::Device,
) -> Arc<dyn DataLoader<B, O>>
where
    B: burn::tensor::backend::Backend,
    I: Send + Sync + Clone + 'static,
    O: Send + 'static,
    D: burn::data::dataset::Dataset<I> + 'static,
    Bt: burn::data::dataloader::batcher::Batcher<B, I, O> + 'static,
{
    let sampled = EpochSampled::new(
        dataset,
        cfg.seed,
        cfg.steps_per_epoch * cfg.batch_size,
        completed_epochs(run),
        on_start,
    );
    let pass_start = sampled.pass_start();
    Arc::new(OrderedLoader::new(
        Arc::new(sampled),
        Arc::new(batcher),
        cfg.batch_size,
        cfg.num_workers,
        device.clone(),
        Some(pass_start),
    ))
}

/// A validation loader over `valid_items` items spread evenly through `dataset` (so every part of a mixed
/// dataset is scored).
pub fn valid_loader<B, I, O, D, Bt>(
    batcher: Bt,
    dataset: D,
    cfg: &TrainLoopConfig,
    device: &B::Device,
) -> Arc<dyn DataLoader<B, O>>
where
    B: burn::tensor::backend::Backend,
    I: Send + Sync + Clone + std::fmt::Debug + 'static,
    O: Send + Clone + std::fmt::Debug + 'static,
    D: burn::data::dataset::Dataset<I> + 'static,
    Bt: burn::data::dataloader::batcher::Batcher<B, I, O> + 'static,
{
    ordered_loader(
        batcher,
        crate::data::Spread::new(dataset, cfg.valid_items),
        cfg.batch_size,
        cfg.num_workers,
        None,
        device,
    )
}

/// A loader that reads `dataset` in order (its items already carry their randomness), its batches built by
/// `workers` threads; `on_pass` runs before each pass.
pub fn ordered_loader<B, I, O, D, Bt>(
    batcher: Bt,
    dataset: D,
    batch_size: usize,
    workers: usize,
    on_pass: Option<PassStart>,
    device: &B::Device,
) -> Arc<dyn DataLoader<B, O>>
where
    B: burn::tensor::backend::Backend,
    I: Send + Sync + Clone + 'static,
    O: Send + 'static,
    D: burn::data::dataset::Dataset<I> + 'static,
    Bt: burn::data::dataloader::batcher::Batcher<B, I, O> + 'static,
{
    Arc::new(OrderedLoader::new(
        Arc::new(dataset),
        Arc::new(batcher),
        batch_size,
        workers,
        device.clone(),
        on_pass,
    ))
}
