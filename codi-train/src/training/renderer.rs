//! A progress renderer that reads well in a log file as much as in a terminal: one line every few seconds
//! with the epoch, the step, the running means of every metric, the speed and the time left; one line per
//! validation. Lines also go to `train.log` in the run folder, and per-epoch means to a shared [`History`].

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::train::metric::{LearningRateMetric, Metric, MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

/// Per-epoch means of every metric, for reports and tests.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// (epoch, metric name → mean over the epoch's training steps)
    pub train: Vec<(usize, BTreeMap<String, f64>)>,
    /// (epoch, metric name → mean over the validation set)
    pub valid: Vec<(usize, BTreeMap<String, f64>)>,
    /// Optimizer steps run in this process.
    pub steps: usize,
}

#[derive(Default)]
struct Means {
    sums: BTreeMap<String, (f64, usize)>,
}

impl Means {
    fn add(&mut self, name: &str, v: f64, n: usize) {
        let e = self.sums.entry(name.to_string()).or_insert((0.0, 0));
        e.0 += v * n as f64;
        e.1 += n;
    }
    fn means(&self) -> BTreeMap<String, f64> {
        self.sums
            .iter()
            .map(|(k, (s, n))| (k.clone(), s / (*n).max(1) as f64))
            .collect()
    }
    fn line(&self) -> String {
        self.means()
            .iter()
            .map(|(k, v)| format!("{k} {}", fmt_value(*v)))
            .collect::<Vec<_>>()
            .join("  ")
    }
}

fn fmt_value(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e4) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

pub struct LogRenderer {
    run: String,
    every: Duration,
    names: HashMap<MetricId, String>,
    train: Means,
    valid: Means,
    epoch: usize,
    start: Instant,
    epoch_start: Instant,
    last_print: Instant,
    log: Option<File>,
    history: Arc<Mutex<History>>,
    /// The optimizer's current learning rate (burn-train's `LearningRateMetric`), shown as is, not averaged.
    lr: Option<f64>,
    /// The id burn-train registered that metric under.
    lr_id: Option<MetricId>,
    /// Print nothing (a data-parallel replica other than the first).
    quiet: bool,
}

impl LogRenderer {
    /// `run` names the model in each line; lines are printed at most every `every`, and appended to `log`.
    pub fn new(
        run: &str,
        every: Duration,
        log: Option<&Path>,
        history: Arc<Mutex<History>>,
    ) -> Self {
        let now = Instant::now();
        Self {
            run: run.to_string(),
            every,
            names: HashMap::new(),
            train: Means::default(),
            valid: Means::default(),
            epoch: 0,
            start: now,
            epoch_start: now,
            last_print: now,
            log: log.and_then(|p| File::options().create(true).append(true).open(p).ok()),
            history,
            lr: None,
            lr_id: None,
            quiet: false,
        }
    }

    /// A renderer that prints nothing and only keeps the history.
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    fn emit(&mut self, line: String) {
        if self.quiet {
            return;
        }
        println!("{line}");
        if let Some(f) = &mut self.log {
            let _ = writeln!(f, "{line}");
        }
    }

    fn record(&mut self, valid: bool, state: MetricState) {
        if let MetricState::Numeric(entry, value) = state {
            let name = self
                .names
                .get(&entry.metric_id)
                .cloned()
                .unwrap_or_else(|| "?".into());
            let (v, n) = match value {
                burn::train::metric::NumericEntry::Value(v) => (v, 1),
                burn::train::metric::NumericEntry::Aggregated {
                    aggregated_value,
                    count,
                } => (aggregated_value, count),
            };
            if self.lr_id.as_ref() == Some(&entry.metric_id) {
                self.lr = Some(v);
            } else if valid {
                self.valid.add(&name, v, n);
            } else {
                self.train.add(&name, v, n);
            }
        }
    }

    fn close_epoch(&mut self) {
        if self.epoch > 0 && !self.train.sums.is_empty() {
            let means = self.train.means();
            self.history.lock().unwrap().train.push((self.epoch, means));
        }
        self.train = Means::default();
    }
}

impl MetricsRendererTraining for LogRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(false, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(true, state);
    }

    fn render_train(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        let epoch = item.global_progress.items_processed;
        if epoch != self.epoch {
            self.close_epoch();
            self.epoch = epoch;
            self.epoch_start = Instant::now();
        }
        self.history.lock().unwrap().steps += 1;
        let Some(p) = item.progress else { return };
        let done = p.items_processed >= p.items_total;
        let now = Instant::now();
        if !done && now - self.last_print < self.every {
            return;
        }
        self.last_print = now;
        let step = item.iteration.unwrap_or(0);
        let elapsed = now - self.epoch_start;
        let rate = step as f64 / elapsed.as_secs_f64().max(1e-9);
        let frac = p.items_processed as f64 / p.items_total.max(1) as f64;
        let left_epoch = elapsed.as_secs_f64() * (1.0 - frac) / frac.max(1e-9);
        let epochs_left = item.global_progress.items_total.saturating_sub(epoch) as f64;
        let eta = left_epoch + epochs_left * elapsed.as_secs_f64() / frac.max(1e-9);
        let lr = self
            .lr
            .map_or(String::new(), |lr| format!("  lr {}", fmt_value(lr)));
        let line = format!(
            "[{}] epoch {}/{}  step {}  {:>3.0}%  {}{}  | {:.2} steps/s  elapsed {}  eta {}",
            self.run,
            epoch,
            item.global_progress.items_total,
            step,
            frac * 100.0,
            self.train.line(),
            lr,
            rate,
            fmt_duration(now - self.start),
            fmt_duration(Duration::from_secs_f64(eta.max(0.0))),
        );
        self.emit(line);
    }

    fn render_valid(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        let Some(p) = item.progress else { return };
        if p.items_processed < p.items_total {
            return;
        }
        let epoch = item.global_progress.items_processed;
        let line = format!(
            "[{}] epoch {} valid  {}",
            self.run,
            epoch,
            self.valid.line()
        );
        self.emit(line);
        let means = self.valid.means();
        self.history.lock().unwrap().valid.push((epoch, means));
        self.valid = Means::default();
    }

    fn on_train_end(
        &mut self,
        _summary: Option<burn::train::LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        self.close_epoch();
        let line = format!(
            "[{}] done in {}",
            self.run,
            fmt_duration(Instant::now() - self.start)
        );
        self.emit(line);
        Ok(())
    }
}

impl MetricsRendererEvaluation for LogRenderer {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.record(true, state);
    }

    fn render_test(&mut self, _item: EvaluationProgress, _: Vec<ProgressType>) {}
}

impl MetricsRenderer for LogRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        if *definition.name == *LearningRateMetric::new().name() {
            self.lr_id = Some(definition.metric_id.clone());
        }
        self.names.insert(definition.metric_id, definition.name);
    }
}
