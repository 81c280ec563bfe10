//! Progressive distillation (Salimans & Ho 2022), the second stage of guided distillation (Meng et al. 2023,
//! the paper's "GD-II" baseline): a student of K DDIM steps learns to land, in one step, where its teacher
//! lands in two. One round halves the step count; the teacher of a round is the student of the round before.

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{invalid, CoreError};
use crate::grid::TimestepSpacing;
use crate::prediction::Prediction;
use crate::tensor_ops::per_sample;

/// The student of one round: its step count and the DDIM grid it is sampled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressiveConfig {
    /// K, the student's DDIM steps (its teacher takes 2K).
    pub student_steps: usize,
    /// The DDIM grid of the student: `trailing` (default; it starts at the last timestep, so the first
    /// step is trained from pure noise as it is sampled) or `leading` (SD 1.x's DDIM, offset 1).
    pub spacing: TimestepSpacing,
    /// Rounds run one after another, each starting from the one before: the first student takes
    /// student_steps·2^(rounds−1) steps, the last `student_steps`. Absent: 1.
    #[serde(default = "one_round")]
    pub rounds: usize,
}

fn one_round() -> usize {
    1
}

impl Default for ProgressiveConfig {
    fn default() -> Self {
        Self {
            student_steps: 4,
            spacing: TimestepSpacing::Trailing,
            rounds: 1,
        }
    }
}

/// One student step and the teacher's two steps it replaces: t → mid → end. `end` 0 stands for DDIM's final
/// ᾱ (ᾱ_0, SD 1.x's `set_alpha_to_one = false`); `mid` is None where the interval holds no timestep between
/// (the teacher then takes the one step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressiveStep {
    /// The student's timestep.
    pub t: i64,
    /// The timestep the teacher's first step lands on.
    pub mid: Option<i64>,
    /// The timestep both land on.
    pub end: i64,
}

impl ProgressiveConfig {
    /// The student steps of each round, first round first (each half the one before).
    pub fn round_steps(&self) -> Vec<usize> {
        (0..self.rounds)
            .rev()
            .map(|r| {
                self.student_steps
                    .checked_shl(r as u32)
                    .unwrap_or(usize::MAX)
            })
            .collect()
    }

    /// Checks the step counts, rounds and spacing against a training grid of `num_train` timesteps.
    pub fn check(&self, num_train: usize) -> Result<(), CoreError> {
        let k = self.student_steps;
        if k == 0 || 2 * k > num_train {
            return Err(invalid(
                "progressive student_steps",
                format!("{k} (must be between 1 and {})", num_train / 2),
            ));
        }
        let first = self.round_steps().first().copied().unwrap_or(0);
        if self.rounds == 0 || self.rounds > 16 || first > num_train / 2 {
            return Err(invalid(
                "progressive rounds",
                format!(
                    "{} (at least 1; the first round's student of student_steps·2^(rounds−1) = {first} \
                     steps must take at most {})",
                    self.rounds,
                    num_train / 2
                ),
            ));
        }
        if self.spacing == TimestepSpacing::Linspace {
            return Err(invalid(
                "progressive spacing",
                "linspace (the halved grids do not nest: use trailing or leading)",
            ));
        }
        Ok(())
    }

    /// The student's step of each sample, from one uniform draw in [0, 1) per sample. The grid is the real
    /// one of DDIM's spacing (p_i = N − 1 − i·N/K trailing, 1 + i·N/K leading), rounded: for K dividing N
    /// it is exactly the sampler's grid, and the K-step grid is every other point of the 2K-step grid.
    pub fn steps(
        &self,
        num_train: usize,
        uniform: &[f32],
    ) -> Result<Vec<ProgressiveStep>, CoreError> {
        self.check(num_train)?;
        let (n, k) = (num_train as f64, self.student_steps as f64);
        let ratio = n / k;
        let round = |v: f64| v.round_ties_even() as i64;
        Ok(uniform
            .iter()
            .map(|&u| {
                let i = ((u as f64 * k) as usize).min(self.student_steps - 1) as f64;
                let p = match self.spacing {
                    TimestepSpacing::Leading => 1.0 + (k - 1.0 - i) * ratio,
                    _ => n - 1.0 - i * ratio,
                };
                let end = round(p - ratio).max(0);
                let mid = round(p - ratio / 2.0);
                ProgressiveStep {
                    t: round(p),
                    mid: (mid > end).then_some(mid),
                    end,
                }
            })
            .collect())
    }
}

/// The x̃ the student must predict at (z_t, t) so that one DDIM step lands on the teacher's z_end:
/// z_end = α_e·x̃ + σ_e·(z_t − α_t·x̃)/σ_t, solved for x̃. z: [batch, c, h, w]; α, σ: \[batch\].
pub fn progressive_target<B: Backend>(
    z_t: Tensor<B, 4>,
    z_end: Tensor<B, 4>,
    (alpha_t, sigma_t): (Tensor<B, 1>, Tensor<B, 1>),
    (alpha_e, sigma_e): (Tensor<B, 1>, Tensor<B, 1>),
) -> Tensor<B, 4> {
    let ratio = sigma_e / sigma_t;
    let denom = alpha_e - alpha_t * ratio.clone();
    (z_end - z_t * per_sample::<B, 4>(ratio)) / per_sample::<B, 4>(denom)
}

/// The student's loss: ‖x̂_t − x̃‖² weighted per sample by max(SNR_t, 1) (Salimans & Ho's "truncated SNR"),
/// averaged. x̃ is detached here.
pub fn progressive_loss<B: Backend>(
    student: &Prediction<B, 4>,
    target_x: Tensor<B, 4>,
    alpha_t: Tensor<B, 1>,
    sigma_t: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let snr = (alpha_t.clone() * alpha_t) / (sigma_t.clone() * sigma_t);
    let weight = per_sample::<B, 4>(snr.clamp_min(1.0));
    ((student.x0.clone() - target_x.detach()).powi_scalar(2) * weight).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend as B;
    use crate::grid::ddim_timesteps;
    use crate::noise::SeededNoise;
    use crate::schedule::NoiseScheduleConfig;
    use crate::tensor_ops::{max_abs_diff, to_vec};
    use burn::tensor::TensorData;

    fn grid(c: &ProgressiveConfig) -> Vec<ProgressiveStep> {
        let k = c.student_steps;
        let u: Vec<f32> = (0..k).map(|i| (i as f32 + 0.5) / k as f32).collect();
        c.steps(1000, &u).unwrap()
    }

    #[test]
    fn the_student_grid_is_the_samplers_and_halves_nest() {
        for spacing in [TimestepSpacing::Trailing, TimestepSpacing::Leading] {
            for k in [4, 8, 10] {
                let c = ProgressiveConfig {
                    student_steps: k,
                    spacing,
                    rounds: 1,
                };
                let ts: Vec<i64> = grid(&c).iter().map(|s| s.t).collect();
                let offset = if spacing == TimestepSpacing::Leading {
                    1
                } else {
                    0
                };
                assert_eq!(ts, ddim_timesteps(1000, k, spacing, offset).unwrap());
            }
            // The 8-step grid's points are the 4-step grid's steps and their midpoints.
            let four = grid(&ProgressiveConfig {
                student_steps: 4,
                spacing,
                rounds: 1,
            });
            let eight: Vec<i64> = grid(&ProgressiveConfig {
                student_steps: 8,
                spacing,
                rounds: 1,
            })
            .iter()
            .map(|s| s.t)
            .collect();
            for s in &four {
                assert!(eight.contains(&s.t), "{spacing:?} {s:?}");
                if let Some(m) = s.mid {
                    assert!(eight.contains(&m), "{spacing:?} {s:?}");
                }
            }
        }
        let trailing = grid(&ProgressiveConfig::default());
        assert_eq!(
            trailing[3],
            ProgressiveStep {
                t: 249,
                mid: Some(124),
                end: 0
            }
        );
        let leading = grid(&ProgressiveConfig {
            spacing: TimestepSpacing::Leading,
            ..Default::default()
        });
        assert_eq!(
            leading[0],
            ProgressiveStep {
                t: 751,
                mid: Some(626),
                end: 501
            }
        );
        assert_eq!(leading[3].mid, None, "t = 1 has nothing between it and ᾱ_0");
        assert!(ProgressiveConfig {
            student_steps: 501,
            ..Default::default()
        }
        .check(1000)
        .is_err());
        let four_rounds = ProgressiveConfig {
            rounds: 4,
            ..Default::default()
        };
        assert_eq!(four_rounds.round_steps(), vec![32, 16, 8, 4]);
        assert!(four_rounds.check(1000).is_ok());
        let too_many = ProgressiveConfig {
            rounds: 8,
            ..Default::default()
        };
        assert!(
            too_many.check(1000).is_err(),
            "a first student of 512 steps"
        );
    }

    /// The target is the x̃ whose one DDIM step lands on z_end: re-taking that step gives z_end back, and a
    /// teacher whose two steps used the true x and ε gives x̃ = x.
    #[test]
    fn one_step_with_the_target_lands_where_the_teacher_does() {
        let schedule = NoiseScheduleConfig::sd15().init().unwrap();
        let dev = Default::default();
        let mut r = SeededNoise::new(2);
        let shape = [2, 3, 4, 4];
        let n: usize = shape.iter().product();
        let randn = |r: &mut SeededNoise| {
            Tensor::<B, 4>::from_data(TensorData::new(r.normals(n), shape), &dev)
        };
        let (x, eps, z_end) = (randn(&mut r), randn(&mut r), randn(&mut r));
        let at = |t: i64| schedule.alpha_sigma::<B>(&[t; 2], &dev);
        let (t, e) = (at(749), at(499));
        let z_t = x.clone() * per_sample::<B, 4>(t.0.clone())
            + eps.clone() * per_sample::<B, 4>(t.1.clone());
        let target = progressive_target(z_t.clone(), z_end.clone(), t.clone(), e.clone());
        let eps_hat = (z_t.clone() - target.clone() * per_sample::<B, 4>(t.0.clone()))
            / per_sample::<B, 4>(t.1.clone());
        let landed = Prediction {
            x0: target,
            eps: eps_hat,
        }
        .renoise(e.0.clone(), e.1.clone());
        assert!(max_abs_diff(landed, z_end) < 1e-4);
        // An exact teacher: z_end = α_e·x + σ_e·ε.
        let exact_end =
            x.clone() * per_sample::<B, 4>(e.0.clone()) + eps * per_sample::<B, 4>(e.1.clone());
        let target = progressive_target(z_t, exact_end, t.clone(), e);
        assert!(max_abs_diff(target, x.clone()) < 1e-4);
        // The loss weighs by max(SNR, 1): at t = 749 SNR < 1, so the weight is 1.
        let off = Prediction {
            x0: x.clone().add_scalar(0.5),
            eps: x.clone(),
        };
        let loss = to_vec(progressive_loss(&off, x.clone(), t.0, t.1))[0];
        assert!((loss - 0.25).abs() < 1e-6, "{loss}");
        let (a, s) = at(20);
        let snr = schedule.alpha(20).powi(2) / schedule.sigma(20).powi(2);
        let loss = to_vec(progressive_loss(&off, x, a, s))[0];
        assert!(
            (loss as f64 - 0.25 * snr).abs() < 1e-3 * snr,
            "{loss} {snr}"
        );
    }
}
