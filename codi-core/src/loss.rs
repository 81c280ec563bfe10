//! The CoDi loss (method.md §3), written once: conditional consistency between the online model at (z_t, t)
//! and the EMA target at (ẑ_s, s), where ẑ_s is one PF-ODE (DDIM) step from z_t, plus conditional guidance
//! towards the real target x.

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::boundary::BoundaryScalings;
use crate::error::{invalid, CoreError};
use crate::prediction::{Prediction, PredictionType};
use crate::progressive::ProgressiveConfig;
use crate::tensor_ops::per_sample;

/// Where the consistency term compares the two predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConsistencySpace {
    /// d(ε̂_t, sg(ε̂_s)) — the paper's default.
    #[default]
    Noise,
    /// d(f_t, sg(f_s)) with f = c_skip·z + c_out·x̂ (consistency-model form).
    Sample,
}

/// What the guidance term compares x̂_t with x through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GuidanceDistance {
    /// ℓ2 between latents (default; best in the paper).
    #[default]
    Latent,
    /// ℓ2 between VAE decodings.
    Decoded,
    /// ℓ2 between latents after a decode → re-encode round trip.
    Reencoded,
}

/// Which model takes the PF-ODE step z_t → ẑ_s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OdeStepModel {
    /// The online model's own predictions, without gradient (default: it distils its own PF-ODE).
    #[default]
    Online,
    /// The EMA target.
    Ema,
    /// The frozen pre-trained teacher (the paper's "without distilling the PF-ODE" ablation).
    Teacher,
    /// A frozen copy of the adapted model the run started from: with a conditional teacher as the start
    /// (`init_from`), the two-stage consistency distillation (CM-II) the paper compares with.
    Initial,
}

/// Which noise the PF-ODE step uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StepNoise {
    /// ε̂_t predicted by the step model (default; Remark 1 holds).
    #[default]
    Predicted,
    /// The ε that made z_t (the paper's equation as written).
    True,
}

/// One t for the whole batch (default) or one per sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSharing {
    /// One t drawn for the whole batch.
    #[default]
    Shared,
    /// An independent t drawn for every sample.
    PerSample,
}

/// What the adapted model is trained for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// CoDi: conditional consistency along the model's own PF-ODE plus conditional guidance.
    #[default]
    Consistency,
    /// The plain denoising loss at t drawn over every training timestep: a conditional diffusion model (the
    /// paper's "+ControlNet" teacher), sampled with DDIM or DPM-Solver over many steps, not distilled.
    Denoising,
    /// One round of progressive distillation (the paper's guided-distillation baseline, GD-II): the student
    /// matches in one DDIM step two DDIM steps of the model the run starts from ([`OdeStepModel::Initial`]),
    /// on the grid of [`CodiLossConfig::progressive`].
    Progressive,
}

/// Every option of the loss, with the paper's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CodiLossConfig {
    /// CoDi's loss, or the plain denoising loss of a conditional teacher. Absent from older files: CoDi.
    #[serde(default)]
    pub objective: Objective,
    /// Where the consistency term compares the online and target predictions.
    pub consistency: ConsistencySpace,
    /// Which distance the guidance term measures x̂_t against x with.
    pub guidance: GuidanceDistance,
    /// Weight λ of the guidance term.
    pub lambda: f64,
    /// Weight of the consistency term (the paper's 1; 0 leaves the guidance term alone: the "without noise
    /// consistency" ablation). Absent from files written before it existed: 1.
    #[serde(default = "one")]
    pub consistency_weight: f64,
    /// N intervals on the training grid (Δt = num_train_timesteps / N).
    pub intervals: usize,
    /// Whether t is shared by the batch or drawn per sample.
    pub timesteps: TimestepSharing,
    /// Which model takes the PF-ODE step z_t → ẑ_s.
    pub step_model: OdeStepModel,
    /// Which ε the PF-ODE step uses: the predicted ε̂_t or the true noise.
    pub step_noise: StepNoise,
    /// For the x-space consistency term.
    pub boundary: BoundaryScalings,
    /// Classifier-free guidance folded into the PF-ODE step (the paper's released code): the step model's
    /// output becomes u + w·(c − u) from the captioned and the empty prompt, with w drawn per sample
    /// uniformly in [min, max) (equal bounds: a fixed w). \[1, 1\], also for files written before it
    /// existed: no guidance, one forward less.
    #[serde(default = "no_cfg")]
    pub cfg_scale: [f64; 2],
    /// The student's steps and grid of a [`Objective::Progressive`] round (unused otherwise).
    #[serde(default)]
    pub progressive: ProgressiveConfig,
}

fn one() -> f64 {
    1.0
}

fn no_cfg() -> [f64; 2] {
    [1.0, 1.0]
}

impl CodiLossConfig {
    /// Whether the PF-ODE step (the teacher's steps in progressive distillation: Meng et al.'s first stage
    /// folded in) is guided; it then needs the empty prompt's prediction too.
    pub fn folds_cfg(&self) -> bool {
        self.objective != Objective::Denoising && self.cfg_scale != no_cfg()
    }

    /// The guidance weight of each sample from its uniform draw in [0, 1).
    pub fn cfg_weights(&self, uniform: &[f32]) -> Vec<f32> {
        let [lo, hi] = self.cfg_scale;
        uniform
            .iter()
            .map(|&u| (lo + (hi - lo) * u as f64) as f32)
            .collect()
    }
}

impl Default for CodiLossConfig {
    fn default() -> Self {
        Self {
            objective: Objective::Consistency,
            consistency: ConsistencySpace::Noise,
            guidance: GuidanceDistance::Latent,
            lambda: 1.0,
            consistency_weight: 1.0,
            intervals: 50,
            timesteps: TimestepSharing::Shared,
            step_model: OdeStepModel::Online,
            step_noise: StepNoise::Predicted,
            boundary: BoundaryScalings::default(),
            cfg_scale: no_cfg(),
            progressive: ProgressiveConfig::default(),
        }
    }
}

/// The (t, s = t − Δt) pairs of a batch on the N-interval grid, from uniform draws in [0, 1): one draw for a
/// shared t, one per sample otherwise. t ∈ {Δt, 2Δt, …, (N−1)·Δt}, the grid of the CoDi sampler.
pub fn timestep_pairs(
    config: &CodiLossConfig,
    num_train_timesteps: usize,
    batch: usize,
    uniform: &[f32],
) -> Result<(Vec<i64>, Vec<i64>), CoreError> {
    let n = config.intervals;
    if n < 2 || n > num_train_timesteps {
        return Err(invalid(
            "CoDi intervals",
            format!("{n} (must be in 2..={num_train_timesteps})"),
        ));
    }
    let dt = (num_train_timesteps / n) as i64;
    let draws = match config.timesteps {
        TimestepSharing::Shared => 1,
        TimestepSharing::PerSample => batch,
    };
    if uniform.len() < draws {
        return Err(invalid(
            "uniform draws",
            format!("{} for {draws} timesteps", uniform.len()),
        ));
    }
    let pick = |u: f32| {
        let k = 1 + ((u as f64 * (n - 1) as f64) as i64).min(n as i64 - 2);
        k * dt
    };
    let t: Vec<i64> = (0..batch)
        .map(|i| pick(uniform[if draws == 1 { 0 } else { i }]))
        .collect();
    let s = t.iter().map(|&t| (t - dt).max(0)).collect();
    Ok((t, s))
}

/// The timesteps of the plain denoising loss: one per sample, uniform over 0..T−1, from draws in [0, 1).
pub fn denoising_timesteps(num_train_timesteps: usize, uniform: &[f32]) -> Vec<i64> {
    let t = num_train_timesteps as i64;
    uniform
        .iter()
        .map(|&u| ((u as f64 * t as f64) as i64).clamp(0, t - 1))
        .collect()
}

/// The plain denoising loss: the mean squared error between the network's `output` at z = α·x + σ·ε and what
/// a model of `kind` predicts there — ε, x, or v = α·ε − σ·x. alpha, sigma: \[batch\]
pub fn denoising_loss<B: Backend>(
    kind: PredictionType,
    output: Tensor<B, 4>,
    x: Tensor<B, 4>,
    noise: Tensor<B, 4>,
    alpha: Tensor<B, 1>,
    sigma: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let target = match kind {
        PredictionType::Epsilon => noise,
        PredictionType::Sample => x,
        PredictionType::VPrediction => {
            noise * per_sample::<B, 4>(alpha) - x * per_sample::<B, 4>(sigma)
        }
    };
    (output - target).powi_scalar(2).mean()
}

/// One PF-ODE (DDIM, η = 0) step of a prediction to noise level (α_s, σ_s), without gradient:
/// ẑ_s = α_s·sg(x̂) + σ_s·sg(ε), with ε the predicted ε̂ or, for [`StepNoise::True`], the true noise.
pub fn pf_ode_step<B: Backend>(
    pred: &Prediction<B, 4>,
    true_noise: Option<Tensor<B, 4>>,
    alpha_s: Tensor<B, 1>,
    sigma_s: Tensor<B, 1>,
) -> Tensor<B, 4> {
    let p = Prediction {
        x0: pred.x0.clone(),
        eps: true_noise.unwrap_or_else(|| pred.eps.clone()),
    }
    .detach();
    p.renoise(alpha_s, sigma_s)
}

/// The loss's two terms and their weighted sum (scalars, \[1\]).
#[derive(Debug, Clone)]
pub struct CodiLossTerms<B: Backend> {
    /// The consistency term (mean squared error between the online and the detached target prediction).
    pub consistency: Tensor<B, 1>,
    /// The guidance term (unweighted mean squared error between x̂_t and x in the guidance space).
    pub guidance: Tensor<B, 1>,
    /// w·consistency + λ·guidance, the value to back-propagate.
    pub total: Tensor<B, 1>,
}

/// The timesteps and points of one CoDi step, per sample (\[batch\]).
pub struct CodiPoints<B: Backend> {
    /// The online model's timesteps t, one per sample.
    pub t: Vec<i64>,
    /// The target's timesteps s = t − Δt, one per sample.
    pub s: Vec<i64>,
    /// The noised latent at t, α_t·x + σ_t·ε. z_t: [batch, channels, height, width]
    pub z_t: Tensor<B, 4>,
    /// The PF-ODE estimate ẑ_s, one step from z_t (see [`pf_ode_step`]). z_s: [batch, channels, height,
    /// width]
    pub z_s: Tensor<B, 4>,
}

/// The CoDi loss. `online`: the adapted model's prediction at (z_t, t), with gradient. `target`: the EMA
/// model's at (ẑ_s, s) (detached here). `x`: the clean latent. `guidance_map` carries x and x̂_t into the
/// space of the guidance distance (the identity for [`GuidanceDistance::Latent`]; a VAE decode or
/// decode → encode otherwise).
pub fn codi_loss<B: Backend>(
    config: &CodiLossConfig,
    online: &Prediction<B, 4>,
    target: &Prediction<B, 4>,
    x: Tensor<B, 4>,
    points: &CodiPoints<B>,
    guidance_map: impl Fn(Tensor<B, 4>) -> Tensor<B, 4>,
) -> CodiLossTerms<B> {
    let target = target.clone().detach();
    let consistency = match config.consistency {
        ConsistencySpace::Noise => (online.eps.clone() - target.eps).powi_scalar(2).mean(),
        ConsistencySpace::Sample => {
            let device = x.device();
            let scal = |ts: &[i64]| {
                let (skip, out): (Vec<f32>, Vec<f32>) = ts
                    .iter()
                    .map(|&t| {
                        let (a, b) = config.boundary.at(t as f64);
                        (a as f32, b as f32)
                    })
                    .unzip();
                let n = ts.len();
                (
                    per_sample::<B, 4>(Tensor::from_data(
                        burn::tensor::TensorData::new(skip, [n]),
                        &device,
                    )),
                    per_sample::<B, 4>(Tensor::from_data(
                        burn::tensor::TensorData::new(out, [n]),
                        &device,
                    )),
                )
            };
            let (skip_t, out_t) = scal(&points.t);
            let (skip_s, out_s) = scal(&points.s);
            let f_t = points.z_t.clone() * skip_t + online.x0.clone() * out_t;
            let f_s = (points.z_s.clone() * skip_s + target.x0 * out_s).detach();
            (f_t - f_s).powi_scalar(2).mean()
        }
    };
    let guidance = (guidance_map(online.x0.clone()) - guidance_map(x).detach())
        .powi_scalar(2)
        .mean();
    let total = consistency.clone().mul_scalar(config.consistency_weight)
        + guidance.clone().mul_scalar(config.lambda);
    CodiLossTerms {
        consistency,
        guidance,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend as B;
    use crate::noise::SeededNoise;
    use crate::prediction::PredictionType;
    use crate::schedule::NoiseScheduleConfig;
    use crate::tensor_ops::{max_abs_diff, to_vec};
    use burn::tensor::TensorData;

    fn randn(r: &mut SeededNoise, shape: [usize; 4]) -> Tensor<B, 4> {
        let n = shape.iter().product();
        Tensor::from_data(TensorData::new(r.normals(n), shape), &Default::default())
    }

    #[test]
    fn timestep_pairs_lie_on_the_grid_one_interval_apart() {
        let c = CodiLossConfig::default();
        let (t, s) = timestep_pairs(&c, 1000, 3, &[0.0, 0.5, 0.999]).unwrap();
        assert_eq!(t, vec![20, 20, 20], "shared t uses the first draw");
        assert_eq!(s, vec![0, 0, 0]);
        let per = CodiLossConfig {
            timesteps: TimestepSharing::PerSample,
            ..c
        };
        let (t, s) = timestep_pairs(&per, 1000, 3, &[0.0, 0.5, 0.99999]).unwrap();
        assert_eq!(t, vec![20, 500, 980]);
        assert_eq!(s, vec![0, 480, 960]);
        assert!(timestep_pairs(&CodiLossConfig { intervals: 1, ..c }, 1000, 1, &[0.1]).is_err());
        assert!(timestep_pairs(&per, 1000, 3, &[0.1]).is_err());
    }

    /// Remark 1: with the DDIM step taken with ε̂_t, a model whose ε̂ is self-consistent (ε̂_s = ε̂_t) has a
    /// self-consistent x̂ (x̂_s = x̂_t) — and in general ‖x̂_s − x̂_t‖ = (σ_s/α_s)·‖ε̂_s − ε̂_t‖, so the
    /// consistency and guidance terms never pull against each other. Checked for every prediction type.
    #[test]
    fn remark_1_noise_consistency_implies_sample_consistency() {
        let schedule = NoiseScheduleConfig::sd15().init().unwrap();
        let mut r = SeededNoise::new(11);
        let shape = [3, 4, 5, 5];
        for kind in [
            PredictionType::Epsilon,
            PredictionType::VPrediction,
            PredictionType::Sample,
        ] {
            for (t, s) in [(980i64, 960i64), (500, 480), (40, 20)] {
                let dev = Default::default();
                let (a_t, s_t) = schedule.alpha_sigma::<B>(&[t; 3], &dev);
                let (a_s, s_s) = schedule.alpha_sigma::<B>(&[s; 3], &dev);
                let z_t = randn(&mut r, shape);
                let online = Prediction::from_output(
                    kind,
                    randn(&mut r, shape),
                    z_t.clone(),
                    a_t.clone(),
                    s_t.clone(),
                );
                let z_s = pf_ode_step(&online, None, a_s.clone(), s_s.clone());
                // A target whose ε̂ equals ε̂_t, expressed in the model's own output type.
                let consistent = Prediction {
                    x0: (z_s.clone() - online.eps.clone() * per_sample::<B, 4>(s_s.clone()))
                        / per_sample::<B, 4>(a_s.clone()),
                    eps: online.eps.clone(),
                };
                let out = consistent.to_output(kind, a_s.clone(), s_s.clone());
                let target =
                    Prediction::from_output(kind, out, z_s.clone(), a_s.clone(), s_s.clone());
                assert!(
                    max_abs_diff(target.eps.clone(), online.eps.clone()) < 2e-4,
                    "{kind:?} t={t}"
                );
                assert!(
                    max_abs_diff(target.x0.clone(), online.x0.clone()) < 2e-3,
                    "{kind:?} t={t}"
                );
                // Perturb ε̂_s by δ: x̂_s moves by −(σ_s/α_s)·δ exactly.
                let delta = randn(&mut r, shape).mul_scalar(0.1);
                let eps_s = online.eps.clone() + delta.clone();
                let x_s = Prediction::from_output(
                    PredictionType::Epsilon,
                    eps_s,
                    z_s.clone(),
                    a_s.clone(),
                    s_s.clone(),
                )
                .x0;
                let ratio = schedule.sigma(s) / schedule.alpha(s);
                let moved = to_vec(x_s - online.x0.clone());
                let want = to_vec(delta.mul_scalar(-ratio));
                let err = moved
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(err < 1e-3 * (1.0 + ratio as f32), "{kind:?} t={t}: {err}");
            }
        }
    }

    #[test]
    fn loss_terms_vanish_for_a_perfect_consistent_model_and_weight_lambda() {
        let schedule = NoiseScheduleConfig::sd15().init().unwrap();
        let dev = Default::default();
        let mut r = SeededNoise::new(5);
        let shape = [2, 4, 3, 3];
        let x = randn(&mut r, shape);
        let eps = randn(&mut r, shape);
        let (t, s) = (vec![500i64; 2], vec![480i64; 2]);
        let (a_t, s_t) = schedule.alpha_sigma::<B>(&t, &dev);
        let (a_s, s_s) = schedule.alpha_sigma::<B>(&s, &dev);
        let z_t = x.clone() * per_sample::<B, 4>(a_t.clone())
            + eps.clone() * per_sample::<B, 4>(s_t.clone());
        // The ideal model for a single data point predicts x exactly and the true ε.
        let online = Prediction {
            x0: x.clone(),
            eps: eps.clone(),
        };
        let z_s = pf_ode_step(&online, None, a_s.clone(), s_s.clone());
        let target = Prediction {
            x0: x.clone(),
            eps: eps.clone(),
        };
        let points = CodiPoints { t, s, z_t, z_s };
        for consistency in [ConsistencySpace::Noise, ConsistencySpace::Sample] {
            let c = CodiLossConfig {
                consistency,
                ..Default::default()
            };
            let terms = codi_loss(&c, &online, &target, x.clone(), &points, |v| v);
            assert!(to_vec(terms.total)[0].abs() < 1e-10, "{consistency:?}");
        }
        // A guidance error of 1 everywhere counts λ times.
        let off = Prediction {
            x0: x.clone().add_scalar(1.0),
            eps: eps.clone(),
        };
        let c = CodiLossConfig {
            lambda: 0.25,
            ..Default::default()
        };
        let terms = codi_loss(&c, &off, &target, x.clone(), &points, |v| v);
        assert!((to_vec(terms.guidance)[0] - 1.0).abs() < 1e-6);
        assert!((to_vec(terms.total)[0] - 0.25).abs() < 1e-6);
        let no_consistency = CodiLossConfig {
            consistency_weight: 0.0,
            ..c
        };
        let terms = codi_loss(&no_consistency, &off, &target, x.clone(), &points, |v| v);
        assert!((to_vec(terms.total)[0] - 0.25).abs() < 1e-6);
        // The true-noise step equals the predicted-noise step when the model predicts the true noise.
        let a = pf_ode_step(&online, Some(eps.clone()), a_s.clone(), s_s.clone());
        assert!(max_abs_diff(a, points.z_s.clone()) < 1e-6);
    }

    #[test]
    fn a_consistency_weight_of_zero_removes_the_terms_gradient() {
        type AB = burn::backend::Autodiff<B>;
        let dev = Default::default();
        let mut r = SeededNoise::new(9);
        let shape = [2, 4, 3, 3];
        let n: usize = shape.iter().product();
        let leaf = |r: &mut SeededNoise| {
            Tensor::<AB, 4>::from_data(TensorData::new(r.normals(n), shape), &dev).require_grad()
        };
        // The online ε̂ reaches only the consistency term, x̂ only the guidance term.
        let (eps, x0) = (leaf(&mut r), leaf(&mut r));
        let target = Prediction {
            x0: leaf(&mut r),
            eps: leaf(&mut r),
        };
        let x = leaf(&mut r).detach();
        let points = CodiPoints {
            t: vec![500; 2],
            s: vec![480; 2],
            z_t: x.clone(),
            z_s: x.clone(),
        };
        let grad_of_eps = |weight: f64| {
            let c = CodiLossConfig {
                consistency_weight: weight,
                ..Default::default()
            };
            let online = Prediction {
                x0: x0.clone(),
                eps: eps.clone(),
            };
            let grads = codi_loss(&c, &online, &target, x.clone(), &points, |v| v)
                .total
                .backward();
            let g = eps.grad(&grads).map(|g| to_vec(g.abs().max()));
            (
                g.map_or(0.0, |v| v[0]),
                to_vec(x0.grad(&grads).unwrap().abs().max())[0],
            )
        };
        let (with, guided) = grad_of_eps(1.0);
        assert!(with > 1e-3 && guided > 1e-3, "{with} {guided}");
        let (without, still_guided) = grad_of_eps(0.0);
        assert_eq!(without, 0.0, "no gradient through the consistency term");
        assert_eq!(
            still_guided, guided,
            "the guidance term's gradient is untouched"
        );
    }

    #[test]
    fn the_denoising_loss_regresses_what_each_parameterisation_predicts() {
        let dev = Default::default();
        let mut r = SeededNoise::new(3);
        let shape = [2, 1, 2, 2];
        let (x, eps, out) = (
            randn(&mut r, shape),
            randn(&mut r, shape),
            randn(&mut r, shape),
        );
        let (a, s) = ([0.6f32, 0.8], [0.8f32, 0.6]);
        let alpha = Tensor::<B, 1>::from_floats(a, &dev);
        let sigma = Tensor::<B, 1>::from_floats(s, &dev);
        let (xv, ev, ov) = (to_vec(x.clone()), to_vec(eps.clone()), to_vec(out.clone()));
        let by_hand = |target: &dyn Fn(usize) -> f32| {
            (0..8).map(|i| (ov[i] - target(i)).powi(2)).sum::<f32>() / 8.0
        };
        let loss = |kind| {
            let l = denoising_loss(
                kind,
                out.clone(),
                x.clone(),
                eps.clone(),
                alpha.clone(),
                sigma.clone(),
            );
            to_vec(l)[0]
        };
        let cases: [(PredictionType, f32); 3] = [
            (PredictionType::Epsilon, by_hand(&|i| ev[i])),
            (PredictionType::Sample, by_hand(&|i| xv[i])),
            (
                PredictionType::VPrediction,
                by_hand(&|i| a[i / 4] * ev[i] - s[i / 4] * xv[i]),
            ),
        ];
        for (kind, want) in cases {
            assert!(
                (loss(kind) - want).abs() < 1e-6,
                "{kind:?}: {} vs {want}",
                loss(kind)
            );
        }
        assert_eq!(
            denoising_timesteps(1000, &[0.0, 0.4999, 0.99999]),
            vec![0, 499, 999]
        );
    }
}
