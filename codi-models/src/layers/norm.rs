//! GroupNorm's forward pass arranged for the CPU backend: burn's version applies γ and β as `[1, C, 1, 1]`
//! broadcasts, which burn-flex walks element by element (a strided iterator — the largest single cost in a
//! training step's profile). Here the statistics are taken over `[N, G, C/G·H·W]` rows and the affine map is
//! folded into one per-(sample, channel) scale and shift over `[N·C, H·W]` rows, shapes the backend runs as
//! contiguous SIMD loops. Same parameters, same result (up to rounding).

//!
//! On the CPU backend itself (inference: frozen networks, sampling, evaluation) the whole normalisation, and
//! the SiLU that usually follows, is one host pass (`codi_kernels::norm`).

use burn::nn::GroupNorm;
use burn::tensor::activation::silu;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use codi_kernels::norm::{group_norm_f32, GroupNormSpec};

use crate::layers::host::{on_cpu_f32, to_host};

/// y = (x − μ) / √(σ² + ε) · γ + β per group. x: [batch, channels, …] → same shape
pub fn group_norm<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    match on_host(norm, x, false) {
        Ok(y) => y,
        Err(x) => group_norm_ops(norm, x),
    }
}

/// silu(group_norm(x)), the pair that opens every ResNet block. x: [batch, channels, …] → same shape
pub fn group_norm_silu<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    match on_host(norm, x, true) {
        Ok(y) => y,
        Err(x) => silu(group_norm_ops(norm, x)),
    }
}

/// The host kernel when `B` is the CPU backend and x is f32; otherwise x back unchanged.
fn on_host<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
    act: bool,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if !on_cpu_f32(&x) {
        return Err(x);
    }
    let shape = x.shape();
    let dims = shape.dims::<D>();
    let device = x.device();
    let gamma = norm.gamma.as_ref().map(|g| to_host(g.val()));
    let beta = norm.beta.as_ref().map(|b| to_host(b.val()));
    let mut data = to_host(x);
    let spec = GroupNormSpec {
        channels: dims[1],
        groups: norm.num_groups,
        spatial: dims[2..].iter().product(),
        affine: gamma.as_deref().zip(beta.as_deref()),
        eps: norm.epsilon as f32,
        silu: act,
    };
    group_norm_f32(&mut data, spec);
    Ok(Tensor::from_data(TensorData::new(data, shape), &device))
}

/// The tensor-op version (any backend, autodiff included).
fn group_norm_ops<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let shape = x.shape();
    let dims = shape.dims::<D>();
    let (n, c) = (dims[0], dims[1]);
    let g = norm.num_groups;
    let spatial: usize = dims[2..].iter().product();
    let per_group = c / g * spatial;
    let x3 = x.reshape([n, g, per_group]);
    let mean = x3.clone().mean_dim(2); // [n, g, 1]
    let centred = x3 - mean;
    let var = centred.clone().square().mean_dim(2); // [n, g, 1]
    let rstd = var.add_scalar(norm.epsilon).sqrt().recip();
    // Per-(sample, channel) scale: rstd of the channel's group, times γ.
    let rstd_c = rstd.repeat_dim(2, c / g).reshape([n, c]);
    let rows = centred.reshape([n * c, spatial]);
    let y = match (&norm.gamma, &norm.beta) {
        (Some(gamma), Some(beta)) => {
            let scale = rstd_c * gamma.val().reshape([1, c]);
            let shift = beta.val().reshape([1, c]).repeat_dim(0, n);
            rows * scale.reshape([n * c, 1]) + shift.reshape([n * c, 1])
        }
        _ => rows * rstd_c.reshape([n * c, 1]),
    };
    y.reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::GroupNormConfig;
    use burn::tensor::Distribution;
    type B = codi_core::device::CpuBackend;

    #[test]
    fn equals_burns_group_norm() {
        let dev = Default::default();
        let norm = GroupNormConfig::new(4, 8)
            .with_epsilon(1e-6)
            .init::<B>(&dev);
        // Non-trivial affine parameters.
        let norm = GroupNorm {
            gamma: norm
                .gamma
                .map(|p| p.map(|_| Tensor::random([8], Distribution::Normal(1.0, 0.5), &dev))),
            beta: norm
                .beta
                .map(|p| p.map(|_| Tensor::random([8], Distribution::Normal(0.0, 0.5), &dev))),
            ..norm
        };
        let x = Tensor::<B, 4>::random([3, 8, 5, 6], Distribution::Normal(0.3, 2.0), &dev);
        let want = norm.forward(x.clone());
        // Both paths: the host kernel (CPU backend) and the tensor ops (every other backend).
        let got = group_norm(&norm, x.clone());
        assert!(codi_core::tensor_ops::max_abs_diff(want.clone(), got) < 1e-5);
        let ops = group_norm_ops(&norm, x.clone());
        assert!(codi_core::tensor_ops::max_abs_diff(want.clone(), ops) < 1e-5);
        let fused = group_norm_silu(&norm, x);
        assert!(codi_core::tensor_ops::max_abs_diff(silu(want), fused) < 1e-5);
        let seq = Tensor::<B, 3>::random([2, 8, 7], Distribution::Normal(0.0, 1.0), &dev);
        assert!(
            codi_core::tensor_ops::max_abs_diff(norm.forward(seq.clone()), group_norm(&norm, seq))
                < 1e-5
        );
    }
}
