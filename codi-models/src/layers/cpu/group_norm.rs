//! GroupNorm (and the SiLU that usually follows) on the CPU backend: at inference the whole normalisation
//! is one host pass (`codi_kernels::norm`); under autodiff one op whose backward is one more pass
//! (burn-autodiff's decomposition kept every intermediate and ran the sigmoid's exponential through libm,
//! element by element, and burn-flex walks the `[1, C, 1, 1]` broadcasts of γ and β one element at a time).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::ops::FloatTensor as Primitive;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use codi_core::backend::{CpuAutodiff, CpuBackend};
use codi_kernels::norm::{group_norm_backward_f32, group_norm_f32, GroupNormSpec};
use codi_kernels::profile::{timed, Pass};

use super::host::{
    autodiff_primitive, from_autodiff_primitive, host_to_primitive, on_cpu_autodiff_f32,
    on_cpu_f32, primitive_values, record_op, register_grad, to_host, HostValues,
};
use crate::layers::GroupNorm;

/// `norm` (followed by SiLU when `act`) applied to x through the host kernels, or x back when they do not
/// serve it. x: [batch, channels, …] → same shape
pub fn forward<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
    act: bool,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    on_host(norm, x, act).or_else(|x| tracked(norm, x, act))
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
    let x3 = autodiff_primitive(x.reshape([n, c, s]));
    let spec = Spec {
        dims: [n, c, s],
        groups: norm.num_groups,
        eps: norm.epsilon as f32,
        silu: act,
    };
    let out = timed(profile_name(act), Pass::Forward, 0.0, || {
        let (gamma, beta) = (
            autodiff_primitive(gamma.val()),
            autodiff_primitive(beta.val()),
        );
        tracked_group_norm(x3, gamma, beta, spec)
    });
    Ok(from_autodiff_primitive::<B, 3>(out).reshape(dims))
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
    let state = NormState {
        x: xh,
        gamma: gh,
        beta: bh,
        stats,
        spec,
    };
    record_op(GroupNormBackward, [&x, &gamma, &beta], state, output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::cpu::host::host_path_testable;
    use crate::layers::functional::silu;
    use crate::layers::GroupNormConfig;
    use burn::module::Param;
    use burn::tensor::Distribution;
    type B = codi_core::backend::CpuBackend;

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
        // burn-nn's own module over the same parameters: the reference for both paths.
        let burns = burn::nn::GroupNorm {
            gamma: norm.gamma.as_ref().map(|g| Param::from_tensor(g.val())),
            beta: norm.beta.as_ref().map(|b| Param::from_tensor(b.val())),
            num_groups: 4,
            num_channels: 8,
            epsilon: 1e-6,
            affine: true,
        };
        let want = burns.forward(x.clone());
        let generic = norm.forward_generic(x.clone());
        assert!(codi_core::tensor_ops::max_abs_diff(want.clone(), generic) < 1e-5);
        if !host_path_testable() {
            return;
        }
        let got = norm.forward(x.clone());
        assert!(codi_core::tensor_ops::max_abs_diff(want.clone(), got) < 1e-5);
        let fused = norm.forward_silu(x);
        assert!(
            codi_core::tensor_ops::max_abs_diff(burn::tensor::activation::silu(want), fused) < 1e-5
        );
        let seq = Tensor::<B, 3>::random([2, 8, 7], Distribution::Normal(0.0, 1.0), &dev);
        assert!(
            codi_core::tensor_ops::max_abs_diff(burns.forward(seq.clone()), norm.forward(seq))
                < 1e-5
        );
    }

    #[test]
    fn autodiff_group_norm_matches_burns_gradients() {
        if !host_path_testable() {
            return;
        }
        type AB = codi_core::backend::CpuAutodiff;
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
                    (true, true) => norm.forward_silu(x.clone()),
                    (true, false) => norm.forward(x.clone()),
                    (false, true) => silu(norm.forward_generic(x.clone())),
                    (false, false) => norm.forward_generic(x.clone()),
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
