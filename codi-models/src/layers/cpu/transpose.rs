//! NCHW activations as tokens and back ([b, c, n] ↔ [b, n, c]) in row-major memory on the CPU backend, with
//! and without autodiff. burn keeps `swap_dims` as a view, and burn-flex walks a swapped view element by
//! element through a strided index in every op that reads it (the residual adds and LayerNorms of each
//! transformer block, the projections, the reshape back to channels) — on one thread; here the view is
//! transposed once, 32 × 32 tiles at a time (the batched transpose of `host::primitive_to_host`), and the
//! gradient the same way back.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::ops::{FloatTensor as Primitive, FloatTensorOps};
use burn::tensor::{backend::Backend, Tensor};
use codi_core::backend::{CpuAutodiff, CpuBackend};
use codi_kernels::profile::{timed, Pass};

use super::host::{
    autodiff_primitive, downcast, from_autodiff_primitive, host_to_primitive, on_cpu_autodiff_f32,
    on_cpu_f32, primitive_to_host, record_op,
};

/// [b, r, c] → [b, c, r] in row-major memory through the host kernels (autodiff included), or t back
/// when they do not serve it (burn's `swap_dims` view is the other backends' form).
pub fn forward<B: Backend>(t: Tensor<B, 3>) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    let [b, r, c] = t.dims();
    if on_cpu_f32(&t) {
        let out = swapped_rows(
            downcast(t.into_primitive().tensor()),
            [b, r, c],
            Pass::Forward,
        );
        return Ok(Tensor::from_primitive(
            burn::tensor::TensorPrimitive::Float(downcast(out)),
        ));
    }
    if !on_cpu_autodiff_f32(&t) {
        return Err(t);
    }
    Ok(from_autodiff_primitive(tracked_swap(
        autodiff_primitive(t),
        [b, r, c],
    )))
}

#[derive(Debug)]
struct SwapBackward;

impl Backward<CpuBackend, 1> for SwapBackward {
    /// The input's shape [b, r, c].
    type State = [usize; 3];

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node] = ops.parents;
        let g = grads.consume::<CpuBackend>(&ops.node);
        let [b, r, c] = ops.state;
        if let Some(node) = node {
            grads.register::<CpuBackend>(node.id, swapped_rows(g, [b, c, r], Pass::Backward));
        }
    }
}

fn tracked_swap(t: Primitive<CpuAutodiff>, [b, r, c]: [usize; 3]) -> Primitive<CpuAutodiff> {
    let output = swapped_rows(t.primitive.clone(), [b, r, c], Pass::Forward);
    record_op(SwapBackward, [&t], [b, r, c], output)
}

/// t: [b, r, c] → its [b, c, r] transpose in row-major memory (the swapped view comes to the host through
/// the batched transpose of `host::primitive_to_host`).
fn swapped_rows(
    t: Primitive<CpuBackend>,
    [b, r, c]: [usize; 3],
    pass: Pass,
) -> Primitive<CpuBackend> {
    timed("tokens ↔ channels", pass, 0.0, || {
        let values = primitive_to_host(CpuBackend::float_swap_dims(t, 1, 2));
        host_to_primitive(values, [b, c, r])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::cpu::host::host_path_testable;
    use crate::layers::functional::{channels_to_tokens, tokens_to_channels};
    use codi_core::NoiseSource;

    #[test]
    fn tokens_return_to_channels_row_major() {
        if !host_path_testable() {
            return;
        }
        let mut noise = codi_core::SeededNoise::new(9);
        let t = noise.sample::<CpuBackend, 3>([2, 45, 37], &Default::default());
        let want = t
            .clone()
            .swap_dims(1, 2)
            .into_data()
            .into_vec::<f32>()
            .unwrap();
        let got = tokens_to_channels(t);
        assert_eq!(got.dims(), [2, 37, 45]);
        assert_eq!(got.into_data().into_vec::<f32>().unwrap(), want);
    }

    #[test]
    fn autodiff_swap_matches_burns_view_and_gradient() {
        if !host_path_testable() {
            return;
        }
        type AB = CpuAutodiff;
        let mut noise = codi_core::SeededNoise::new(10);
        let dev = Default::default();
        let x = Tensor::<AB, 3>::from_inner(noise.sample::<CpuBackend, 3>([2, 33, 40], &dev))
            .require_grad();
        assert!(on_cpu_autodiff_f32(&x), "the test must take the op's path");
        let w = Tensor::<AB, 3>::from_inner(noise.sample::<CpuBackend, 3>([2, 40, 33], &dev));
        let run = |ours: bool| {
            let out = if ours {
                channels_to_tokens(x.clone())
            } else {
                x.clone().swap_dims(1, 2)
            };
            // A non-linear use, so the gradient is not the same for every element.
            let grads = (out.clone() * out.clone() * w.clone()).sum().backward();
            (out.inner(), x.grad(&grads).expect("a gradient"))
        };
        let (ours, theirs) = (run(true), run(false));
        assert_eq!(ours.0.dims(), [2, 40, 33]);
        for (name, a, b) in [("output", ours.0, theirs.0), ("dx", ours.1, theirs.1)] {
            let err = codi_core::tensor_ops::max_abs_diff(a, b);
            assert!(err < 1e-6, "{name}: max |codi − burn| = {err}");
        }
    }
}
