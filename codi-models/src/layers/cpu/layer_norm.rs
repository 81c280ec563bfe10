//! LayerNorm under autodiff on the CPU backend as one op (`codi_kernels::layer_norm`): burn-autodiff records
//! LayerNorm as its definition, a dozen element-wise ops over the tokens and as many in the backward pass, in
//! each of a transformer block's three norms. Inference keeps burn's LayerNorm (burn-flex fuses it), as do
//! other backends.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::ops::FloatTensor as Primitive;
use burn::tensor::{backend::Backend, Tensor};
use codi_core::backend::{CpuAutodiff, CpuBackend};
use codi_kernels::layer_norm::{layer_norm_backward_f32, layer_norm_f32, LayerNormSpec};
use codi_kernels::profile::{timed, Pass};

use super::host::{
    autodiff_primitive, from_autodiff_primitive, host_to_primitive, on_cpu_autodiff_f32,
    primitive_values, record_op, register_grad, HostValues,
};
use crate::layers::LayerNorm;

/// `norm` over the last axis as one op under autodiff on the CPU backend, or x back elsewhere (inference
/// included: burn-flex fuses LayerNorm). x: [..., width] → same shape
pub fn forward<B: Backend, const D: usize>(
    norm: &LayerNorm<B>,
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let Some(beta) = &norm.beta else {
        return Err(x);
    };
    if !on_cpu_autodiff_f32(&x) {
        return Err(x);
    }
    let dims = x.dims();
    let width = dims[D - 1];
    let rows = dims[..D - 1].iter().product();
    let out = timed("layer norm", Pass::Forward, 0.0, || {
        tracked_layer_norm(
            autodiff_primitive(x.reshape([rows, width])),
            autodiff_primitive(norm.gamma.val()),
            autodiff_primitive(beta.val()),
            [rows, width],
            norm.epsilon as f32,
        )
    });
    Ok(from_autodiff_primitive::<B, 2>(out).reshape(dims))
}

#[derive(Debug, Clone)]
struct LayerNormState {
    x: HostValues,
    gamma: HostValues,
    stats: Vec<[f32; 2]>,
    dims: [usize; 2],
    eps: f32,
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<CpuBackend, 3> for LayerNormBackward {
    type State = LayerNormState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_g, node_b] = ops.parents;
        let s = ops.state;
        timed("layer norm", Pass::Backward, 0.0, || {
            let g = primitive_values(grads.consume::<CpuBackend>(&ops.node));
            let [_, width] = s.dims;
            let spec = LayerNormSpec {
                width,
                gamma: &s.gamma,
                beta: None,
                eps: s.eps,
            };
            let d = layer_norm_backward_f32(&s.x, &g, &s.stats, spec);
            register_grad(grads, node_x.map(|n| n.id), Some(d.dx), s.dims);
            register_grad(grads, node_g.map(|n| n.id), Some(d.dgamma), [width]);
            register_grad(grads, node_b.map(|n| n.id), Some(d.dbeta), [width]);
        });
    }
}

fn tracked_layer_norm(
    x: Primitive<CpuAutodiff>,
    gamma: Primitive<CpuAutodiff>,
    beta: Primitive<CpuAutodiff>,
    dims: [usize; 2],
    eps: f32,
) -> Primitive<CpuAutodiff> {
    let xh = primitive_values(x.primitive.clone());
    let gh = primitive_values(gamma.primitive.clone());
    let bh = primitive_values(beta.primitive.clone());
    let mut out = xh.to_vec();
    let spec = LayerNormSpec {
        width: dims[1],
        gamma: &gh,
        beta: Some(&bh),
        eps,
    };
    let stats = layer_norm_f32(&mut out, spec);
    let output = host_to_primitive(out, dims);
    let state = LayerNormState {
        x: xh,
        gamma: gh,
        stats,
        dims,
        eps,
    };
    record_op(LayerNormBackward, [&x, &gamma, &beta], state, output)
}

#[cfg(test)]
mod tests {
    use super::super::perturb::Perturb;
    use super::*;
    use crate::layers::cpu::host::host_path_testable;
    use crate::layers::LayerNormConfig;
    use burn::module::Module;
    use codi_core::NoiseSource;

    #[test]
    fn matches_burns_values_and_gradients() {
        if !host_path_testable() {
            return;
        }
        type AB = CpuAutodiff;
        let dev = Default::default();
        // Low-variance rows, so that a wrong ε shows.
        let eps = 1e-5;
        let norm: LayerNorm<AB> = LayerNormConfig::new(37).with_epsilon(eps).init(&dev);
        let norm = norm.map(&mut Perturb(codi_core::SeededNoise::new(3)));
        let mut noise = codi_core::SeededNoise::new(4);
        let x = Tensor::<AB, 3>::from_inner(
            noise
                .sample::<CpuBackend, 3>([2, 45, 37], &dev)
                .mul_scalar(3e-3),
        )
        .require_grad();
        let w = noise.sample::<CpuBackend, 3>([2, 45, 37], &dev);
        let run = |ours: bool| {
            let y = if ours {
                norm.forward(x.clone())
            } else {
                norm.forward_generic(x.clone())
            };
            let grads = (y.clone() * Tensor::from_inner(w.clone())).sum().backward();
            let v = |t: Tensor<CpuBackend, 3>| t.into_data().into_vec::<f32>().unwrap();
            let v1 = |t: Tensor<CpuBackend, 1>| t.into_data().into_vec::<f32>().unwrap();
            (
                v(y.inner()),
                v(x.grad(&grads).unwrap()),
                v1(norm.gamma.val().grad(&grads).unwrap()),
                v1(norm.beta.as_ref().unwrap().val().grad(&grads).unwrap()),
            )
        };
        let (ours, burns) = (run(true), run(false));
        let diff = |a: &[f32], b: &[f32]| {
            let scale = b.iter().fold(1f32, |m, x| m.max(x.abs()));
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
                / scale
        };
        assert!(
            diff(&ours.0, &burns.0) < 1e-5,
            "y: {}",
            diff(&ours.0, &burns.0)
        );
        assert!(
            diff(&ours.1, &burns.1) < 1e-4,
            "dx: {}",
            diff(&ours.1, &burns.1)
        );
        assert!(
            diff(&ours.2, &burns.2) < 1e-5,
            "dγ: {}",
            diff(&ours.2, &burns.2)
        );
        assert!(
            diff(&ours.3, &burns.3) < 1e-5,
            "dβ: {}",
            diff(&ours.3, &burns.3)
        );
    }
}
