//! Dense layers on the CPU backend through `codi_kernels::linear`, with and without autodiff: the packed gemm
//! reads the activations in place, where burn-flex's matmul (the `gemm` crate) ran at about half the speed
//! on codi's shapes ([tokens, 64–1,280] × [64–1,280, 64–5,120]). Other backends keep burn's `Linear`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::ops::FloatTensor as Primitive;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use codi_core::backend::{CpuAutodiff, CpuBackend};
use codi_kernels::linear::{linear_backward_f32, linear_f32, LinearShape};
use codi_kernels::profile::{timed, Pass};

use super::host::{
    autodiff_primitive, from_autodiff_primitive, host_to_primitive, host_values,
    on_cpu_autodiff_f32, on_cpu_f32, primitive_values, record_op, register_grad, HostValues,
};
use crate::layers::Linear;

/// `lin` applied to x through the host kernels, or x back when they do not serve it.
/// x: [..., d_in] → [..., d_out]
pub fn forward<B: Backend, const D: usize>(
    lin: &Linear<B>,
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let [d_in, d_out] = lin.weight.dims();
    let dims = x.dims();
    if dims[D - 1] != d_in {
        // Let burn report the shape error.
        return Err(x);
    }
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    let s = LinearShape {
        rows: dims[..D - 1].iter().product(),
        d_in,
        d_out,
    };
    if on_cpu_f32(&x) {
        return Ok(timed("dense", Pass::Forward, s.flops(), || {
            let device = x.device();
            let bias = lin.bias.as_ref().map(|b| host_values(b.val()));
            let out = linear_f32(
                &host_values(x),
                &host_values(lin.weight.val()),
                bias.as_deref(),
                s,
            );
            Tensor::from_data(TensorData::new(out, out_dims), &device)
        }));
    }
    if !on_cpu_autodiff_f32(&x) {
        return Err(x);
    }
    let out = timed("dense", Pass::Forward, s.flops(), || {
        tracked_linear(
            autodiff_primitive(x.reshape([s.rows, d_in])),
            autodiff_primitive(lin.weight.val()),
            lin.bias.as_ref().map(|b| autodiff_primitive(b.val())),
            s,
        )
    });
    Ok(from_autodiff_primitive::<B, 2>(out).reshape(out_dims))
}

#[derive(Debug, Clone)]
struct LinearState {
    x: HostValues,
    weight: HostValues,
    shape: LinearShape,
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<CpuBackend, 3> for LinearBackward {
    type State = LinearState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w, node_b] = ops.parents;
        let LinearState { x, weight, shape } = ops.state;
        let flops = (node_x.is_some() as u8 + node_w.is_some() as u8) as f64 * shape.flops();
        timed("dense", Pass::Backward, flops, || {
            let g = primitive_values(grads.consume::<CpuBackend>(&ops.node));
            let d = linear_backward_f32(&x, &weight, &g, shape, node_x.is_some(), node_w.is_some());
            let LinearShape { rows, d_in, d_out } = shape;
            register_grad(grads, node_x.map(|n| n.id), d.dx, [rows, d_in]);
            register_grad(grads, node_w.map(|n| n.id), d.dw, [d_in, d_out]);
            register_grad(grads, node_b.map(|n| n.id), Some(d.db), [d_out]);
        });
    }
}

/// One dense-layer op on the autodiff CPU backend, recorded with [`LinearBackward`]. x: [rows, d_in]
fn tracked_linear(
    x: Primitive<CpuAutodiff>,
    weight: Primitive<CpuAutodiff>,
    bias: Option<Primitive<CpuAutodiff>>,
    shape: LinearShape,
) -> Primitive<CpuAutodiff> {
    let xh = primitive_values(x.primitive.clone());
    let wh = primitive_values(weight.primitive.clone());
    let bh = bias.as_ref().map(|b| primitive_values(b.primitive.clone()));
    let output = host_to_primitive(
        linear_f32(&xh, &wh, bh.as_deref(), shape),
        [shape.rows, shape.d_out],
    );
    // Without a bias its slot in the graph holds an untracked constant, which gets no gradient.
    let zeros;
    let bias = match &bias {
        Some(b) => b,
        None => {
            zeros = autodiff_primitive(Tensor::<CpuAutodiff, 1>::zeros(
                [shape.d_out],
                &Default::default(),
            ));
            &zeros
        }
    };
    let state = LinearState {
        x: xh,
        weight: wh,
        shape,
    };
    record_op(LinearBackward, [&x, &weight, bias], state, output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::cpu::host::host_path_testable;
    use crate::layers::LinearConfig;
    use codi_core::NoiseSource;

    #[test]
    fn inference_linear_matches_burns() {
        if !host_path_testable() {
            return;
        }
        let dev = Default::default();
        let mut noise = codi_core::SeededNoise::new(3);
        for bias in [true, false] {
            let lin: Linear<CpuBackend> = LinearConfig::new(19, 23).with_bias(bias).init(&dev);
            let x = noise.sample::<CpuBackend, 3>([2, 37, 19], &dev);
            let err =
                codi_core::tensor_ops::max_abs_diff(lin.forward(x.clone()), lin.forward_generic(x));
            assert!(err < 1e-5, "bias {bias}: max |codi − burn| = {err}");
        }
    }

    #[test]
    fn autodiff_linear_matches_burns_values_and_gradients() {
        if !host_path_testable() {
            return;
        }
        type AB = CpuAutodiff;
        let dev = Default::default();
        let mut noise = codi_core::SeededNoise::new(4);
        for bias in [true, false] {
            let lin: Linear<AB> = LinearConfig::new(19, 23).with_bias(bias).init(&dev);
            let x = Tensor::<AB, 3>::from_inner(noise.sample::<CpuBackend, 3>([2, 37, 19], &dev))
                .require_grad();
            let w = Tensor::<AB, 3>::from_inner(noise.sample::<CpuBackend, 3>([2, 37, 23], &dev));
            let run = |ours: bool| {
                let out = if ours {
                    lin.forward(x.clone())
                } else {
                    lin.forward_generic(x.clone())
                };
                let grads = (out.clone() * w.clone()).sum().backward();
                let db = lin.bias.as_ref().map(|b| b.val().grad(&grads).expect("db"));
                (
                    out.inner(),
                    x.grad(&grads).expect("dx"),
                    lin.weight.val().grad(&grads).expect("dw"),
                    db,
                )
            };
            let (ours, theirs) = (run(true), run(false));
            use codi_core::tensor_ops::max_abs_diff as diff;
            let mut errs = vec![
                ("output", diff(ours.0, theirs.0)),
                ("dx", diff(ours.1, theirs.1)),
                ("dw", diff(ours.2, theirs.2)),
            ];
            if let (Some(a), Some(b)) = (ours.3, theirs.3) {
                errs.push(("db", diff(a, b)));
            }
            for (name, err) in errs {
                assert!(err < 1e-4, "bias {bias} {name}: max |codi − burn| = {err}");
            }
        }
    }
}
