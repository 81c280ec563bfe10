//! GroupNorm's forward pass arranged for the CPU backend: burn's version applies γ and β as `[1, C, 1, 1]`
//! broadcasts, which burn-flex walks element by element (a strided iterator — the largest single cost in a
//! training step's profile). Here the statistics are taken over `[N, G, C/G·H·W]` rows and the affine map is
//! folded into one per-(sample, channel) scale and shift over `[N·C, H·W]` rows, shapes the backend runs as
//! contiguous SIMD loops. Same parameters, same result (up to rounding).

//!
//! On the CPU backend itself (inference: frozen networks, sampling, evaluation) the whole normalisation, and
//! the SiLU that usually follows, is one host pass (`codi_kernels::norm`); under autodiff on it, one op whose
//! backward is one more pass (burn-autodiff's decomposition kept every intermediate and ran the sigmoid's
//! exponential through libm, element by element).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::GroupNorm;
use burn::tensor::activation::silu;
use burn::tensor::ops::FloatTensor as Primitive;
use burn::tensor::{backend::Backend, Tensor, TensorData, TensorPrimitive};
use codi_core::device::{CpuAutodiff, CpuBackend};
use codi_kernels::norm::{group_norm_backward_f32, group_norm_f32, GroupNormSpec};
use codi_kernels::profile::{timed, Pass};

use crate::layers::host::{
    downcast, host_to_primitive, on_cpu_autodiff_f32, on_cpu_f32, primitive_values, register_grad,
    to_host, HostValues,
};

/// y = (x − μ) / √(σ² + ε) · γ + β per group. x: [batch, channels, …] → same shape
pub fn group_norm<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    match on_host(norm, x, false).or_else(|x| tracked(norm, x, false)) {
        Ok(y) => y,
        Err(x) => group_norm_ops(norm, x),
    }
}

/// silu(group_norm(x)), the pair that opens every ResNet block. x: [batch, channels, …] → same shape
pub fn group_norm_silu<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    match on_host(norm, x, true).or_else(|x| tracked(norm, x, true)) {
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
    Ok(timed(profile_name(act), Pass::Forward, 0.0, || {
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
        Tensor::from_data(TensorData::new(data, shape), &device)
    }))
}

/// The layer-type name of a profile (`codi_kernels::profile`).
fn profile_name(silu: bool) -> &'static str {
    if silu {
        "group norm + SiLU"
    } else {
        "group norm"
    }
}

/// One op on the autodiff CPU backend (affine norms, f32); otherwise x back unchanged.
fn tracked<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
    act: bool,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let (Some(gamma), Some(beta)) = (&norm.gamma, &norm.beta) else {
        return Err(x);
    };
    if !on_cpu_autodiff_f32(&x) {
        return Err(x);
    }
    let dims = x.dims();
    let (n, c) = (dims[0], dims[1]);
    let s: usize = dims[2..].iter().product();
    let prim = |t: Tensor<B, 1>| downcast::<_, Primitive<CpuAutodiff>>(t.into_primitive().tensor());
    let x3 = downcast::<_, Primitive<CpuAutodiff>>(x.reshape([n, c, s]).into_primitive().tensor());
    let spec = Spec {
        dims: [n, c, s],
        groups: norm.num_groups,
        eps: norm.epsilon as f32,
        silu: act,
    };
    let out = timed(profile_name(act), Pass::Forward, 0.0, || {
        tracked_group_norm(x3, prim(gamma.val()), prim(beta.val()), spec)
    });
    Ok(Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(downcast(out))).reshape(dims))
}

/// A GroupNorm over x: [n, c, s].
#[derive(Debug, Clone, Copy)]
struct Spec {
    dims: [usize; 3],
    groups: usize,
    eps: f32,
    silu: bool,
}

impl Spec {
    fn kernel<'a>(&self, gamma: &'a [f32], beta: &'a [f32]) -> GroupNormSpec<'a> {
        GroupNormSpec {
            channels: self.dims[1],
            groups: self.groups,
            spatial: self.dims[2],
            affine: Some((gamma, beta)),
            eps: self.eps,
            silu: self.silu,
        }
    }
}

#[derive(Debug, Clone)]
struct NormState {
    x: HostValues,
    gamma: HostValues,
    beta: HostValues,
    stats: Vec<[f32; 2]>,
    spec: Spec,
}

#[derive(Debug)]
struct GroupNormBackward;

impl Backward<CpuBackend, 3> for GroupNormBackward {
    type State = NormState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_g, node_b] = ops.parents;
        let s = ops.state;
        timed(profile_name(s.spec.silu), Pass::Backward, 0.0, || {
            let g = primitive_values(grads.consume::<CpuBackend>(&ops.node));
            let d = group_norm_backward_f32(&s.x, &g, &s.stats, s.spec.kernel(&s.gamma, &s.beta));
            let c = s.spec.dims[1];
            register_grad(grads, node_x.map(|n| n.id), Some(d.dx), s.spec.dims);
            register_grad(grads, node_g.map(|n| n.id), Some(d.dgamma), [c]);
            register_grad(grads, node_b.map(|n| n.id), Some(d.dbeta), [c]);
        });
    }
}

fn tracked_group_norm(
    x: Primitive<CpuAutodiff>,
    gamma: Primitive<CpuAutodiff>,
    beta: Primitive<CpuAutodiff>,
    spec: Spec,
) -> Primitive<CpuAutodiff> {
    let xh = primitive_values(x.primitive.clone());
    let gh = primitive_values(gamma.primitive.clone());
    let bh = primitive_values(beta.primitive.clone());
    let mut out = xh.to_vec();
    let stats = group_norm_f32(&mut out, spec.kernel(&gh, &bh));
    let output = host_to_primitive(out, spec.dims);
    match GroupNormBackward
        .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            NormState {
                x: xh,
                gamma: gh,
                beta: bh,
                stats,
                spec,
            },
            output,
        ),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
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

    #[test]
    fn autodiff_group_norm_matches_burns_gradients() {
        type AB = codi_core::device::CpuAutodiff;
        let dev = Default::default();
        let base = GroupNormConfig::new(4, 8).init::<AB>(&dev);
        let norm = GroupNorm {
            gamma: base.gamma.map(|p| {
                p.map(|_| Tensor::random([8], Distribution::Normal(1.0, 0.5), &dev).require_grad())
            }),
            beta: base.beta.map(|p| {
                p.map(|_| Tensor::random([8], Distribution::Normal(0.0, 0.5), &dev).require_grad())
            }),
            ..base
        };
        let x = Tensor::<AB, 4>::random([3, 8, 5, 6], Distribution::Normal(0.3, 2.0), &dev)
            .require_grad();
        assert!(on_cpu_autodiff_f32(&x), "the test must take the op's path");
        let w = Tensor::<AB, 4>::random([3, 8, 5, 6], Distribution::Normal(0.0, 1.0), &dev);
        for act in [false, true] {
            let run = |ours: bool| {
                let out = match (ours, act) {
                    (true, true) => group_norm_silu(&norm, x.clone()),
                    (true, false) => group_norm(&norm, x.clone()),
                    (false, true) => silu(group_norm_ops(&norm, x.clone())),
                    (false, false) => group_norm_ops(&norm, x.clone()),
                };
                let grads = (out.clone() * w.clone()).sum().backward();
                let grad = |t: Tensor<AB, 1>| t.grad(&grads).expect("a gradient");
                let gamma = norm.gamma.as_ref().unwrap().val();
                let beta = norm.beta.as_ref().unwrap().val();
                let dx = x.grad(&grads).expect("a gradient");
                (out.inner(), dx, grad(gamma), grad(beta))
            };
            let (a, b) = (run(true), run(false));
            use codi_core::tensor_ops::max_abs_diff as diff;
            for (name, err) in [
                ("output", diff(a.0, b.0)),
                ("dx", diff(a.1, b.1)),
                ("dγ", diff(a.2, b.2)),
                ("dβ", diff(a.3, b.3)),
            ] {
                assert!(err < 1e-4, "silu {act} {name}: max |codi − burn| = {err}");
            }
        }
    }
}
