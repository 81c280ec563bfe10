//! Samplers written once over a [`Denoiser`]: DDIM (η, explicit noise), DPM-Solver++(2M), the CoDi few-step
//! sampler and the consistency-model (LCM) sampler, with optional classifier-free guidance ([`Guided`]).

mod codi;
mod ddim;
mod dpm;
mod guidance;

pub use codi::{codi_step, lcm_step};
pub use ddim::{ddim_step, DdimStep};
pub use guidance::{guide_per_sample, Guided};

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::boundary::BoundaryScalings;
use crate::error::{invalid, CoreError};
pub use crate::grid::TimestepSpacing;
use crate::grid::{
    codi_timesteps, ddim_prev_timestep, ddim_timesteps, dpm_timesteps, lcm_timesteps,
};
use crate::noise::NoiseSource;
use crate::prediction::PredictionType;
use crate::schedule::NoiseSchedule;

/// Anything that maps (z, t) — and whatever condition it holds — to a model output.
pub trait Denoiser<B: Backend> {
    /// How to read [`Denoiser::predict`]'s output.
    fn prediction_type(&self) -> PredictionType;
    /// z: [batch, channels, height, width], t: \[batch\] (training-grid timesteps as floats) → [batch, channels, height, width].
    fn predict(&self, z: Tensor<B, 4>, t: Tensor<B, 1>) -> Tensor<B, 4>;
}

/// A closure as a denoiser (tests, analytic models).
pub struct FnDenoiser<F> {
    /// How the closure's output is read.
    pub prediction_type: PredictionType,
    /// The model: (z, t) → output, with the shapes of [`Denoiser::predict`].
    pub f: F,
}

impl<B: Backend, F: Fn(Tensor<B, 4>, Tensor<B, 1>) -> Tensor<B, 4>> Denoiser<B> for FnDenoiser<F> {
    fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }
    fn predict(&self, z: Tensor<B, 4>, t: Tensor<B, 1>) -> Tensor<B, 4> {
        (self.f)(z, t)
    }
}

/// Which sampler, with its own settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SamplerKind {
    /// DDIM; η = 0 is the PF-ODE (deterministic), η = 1 DDPM-like.
    Ddim {
        /// η in [0, 1]: the scale of the fresh noise added at each step.
        eta: f64,
        /// How the timesteps are spread over the training grid (diffusers' `timestep_spacing`).
        spacing: TimestepSpacing,
        /// Offset added to every timestep with leading spacing (diffusers' `steps_offset`).
        steps_offset: usize,
        /// ᾱ after the last step: 1 (true) or ᾱ_0 (false, SD 1.x).
        set_alpha_to_one: bool,
    },
    /// DPM-Solver++ multistep, second order, first order at the first and last step (final σ = 0).
    DpmSolverPP2M,
    /// The CoDi few-step sampler (deterministic, method.md §5) on the N-interval grid.
    Codi {
        /// N, the number of intervals of the training grid (Δt = num_train_timesteps / N).
        intervals: usize,
        /// The boundary scalings applied to x̂ at each step.
        boundary: BoundaryScalings,
    },
    /// The consistency-model sampler: boundary-scaled x̂ re-noised with fresh noise (diffusers' LCMScheduler).
    Lcm {
        /// The number of points of the skipping-step grid the timesteps are taken from (diffusers'
        /// `original_inference_steps`).
        original_steps: usize,
        /// The boundary scalings applied to x̂ at each step.
        boundary: BoundaryScalings,
    },
}

impl SamplerKind {
    /// SD 1.x's DDIM: leading spacing, offset 1, η = 0, final ᾱ = ᾱ_0.
    pub fn ddim() -> Self {
        Self::Ddim {
            eta: 0.0,
            spacing: TimestepSpacing::Leading,
            steps_offset: 1,
            set_alpha_to_one: false,
        }
    }

    /// DDIM (η = 0, final ᾱ = ᾱ_0) on a grid of `spacing`: leading is SD 1.x's (offset 1), trailing starts
    /// at the last timestep (offset 0).
    pub fn ddim_spaced(spacing: TimestepSpacing) -> Self {
        Self::Ddim {
            eta: 0.0,
            spacing,
            steps_offset: usize::from(spacing == TimestepSpacing::Leading),
            set_alpha_to_one: false,
        }
    }

    /// CoDi with N = 50 and the LCM boundary form.
    pub fn codi() -> Self {
        Self::Codi {
            intervals: 50,
            boundary: BoundaryScalings::default(),
        }
    }

    /// LCM with 50 original steps.
    pub fn lcm() -> Self {
        Self::Lcm {
            original_steps: 50,
            boundary: BoundaryScalings::default(),
        }
    }

    /// Parses the CLI names `ddim | ddim-trailing | dpmpp | codi | lcm` (default settings of each).
    pub fn from_name(name: &str) -> Result<Self, CoreError> {
        match name {
            "ddim" => Ok(Self::ddim()),
            "ddim-trailing" => Ok(Self::ddim_spaced(TimestepSpacing::Trailing)),
            "dpmpp" | "dpm++" | "dpmsolver++" => Ok(Self::DpmSolverPP2M),
            "codi" => Ok(Self::codi()),
            "lcm" | "cm" => Ok(Self::lcm()),
            _ => Err(CoreError::UnknownName {
                what: "sampler",
                value: name.to_string(),
                expected: "ddim, ddim-trailing, dpmpp, codi, lcm",
            }),
        }
    }

    /// The CLI name of the kind (`ddim`, `ddim-trailing`, `dpmpp`, `codi` or `lcm`), as [`Self::from_name`]
    /// reads it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ddim {
                spacing: TimestepSpacing::Trailing,
                ..
            } => "ddim-trailing",
            Self::Ddim { .. } => "ddim",
            Self::DpmSolverPP2M => "dpmpp",
            Self::Codi { .. } => "codi",
            Self::Lcm { .. } => "lcm",
        }
    }
}

/// One step of a plan: from t to t_next (None after the last step, where the sampler returns x̂).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PlannedStep {
    /// Position of the step in the plan, from 0.
    pub index: usize,
    /// The timestep the denoiser is called at.
    pub t: i64,
    /// α_t of the current timestep.
    pub alpha: f64,
    /// σ_t of the current timestep.
    pub sigma: f64,
    /// The timestep the step moves to; negative means "the final ᾱ" (DDIM), None means the clean end.
    pub t_next: Option<i64>,
    /// α of the noise level the step moves to (1 at the clean end).
    pub alpha_next: f64,
    /// σ of the noise level the step moves to (0 at the clean end).
    pub sigma_next: f64,
}

/// A sampler: a kind and a number of steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sampler {
    /// Which sampler, with its settings.
    pub kind: SamplerKind,
    /// Number of sampling steps K, each one denoiser call (the CoDi grid may have fewer points than K).
    pub steps: usize,
}

impl Sampler {
    /// A sampler of `kind` taking `steps` steps.
    pub fn new(kind: SamplerKind, steps: usize) -> Self {
        Self { kind, steps }
    }

    /// The timesteps the denoiser is called at, highest first.
    pub fn timesteps(&self, schedule: &NoiseSchedule) -> Result<Vec<i64>, CoreError> {
        let n = schedule.num_train_timesteps();
        match self.kind {
            SamplerKind::Ddim {
                spacing,
                steps_offset,
                eta,
                ..
            } => {
                if !(0.0..=1.0).contains(&eta) {
                    return Err(invalid("DDIM eta", format!("{eta} (must be in [0, 1])")));
                }
                ddim_timesteps(n, self.steps, spacing, steps_offset)
            }
            SamplerKind::DpmSolverPP2M => dpm_timesteps(n, self.steps),
            SamplerKind::Codi { intervals, .. } => codi_timesteps(n, intervals, self.steps),
            SamplerKind::Lcm { original_steps, .. } => lcm_timesteps(n, original_steps, self.steps),
        }
    }

    /// Every step with the α, σ it reads and the α, σ it moves to.
    pub fn plan(&self, schedule: &NoiseSchedule) -> Result<Vec<PlannedStep>, CoreError> {
        let ts = self.timesteps(schedule)?;
        let n = schedule.num_train_timesteps();
        let final_ab = |set_one: bool| if set_one { 1.0 } else { schedule.alpha_bar(0) };
        Ok(ts
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let next = ts.get(i + 1).copied();
                let (t_next, ab_next) = match self.kind {
                    SamplerKind::Ddim {
                        set_alpha_to_one, ..
                    } => {
                        let p = ddim_prev_timestep(t, n, self.steps);
                        (
                            Some(p),
                            if p >= 0 {
                                schedule.alpha_bar(p)
                            } else {
                                final_ab(set_alpha_to_one)
                            },
                        )
                    }
                    _ => match next {
                        Some(p) => (Some(p), schedule.alpha_bar(p)),
                        None => (None, 1.0),
                    },
                };
                PlannedStep {
                    index: i,
                    t,
                    alpha: schedule.alpha(t),
                    sigma: schedule.sigma(t),
                    t_next,
                    alpha_next: ab_next.sqrt(),
                    sigma_next: (1.0 - ab_next).max(0.0).sqrt(),
                }
            })
            .collect())
    }

    /// Runs the sampler from z_T. z: [batch, channels, height, width]. `progress(i, total)` is called after
    /// each step. Returns the clean sample (latent).
    pub fn sample<B: Backend, D: Denoiser<B>, N: NoiseSource>(
        &self,
        schedule: &NoiseSchedule,
        denoiser: &D,
        z: Tensor<B, 4>,
        noise: &mut N,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Tensor<B, 4>, CoreError> {
        let plan = self.plan(schedule)?;
        let total = plan.len();
        let batch = z.dims()[0];
        let device = z.device();
        let kind = denoiser.prediction_type();
        let call = |z: Tensor<B, 4>, t: i64| {
            let tt = Tensor::<B, 1>::full([batch], t as f32, &device);
            denoiser.predict(z, tt)
        };
        let mut z = z;
        let mut dpm_state = dpm::DpmState::default();
        for (i, step) in plan.iter().enumerate() {
            let out = call(z.clone(), step.t);
            let last = i + 1 == total;
            z = match self.kind {
                SamplerKind::Ddim { eta, .. } => {
                    let r = ddim_step(kind, out, z, step, eta, noise);
                    r.prev_sample
                }
                SamplerKind::DpmSolverPP2M => dpm_state.step(kind, out, z, step, last),
                SamplerKind::Codi { boundary, .. } => {
                    codi_step(kind, out, z, step, &boundary, last)
                }
                SamplerKind::Lcm { boundary, .. } => {
                    let (_, prev) = lcm_step(kind, out, z, step, &boundary, last, noise);
                    prev
                }
            };
            progress(i + 1, total);
        }
        Ok(z)
    }
}

#[cfg(test)]
mod tests;
