use burn::tensor::{backend::Backend, Tensor};

use super::PlannedStep;
use crate::prediction::{Prediction, PredictionType};

/// DPM-Solver++(2M) in data prediction (Lu et al. 2022; diffusers `DPMSolverMultistepScheduler`,
/// `algorithm_type="dpmsolver++"`, `solver_order=2`, final σ = 0): the first step and the last step are
/// first order, the others use the previous x̂ for a second-order (midpoint) correction. λ = log(α/σ).
#[derive(Default)]
pub(super) struct DpmState<B: Backend> {
    /// x̂ and λ of the previous step.
    prev: Option<(Tensor<B, 4>, f64)>,
}

impl<B: Backend> DpmState<B> {
    pub(super) fn step(
        &mut self,
        kind: PredictionType,
        output: Tensor<B, 4>,
        z: Tensor<B, 4>,
        step: &PlannedStep,
        last: bool,
    ) -> Tensor<B, 4> {
        let x0 = Prediction::from_output_scalar(kind, output, z.clone(), step.alpha, step.sigma).x0;
        if last || step.sigma_next == 0.0 {
            // σ_next = 0: the first-order update lands exactly on x̂.
            return x0;
        }
        let lambda_s = (step.alpha / step.sigma).ln();
        let lambda_t = (step.alpha_next / step.sigma_next).ln();
        let h = lambda_t - lambda_s;
        let em1 = (-h).exp_m1(); // e^{−h} − 1
        let mut d = x0.clone();
        if let Some((prev_x0, lambda_prev)) = self.prev.take() {
            let r0 = (lambda_s - lambda_prev) / h;
            // D = D0 + ½ D1 with D1 = (x̂ − x̂_prev)/r0.
            d = d + (x0.clone() - prev_x0).mul_scalar(0.5 / r0);
        }
        self.prev = Some((x0, lambda_s));
        z.mul_scalar(step.sigma_next / step.sigma) - d.mul_scalar(step.alpha_next * em1)
    }
}
