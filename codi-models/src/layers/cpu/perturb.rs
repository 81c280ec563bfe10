//! A test helper for the autodiff ops' tests: modules with seeded, trainable parameters.

use burn::module::{ModuleMapper, Param};
use burn::tensor::Tensor;
use codi_core::backend::{CpuAutodiff, CpuBackend};
use codi_core::NoiseSource;

/// Adds seeded noise (σ = 0.3) to every parameter and leaves it a trainable leaf.
pub(crate) struct Perturb(pub codi_core::SeededNoise);

impl ModuleMapper<CpuAutodiff> for Perturb {
    fn map_float<const D: usize>(
        &mut self,
        param: Param<Tensor<CpuAutodiff, D>>,
    ) -> Param<Tensor<CpuAutodiff, D>> {
        param.map(|t| {
            let n = self.0.sample::<CpuBackend, D>(t.dims(), &t.device());
            Tensor::from_inner(t.inner() + n.mul_scalar(0.3)).require_grad()
        })
    }
}
