//! VP noise schedules: β, ᾱ and the per-timestep α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t).

use burn::config::Config;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

use crate::error::{invalid, CoreError};

/// How β grows over the training timesteps (diffusers' `beta_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// β linear from `beta_start` to `beta_end`.
    Linear,
    /// √β linear (Stable Diffusion).
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal, β clipped at 0.999.
    SquaredcosCapV2,
}

impl FromStr for BetaSchedule {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "linear" => Ok(Self::Linear),
            "scaled_linear" => Ok(Self::ScaledLinear),
            "squaredcos_cap_v2" => Ok(Self::SquaredcosCapV2),
            _ => Err(CoreError::UnknownName {
                what: "beta schedule",
                value: s.to_string(),
                expected: "linear, scaled_linear, squaredcos_cap_v2",
            }),
        }
    }
}

/// Most training timesteps a schedule may have (diffusers' schedulers use 1,000; the bound keeps a corrupt
/// config from asking for terabytes of ᾱ).
pub const MAX_TRAIN_TIMESTEPS: usize = 1_000_000;

/// The settings of a noise schedule, named as in diffusers' scheduler configs.
#[derive(Config, Debug, PartialEq)]
pub struct NoiseScheduleConfig {
    /// Number of training timesteps T (diffusers' `num_train_timesteps`).
    #[config(default = 1000)]
    pub num_train_timesteps: usize,
    /// β at the first timestep (diffusers' `beta_start`); unused by the cosine schedule.
    #[config(default = 0.00085)]
    pub beta_start: f64,
    /// β at the last timestep (diffusers' `beta_end`); unused by the cosine schedule.
    #[config(default = 0.012)]
    pub beta_end: f64,
    /// How β goes from `beta_start` to `beta_end` (diffusers' `beta_schedule`).
    #[config(default = "BetaSchedule::ScaledLinear")]
    pub beta_schedule: BetaSchedule,
}

impl NoiseScheduleConfig {
    /// Stable Diffusion 1.x: 1000 steps, scaled_linear 0.00085 → 0.012.
    pub fn sd15() -> Self {
        Self::new()
    }

    /// Builds the schedule; see [`NoiseSchedule::new`].
    pub fn init(&self) -> Result<NoiseSchedule, CoreError> {
        NoiseSchedule::new(self)
    }
}

/// A discrete VP schedule. ᾱ is computed in f32 exactly as PyTorch does (linspace, square, cumprod in
/// float32), so that timesteps, ᾱ and every sampler step agree with diffusers bit for bit where possible;
/// α and σ are derived from it in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f32>,
    alphas_cumprod: Vec<f32>,
}

/// `torch.linspace(start, end, n, dtype=float32)` on the CPU: the two halves are computed from either end
/// with fused multiply-adds (matches PyTorch bit for bit).
fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

impl NoiseSchedule {
    /// Computes β and ᾱ for `config`. Errors if there are fewer than 2 timesteps or the betas do not satisfy
    /// 0 < beta_start ≤ beta_end < 1.
    pub fn new(config: &NoiseScheduleConfig) -> Result<Self, CoreError> {
        let n = config.num_train_timesteps;
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&n) {
            return Err(invalid(
                "num_train_timesteps",
                format!("{n} (must be in 2..={MAX_TRAIN_TIMESTEPS})"),
            ));
        }
        if !(config.beta_start > 0.0
            && config.beta_end < 1.0
            && config.beta_start <= config.beta_end)
        {
            return Err(invalid(
                "betas",
                format!(
                    "beta_start {} and beta_end {} must satisfy 0 < start <= end < 1",
                    config.beta_start, config.beta_end
                ),
            ));
        }
        let betas: Vec<f32> = match config.beta_schedule {
            BetaSchedule::Linear => {
                torch_linspace_f32(config.beta_start as f32, config.beta_end as f32, n)
            }
            BetaSchedule::ScaledLinear => torch_linspace_f32(
                config.beta_start.sqrt() as f32,
                config.beta_end.sqrt() as f32,
                n,
            )
            .into_iter()
            .map(|b| b * b)
            .collect(),
            BetaSchedule::SquaredcosCapV2 => {
                let f = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - f(t2) / f(t1)).min(0.999) as f32
                    })
                    .collect()
            }
        };
        // PyTorch's CPU cumprod accumulates float32 inputs in f64.
        let mut acc = 1.0f64;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= (1.0 - b) as f64;
                acc as f32
            })
            .collect();
        Ok(Self {
            betas,
            alphas_cumprod,
        })
    }

    /// Number of training timesteps T.
    pub fn num_train_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// β_t for t in 0..T.
    pub fn betas(&self) -> &[f32] {
        &self.betas
    }

    /// ᾱ_t = Π (1 − β) for t in 0..T (diffusers' `alphas_cumprod`).
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// ᾱ_t; `t < 0` is the "before the first step" boundary, where ᾱ = 1.
    pub fn alpha_bar(&self, t: i64) -> f64 {
        if t < 0 {
            1.0
        } else {
            self.alphas_cumprod[(t as usize).min(self.alphas_cumprod.len() - 1)] as f64
        }
    }

    /// α_t = √ᾱ_t.
    pub fn alpha(&self, t: i64) -> f64 {
        self.alpha_bar(t).sqrt()
    }

    /// σ_t = √(1 − ᾱ_t).
    pub fn sigma(&self, t: i64) -> f64 {
        (1.0 - self.alpha_bar(t)).sqrt()
    }

    /// α_t and σ_t gathered for one timestep per sample.
    /// timesteps: \[batch\] (integer-valued; values are clamped to the schedule) → (\[batch\], \[batch\]).
    pub fn alpha_sigma<B: Backend>(
        &self,
        timesteps: &[i64],
        device: &B::Device,
    ) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let n = timesteps.len();
        let alpha: Vec<f32> = timesteps.iter().map(|&t| self.alpha(t) as f32).collect();
        let sigma: Vec<f32> = timesteps.iter().map(|&t| self.sigma(t) as f32).collect();
        (
            Tensor::from_data(TensorData::new(alpha, [n]), device),
            Tensor::from_data(TensorData::new(sigma, [n]), device),
        )
    }

    /// ᾱ for a `[batch]` tensor of integer timesteps, gathered on the device (for training, where t is drawn
    /// on the device). timesteps: \[batch\] → \[batch\].
    pub fn gather_alpha_bar<B: Backend>(
        &self,
        timesteps: Tensor<B, 1, burn::tensor::Int>,
    ) -> Tensor<B, 1> {
        let device = timesteps.device();
        let table = Tensor::<B, 1>::from_data(
            TensorData::new(self.alphas_cumprod.clone(), [self.alphas_cumprod.len()]),
            &device,
        );
        let max = self.alphas_cumprod.len() as i64 - 1;
        table.gather(0, timesteps.clamp(0, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_sigma_are_on_the_unit_circle() {
        for schedule in [
            BetaSchedule::Linear,
            BetaSchedule::ScaledLinear,
            BetaSchedule::SquaredcosCapV2,
        ] {
            let s = NoiseScheduleConfig::new()
                .with_beta_schedule(schedule)
                .with_beta_start(0.0001)
                .with_beta_end(0.02)
                .init()
                .unwrap();
            for t in [0, 1, 250, 500, 999] {
                let (a, sg) = (s.alpha(t), s.sigma(t));
                assert!((a * a + sg * sg - 1.0).abs() < 1e-12);
            }
            // ᾱ falls monotonically.
            assert!(s.alphas_cumprod().windows(2).all(|w| w[1] < w[0]));
        }
    }

    #[test]
    fn per_sample_gathers_agree_with_the_table() {
        use burn::backend::Flex;
        let s = NoiseScheduleConfig::sd15().init().unwrap();
        let device = Default::default();
        let ts = [0i64, 1, 499, 999];
        let t = Tensor::<Flex, 1, burn::tensor::Int>::from_data(
            TensorData::new(ts.to_vec(), [4]),
            &device,
        );
        let gathered = crate::tensor_ops::to_vec(s.gather_alpha_bar(t));
        let (a, sg) = s.alpha_sigma::<Flex>(&ts, &device);
        let (a, sg) = (crate::tensor_ops::to_vec(a), crate::tensor_ops::to_vec(sg));
        for (i, &t) in ts.iter().enumerate() {
            assert_eq!(gathered[i], s.alphas_cumprod()[t as usize]);
            assert!(
                (a[i] as f64 - s.alpha(t)).abs() < 1e-7 && (sg[i] as f64 - s.sigma(t)).abs() < 1e-7
            );
        }
    }

    #[test]
    fn cosine_schedule_clips_beta() {
        let s = NoiseScheduleConfig::new()
            .with_beta_schedule(BetaSchedule::SquaredcosCapV2)
            .init()
            .unwrap();
        assert!(s.betas().iter().all(|&b| b <= 0.999 && b > 0.0));
        assert!((s.betas()[999] - 0.999).abs() < 1e-6);
    }

    #[test]
    fn bad_configs_are_errors() {
        assert!(NoiseScheduleConfig::new()
            .with_num_train_timesteps(1)
            .init()
            .is_err());
        assert!(NoiseScheduleConfig::new()
            .with_beta_start(0.5)
            .with_beta_end(0.1)
            .init()
            .is_err());
        assert!("cosine".parse::<BetaSchedule>().is_err());
        assert_eq!(
            "scaled_linear".parse::<BetaSchedule>(),
            Ok(BetaSchedule::ScaledLinear)
        );
    }
}
