//! Scaled dot-product attention for the CPU backend (burn-flex), used for inference.
//!
//! burn-flex 0.21's fused attention walks the (batch, head) pairs on one thread and takes a scalar `expf` per
//! score; in a UNet at 32×32 latents that is about half of a forward pass (book: performance chapter). On that
//! backend, f32 attention goes through `codi_kernels::attention`; other backends, autodiff included, keep
//! burn's op.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::layers::host::{on_cpu_f32, to_host};
use codi_kernels::attention::{attention_f32, AttentionShape};

/// softmax(q·kᵀ/√d)·v. q: [b, h, n, d], k: [b, h, m, d], v: [b, h, m, dv] → [b, h, n, dv]
pub fn scaled_dot_product<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    if !(on_cpu_f32(&q) && on_cpu_f32(&k) && on_cpu_f32(&v)) {
        return attention(q, k, v, None, None, AttentionModuleOptions::default());
    }
    let device = q.device();
    let [b, h, n, d] = q.dims();
    let [_, _, m, dv] = v.dims();
    let shape = AttentionShape {
        heads: b * h,
        n,
        m,
        d,
        dv,
    };
    let out = attention_f32(&to_host(q), &to_host(k), &to_host(v), shape);
    Tensor::from_data(TensorData::new(out, [b, h, n, dv]), &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use codi_core::NoiseSource;

    #[test]
    fn scaled_dot_product_agrees_with_burn_on_the_cpu_backend() {
        type B = codi_core::device::CpuBackend;
        let dev = Default::default();
        let mut noise = codi_core::SeededNoise::new(4);
        let q = noise.sample::<B, 4>([2, 4, 70, 16], &dev);
        let k = noise.sample::<B, 4>([2, 4, 9, 16], &dev);
        let v = noise.sample::<B, 4>([2, 4, 9, 16], &dev);
        let ours = scaled_dot_product(q.clone(), k.clone(), v.clone());
        let burns = attention(q, k, v, None, None, AttentionModuleOptions::default());
        let err = codi_core::tensor_ops::max_abs_diff(ours, burns);
        assert!(err < 1e-5, "max |codi − burn| = {err}");
    }
}
