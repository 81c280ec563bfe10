use burn::tensor::{backend::Backend, Tensor};

use super::Denoiser;
use crate::prediction::PredictionType;

/// Classifier-free guidance: out = u + w·(c − u) from a conditional and an unconditional denoiser.
/// Linear in the output, so valid for every prediction type; w = 1 is the conditional model alone.
pub struct Guided<C, U> {
    /// The conditional denoiser (c).
    pub cond: C,
    /// The unconditional denoiser (u), not called when `scale` is 1.
    pub uncond: U,
    /// The guidance scale w.
    pub scale: f64,
}

impl<B: Backend, C: Denoiser<B>, U: Denoiser<B>> Denoiser<B> for Guided<C, U> {
    fn prediction_type(&self) -> PredictionType {
        debug_assert_eq!(self.cond.prediction_type(), self.uncond.prediction_type());
        self.cond.prediction_type()
    }

    fn predict(&self, z: Tensor<B, 4>, t: Tensor<B, 1>) -> Tensor<B, 4> {
        let c = self.cond.predict(z.clone(), t.clone());
        if self.scale == 1.0 {
            return c;
        }
        let u = self.uncond.predict(z, t);
        u.clone() + (c - u).mul_scalar(self.scale)
    }
}

/// Classifier-free guidance with a weight per sample: u + w·(c − u). c, u: [b, c, h, w]; scale: \[b\]
pub fn guide_per_sample<B: Backend>(
    cond: Tensor<B, 4>,
    uncond: Tensor<B, 4>,
    scale: Tensor<B, 1>,
) -> Tensor<B, 4> {
    uncond.clone() + (cond - uncond) * crate::tensor_ops::per_sample::<B, 4>(scale)
}
