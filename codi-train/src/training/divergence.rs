//! A diverging run stops at the first non-finite loss, loss term or gradient: the step is named, the epoch
//! is not checkpointed (burn-train skips validation and the checkpoint of an interrupted epoch), so the last
//! good checkpoint stays the latest, and the run returns an error instead of exporting.

use std::sync::{Arc, Mutex};

use burn::train::metric::{
    Adaptor, Metric, MetricAttributes, MetricMetadata, MetricName, SerializedEntry,
};
use burn::train::Interrupter;

use super::output::StepOutput;

/// Shared by the training loop and the model: a model reports a non-finite gradient here from its optimizer
/// step, the guard metric a non-finite loss; the first report stops the run.
#[derive(Clone, Default)]
pub struct DivergenceWatch {
    interrupter: Interrupter,
    /// A report from the optimizer step, not yet placed at a step.
    pending: Arc<Mutex<Option<String>>>,
    /// The first full report: where and what.
    report: Arc<Mutex<Option<String>>>,
    /// The first data error.
    data: Arc<Mutex<Option<String>>>,
    /// The first failure of something else the run needs (the other replicas).
    failure: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for DivergenceWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DivergenceWatch({:?})", self.report())
    }
}

impl DivergenceWatch {
    /// The handle burn-train's loop polls.
    pub fn interrupter(&self) -> Interrupter {
        self.interrupter.clone()
    }

    /// Called from a model's optimizer step: `what` was not finite (placed at the step by the guard).
    pub fn report_gradient(&self, what: String) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.get_or_insert(what);
    }

    /// Called from the data: an item that cannot be read (a corrupt image) stops the run.
    pub fn report_data(&self, what: String) {
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        if d.is_none() {
            self.interrupter.stop(Some(&what));
            *d = Some(what);
        }
    }

    /// Called when the run cannot go on for a reason other than its numbers or data (the other replicas of
    /// a data-parallel run are gone): stops it.
    pub fn report_failure(&self, what: String) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            self.interrupter.stop(Some(&what));
            *f = Some(what);
        }
    }

    /// The failure that stopped the run, if any.
    pub fn failure_report(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The data error that stopped the run, if any.
    pub fn data_report(&self) -> Option<String> {
        self.data.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What stopped the run, if anything.
    pub fn report(&self) -> Option<String> {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn stop(&self, report: String) {
        let mut r = self.report.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            self.interrupter.stop(Some(&report));
            *r = Some(report);
        }
    }
}

/// The loss and the terms of one step, as numbers.
pub struct GuardInput {
    loss: f64,
    terms: Vec<f64>,
}

impl Adaptor<GuardInput> for StepOutput<burn::backend::Flex> {
    fn adapt(&self) -> GuardInput {
        GuardInput {
            loss: self.loss.to_data().iter::<f64>().next().unwrap_or(f64::NAN),
            terms: self.terms.to_data().iter::<f64>().collect(),
        }
    }
}

/// A training metric (`non_finite`, logged, not displayed) that stops the run at the first non-finite loss or term, or after a
/// step whose gradient the model reported as non-finite.
#[derive(Clone)]
pub struct DivergenceGuard {
    watch: DivergenceWatch,
    terms: Vec<String>,
    name: MetricName,
}

impl DivergenceGuard {
    /// `terms`: the names of [`StepOutput::terms`], in order.
    pub fn new(watch: DivergenceWatch, terms: &[(&str, bool)]) -> Self {
        Self {
            watch,
            terms: terms.iter().map(|t| t.0.to_string()).collect(),
            name: Arc::new("non_finite".to_string()),
        }
    }

    /// The report for one step, or `None` when it is sound.
    fn check(&self, item: &GuardInput, epoch: usize, iteration: Option<usize>) -> Option<String> {
        let gradient = self
            .watch
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let finite = item.loss.is_finite() && item.terms.iter().all(|t| t.is_finite());
        if finite && gradient.is_none() {
            return None;
        }
        let terms: Vec<String> = self
            .terms
            .iter()
            .zip(&item.terms)
            .map(|(n, v)| format!("{n} {v:.4e}"))
            .collect();
        let step = iteration.map_or(String::new(), |i| format!(", iteration {i}"));
        let mut what = format!("loss {:.4e}", item.loss);
        if !terms.is_empty() {
            what += &format!(" ({})", terms.join(", "));
        }
        if let Some(g) = gradient {
            what += &format!("; {g}");
        }
        Some(format!("training diverged at epoch {epoch}{step}: {what}"))
    }
}

impl Metric for DivergenceGuard {
    type Input = GuardInput;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        MetricAttributes::None
    }

    fn update(&mut self, item: &GuardInput, metadata: &MetricMetadata) -> SerializedEntry {
        let epoch = metadata.global_progress.items_processed;
        // Logged as `non_finite.log`: 0 per sound step, 1 for the step that stopped the run.
        let flag = match self.check(item, epoch, metadata.iteration) {
            Some(report) => {
                self.watch.stop(report);
                "1"
            }
            None => "0",
        };
        SerializedEntry {
            formatted: String::new(),
            serialized: flag.to_string(),
        }
    }

    fn clear(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_non_finite_step_is_reported_with_its_terms_and_stops_the_run() {
        let watch = DivergenceWatch::default();
        let guard = DivergenceGuard::new(
            watch.clone(),
            &[("consistency", false), ("guidance", false)],
        );
        let sound = GuardInput {
            loss: 0.5,
            terms: vec![0.1, 0.4],
        };
        assert_eq!(guard.check(&sound, 2, Some(7)), None);
        let nan = GuardInput {
            loss: f64::NAN,
            terms: vec![f64::NAN, 0.4],
        };
        let r = guard.check(&nan, 2, Some(8)).unwrap();
        assert!(
            r.contains("epoch 2, iteration 8") && r.contains("consistency NaN"),
            "{r}"
        );
        // A gradient reported by the optimizer step is placed at the next step the guard sees.
        watch.report_gradient("gradient norm inf".into());
        let r = guard.check(&sound, 3, Some(1)).unwrap();
        assert!(
            r.contains("epoch 3, iteration 1") && r.contains("gradient norm inf"),
            "{r}"
        );
        assert_eq!(
            guard.check(&sound, 3, Some(2)),
            None,
            "the report was not consumed"
        );
        assert!(!watch.interrupter().should_stop());
        watch.stop(r.clone());
        watch.stop("a later report".into());
        assert!(watch.interrupter().should_stop());
        assert_eq!(watch.report(), Some(r));
    }
}
