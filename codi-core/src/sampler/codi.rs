use burn::tensor::{backend::Backend, Tensor};

use super::PlannedStep;
use crate::boundary::BoundaryScalings;
use crate::noise::NoiseSource;
use crate::prediction::{Prediction, PredictionType};

/// (f(z) = c_skip z + c_out x̂, ε̂): the boundary-scaled clean estimate and the model's own noise estimate.
fn boundary_scaled<B: Backend>(
    kind: PredictionType,
    output: Tensor<B, 4>,
    z: Tensor<B, 4>,
    step: &PlannedStep,
    boundary: &BoundaryScalings,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let p = Prediction::from_output_scalar(kind, output, z.clone(), step.alpha, step.sigma);
    let (c_skip, c_out) = boundary.at(step.t as f64);
    (z.mul_scalar(c_skip) + p.x0.mul_scalar(c_out), p.eps)
}

/// One step of the CoDi sampler (method.md §5): x̂ ← c_skip z + c_out x̂(z, t); z ← α_next x̂ + σ_next ε̂
/// with the model's own ε̂ (not boundary-scaled). The last step returns x̂.
pub fn codi_step<B: Backend>(
    kind: PredictionType,
    output: Tensor<B, 4>,
    z: Tensor<B, 4>,
    step: &PlannedStep,
    boundary: &BoundaryScalings,
    last: bool,
) -> Tensor<B, 4> {
    let (x0, eps) = boundary_scaled(kind, output, z, step, boundary);
    if last {
        x0
    } else {
        x0.mul_scalar(step.alpha_next) + eps.mul_scalar(step.sigma_next)
    }
}

/// One step of the consistency-model sampler (diffusers `LCMScheduler.step`): denoised = c_out x̂ + c_skip z;
/// then re-noised to the next timestep with fresh noise, except after the last step.
/// Returns (denoised, prev_sample).
pub fn lcm_step<B: Backend, N: NoiseSource>(
    kind: PredictionType,
    output: Tensor<B, 4>,
    z: Tensor<B, 4>,
    step: &PlannedStep,
    boundary: &BoundaryScalings,
    last: bool,
    noise: &mut N,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let device = z.device();
    let dims = z.dims();
    let (denoised, _) = boundary_scaled(kind, output, z, step, boundary);
    if last {
        return (denoised.clone(), denoised);
    }
    let n = noise.sample::<B, 4>(dims, &device);
    let prev = denoised.clone().mul_scalar(step.alpha_next) + n.mul_scalar(step.sigma_next);
    (denoised, prev)
}
