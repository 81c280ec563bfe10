use burn::tensor::{backend::Backend, Tensor};

use super::PlannedStep;
use crate::noise::NoiseSource;
use crate::prediction::{Prediction, PredictionType};

/// What one DDIM step produced (diffusers' `pred_original_sample`, `prev_sample`).
pub struct DdimStep<B: Backend> {
    /// The predicted clean sample x̂ at this step. pred_original: [batch, channels, height, width]
    pub pred_original: Tensor<B, 4>,
    /// The sample moved to the next (lower) timestep. prev_sample: [batch, channels, height, width]
    pub prev_sample: Tensor<B, 4>,
}

/// One DDIM step (Song et al.; diffusers `DDIMScheduler.step`, no clipping):
/// z' = α' x̂ + √(1 − ᾱ' − s²) ε̂ + s·n, s = η √((1 − ᾱ')/(1 − ᾱ) · (1 − ᾱ/ᾱ')).
pub fn ddim_step<B: Backend, N: NoiseSource>(
    kind: PredictionType,
    output: Tensor<B, 4>,
    z: Tensor<B, 4>,
    step: &PlannedStep,
    eta: f64,
    noise: &mut N,
) -> DdimStep<B> {
    let p = Prediction::from_output_scalar(kind, output, z.clone(), step.alpha, step.sigma);
    let (ab, ab_prev) = (step.alpha * step.alpha, step.alpha_next * step.alpha_next);
    let variance = (1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev);
    let std_dev = eta * variance.max(0.0).sqrt();
    let dir = (1.0 - ab_prev - std_dev * std_dev).max(0.0).sqrt();
    let mut prev = p.x0.clone().mul_scalar(step.alpha_next) + p.eps.mul_scalar(dir);
    if eta > 0.0 {
        let n = noise.sample::<B, 4>(z.dims(), &z.device());
        prev = prev + n.mul_scalar(std_dev);
    }
    DdimStep {
        pred_original: p.x0,
        prev_sample: prev,
    }
}
