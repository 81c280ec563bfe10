//! SiLU on the CPU backend through `codi_kernels::math::silu_f32` (vectorised, threaded): burn-flex maps
//! the sigmoid's exponential through libm one element at a time, on one thread.

use burn::tensor::{activation, backend::Backend, Tensor, TensorData};

use crate::layers::host::{on_cpu_f32, to_host};

/// x·σ(x). x: any shape → same shape
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !on_cpu_f32(&x) {
        return activation::silu(x);
    }
    let (shape, device) = (x.shape(), x.device());
    let mut values = to_host(x);
    codi_kernels::math::silu_f32(&mut values);
    Tensor::from_data(TensorData::new(values, shape), &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use codi_core::device::CpuBackend;
    use codi_core::NoiseSource;

    #[test]
    fn equals_burns_silu_on_the_cpu_backend() {
        let mut noise = codi_core::SeededNoise::new(3);
        let x = noise.sample::<CpuBackend, 4>([2, 3, 40, 50], &Default::default()) * 4.0;
        assert!(on_cpu_f32(&x), "the test must take the kernel's path");
        let err = codi_core::tensor_ops::max_abs_diff(silu(x.clone()), activation::silu(x));
        assert!(err < 1e-5, "max |codi − burn| = {err}");
    }
}
