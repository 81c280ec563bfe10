//! The learning-rate schedule of a run: a linear warm-up, then a cosine decay to a fraction of the peak over
//! the run's `num_epochs × steps_per_epoch` optimizer steps. It lets one command train a model to the end
//! instead of a chain of resumes at hand-lowered rates.

use burn::config::Config;
use burn::optim::lr_scheduler::LrScheduler;
use burn::optim::LearningRate;
use burn::tensor::backend::Backend;

use super::TrainLoopConfig;

#[derive(Config, Debug, PartialEq)]
pub struct CosineScheduleConfig {
    /// Steps of linear warm-up from peak / warmup_steps to the peak (`learning_rate`).
    #[config(default = 0)]
    pub warmup_steps: usize,
    /// The last step's rate as a fraction of the peak.
    #[config(default = 0.01)]
    pub final_ratio: f64,
}

impl CosineScheduleConfig {
    pub fn init(&self, run: &TrainLoopConfig) -> WarmupCosineLr {
        WarmupCosineLr {
            peak: run.learning_rate,
            warmup: self.warmup_steps,
            total: run.num_epochs * run.steps_per_epoch,
            final_ratio: self.final_ratio,
            step: 0,
        }
    }
}

/// The schedule `run` asks for: its `lr_schedule`, or a constant `learning_rate` when it has none.
pub fn schedule(run: &TrainLoopConfig) -> WarmupCosineLr {
    run.lr_schedule.as_ref().map_or_else(
        || CosineScheduleConfig::new().with_final_ratio(1.0).init(run),
        |s| s.init(run),
    )
}

/// Stateful form of [`CosineScheduleConfig`]; its checkpoint record is the step count, so a resumed run
/// continues the curve where it stopped. The record is optional because runs checkpointed before schedules
/// existed stored a constant rate's empty record; those resume at step 0 (their rate was constant).
#[derive(Clone, Debug)]
pub struct WarmupCosineLr {
    peak: f64,
    warmup: usize,
    total: usize,
    final_ratio: f64,
    step: usize,
}

impl WarmupCosineLr {
    /// The rate of optimizer step `i` (0-based).
    pub fn at(&self, i: usize) -> LearningRate {
        if i < self.warmup {
            return self.peak * (i + 1) as f64 / self.warmup as f64;
        }
        let span = self
            .total
            .saturating_sub(self.warmup)
            .saturating_sub(1)
            .max(1);
        let t = ((i - self.warmup) as f64 / span as f64).min(1.0);
        let floor = self.peak * self.final_ratio;
        floor + (self.peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

impl LrScheduler for WarmupCosineLr {
    type Record<B: Backend> = Option<usize>;

    fn step(&mut self) -> LearningRate {
        let lr = self.at(self.step);
        self.step += 1;
        lr
    }

    fn to_record<B: Backend>(&self) -> Option<usize> {
        Some(self.step)
    }

    fn load_record<B: Backend>(mut self, record: Option<usize>) -> Self {
        self.step = record.unwrap_or(0);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codi_core::backend::CpuBackend;

    fn cosine() -> WarmupCosineLr {
        let run = TrainLoopConfig::new()
            .with_learning_rate(1e-3)
            .with_num_epochs(2)
            .with_steps_per_epoch(50);
        CosineScheduleConfig::new()
            .with_warmup_steps(10)
            .with_final_ratio(0.1)
            .init(&run)
    }

    #[test]
    fn warms_up_then_decays_to_the_floor() {
        let mut s = cosine();
        let lrs: Vec<f64> = (0..100).map(|_| s.step()).collect();
        assert!((lrs[0] - 1e-4).abs() < 1e-12);
        assert!((lrs[9] - 1e-3).abs() < 1e-12);
        assert!((lrs[99] - 1e-4).abs() < 1e-12, "last step {}", lrs[99]);
        assert!(lrs[10..].windows(2).all(|w| w[1] <= w[0]));
        // Half way through the decay the rate is half way between peak and floor.
        let mid = 10 + 89 / 2;
        assert!((s.at(mid) - 5.5e-4).abs() < 2e-5, "{}", s.at(mid));
    }

    #[test]
    fn a_resumed_schedule_continues_the_curve() {
        let mut a = cosine();
        for _ in 0..37 {
            a.step();
        }
        let record = a.to_record::<CpuBackend>();
        let mut b = cosine().load_record::<CpuBackend>(record);
        for _ in 0..63 {
            assert_eq!(a.step(), b.step());
        }
    }

    #[test]
    fn no_schedule_is_a_constant_rate() {
        let mut s = schedule(&TrainLoopConfig::new().with_learning_rate(3e-4));
        assert!((0..20).all(|_| s.step() == 3e-4));
    }

    #[test]
    fn configs_without_a_schedule_still_load() {
        let json = serde_json::to_string(&TrainLoopConfig::new()).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v.as_object_mut().unwrap().remove("lr_schedule");
        let c: TrainLoopConfig = serde_json::from_value(v).unwrap();
        assert_eq!(c.lr_schedule, None);
    }
}
