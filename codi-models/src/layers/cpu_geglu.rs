//! The GEGLU gate of the feed-forward for the CPU backend, with and without autodiff: one pass over each
//! projected row through `codi_kernels::geglu` instead of burn's split + gelu + multiply over two strided
//! halves (which burn-flex walks element by element, and burn-autodiff again in the backward pass).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor as Primitive;
use burn::tensor::{activation::gelu, backend::Backend, Tensor, TensorData, TensorPrimitive};
use codi_core::device::{CpuAutodiff, CpuBackend};
use codi_kernels::geglu::{geglu_backward_f32, geglu_f32};
use codi_kernels::profile::{timed, Pass};

use crate::layers::host::{
    downcast, host_to_primitive, host_values, on_cpu_autodiff_f32, on_cpu_f32, primitive_values,
    HostValues,
};

/// a · gelu(g) for h = [a | g] along the last axis. h: [b, n, 2·inner] → [b, n, inner]
pub fn geglu<B: Backend>(h: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, n, two_inner] = h.dims();
    let inner = two_inner / 2;
    if on_cpu_f32(&h) {
        return timed("GEGLU", Pass::Forward, 0.0, || {
            let device = h.device();
            let out = geglu_f32(&host_values(h), inner);
            Tensor::from_data(TensorData::new(out, [b, n, inner]), &device)
        });
    }
    if on_cpu_autodiff_f32(&h) {
        let out = timed("GEGLU", Pass::Forward, 0.0, || {
            tracked_geglu(downcast(h.into_primitive().tensor()), [b, n, inner])
        });
        return Tensor::from_primitive(TensorPrimitive::Float(downcast(out)));
    }
    let mut parts = h.split(inner, 2);
    let gate = parts.pop().expect("two halves");
    let hidden = parts.pop().expect("two halves");
    hidden * gelu(gate)
}

#[derive(Debug)]
struct GegluBackward;

impl Backward<CpuBackend, 1> for GegluBackward {
    /// The input h on the host and the output's shape [b, n, inner].
    type State = (HostValues, [usize; 3]);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node] = ops.parents;
        timed("GEGLU", Pass::Backward, 0.0, || {
            let dout = primitive_values(grads.consume::<CpuBackend>(&ops.node));
            let (h, [b, n, inner]) = ops.state;
            if let Some(node) = node {
                let dh = geglu_backward_f32(&h, &dout, inner);
                grads.register::<CpuBackend>(node.id, host_to_primitive(dh, [b, n, 2 * inner]));
            }
        });
    }
}

/// One GEGLU op on the autodiff CPU backend, recorded with [`GegluBackward`].
fn tracked_geglu(h: Primitive<CpuAutodiff>, shape: [usize; 3]) -> Primitive<CpuAutodiff> {
    let hh = primitive_values(h.primitive.clone());
    let output = host_to_primitive(geglu_f32(&hh, shape[2]), shape);
    match GegluBackward
        .prepare::<NoCheckpointing>([h.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((hh, shape), output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codi_core::NoiseSource;

    fn burns<B: Backend>(h: Tensor<B, 3>) -> Tensor<B, 3> {
        let inner = h.dims()[2] / 2;
        let mut parts = h.split(inner, 2);
        let gate = parts.pop().unwrap();
        parts.pop().unwrap() * gelu(gate)
    }

    #[test]
    fn geglu_agrees_with_burn_on_the_cpu_backend() {
        let mut noise = codi_core::SeededNoise::new(6);
        let h = noise.sample::<CpuBackend, 3>([2, 13, 40], &Default::default()) * 2.0;
        assert!(on_cpu_f32(&h), "the test must take the kernel's path");
        let err = codi_core::tensor_ops::max_abs_diff(geglu(h.clone()), burns(h));
        assert!(err < 1e-5, "max |codi − burn| = {err}");
    }

    #[test]
    fn autodiff_geglu_matches_burns_gradients() {
        type AB = CpuAutodiff;
        let mut noise = codi_core::SeededNoise::new(7);
        let dev = Default::default();
        let h = Tensor::<AB, 3>::from_inner(noise.sample::<CpuBackend, 3>([2, 13, 40], &dev) * 2.0)
            .require_grad();
        assert!(
            on_cpu_autodiff_f32(&h),
            "the test must take the kernel's path"
        );
        let w = Tensor::<AB, 3>::from_inner(noise.sample::<CpuBackend, 3>([2, 13, 20], &dev));
        let run = |ours: bool| {
            let out = if ours {
                geglu(h.clone())
            } else {
                burns(h.clone())
            };
            let grads = (out.clone() * w.clone()).sum().backward();
            (out.inner(), h.grad(&grads).expect("a gradient"))
        };
        let (ours, theirs) = (run(true), run(false));
        for (name, a, b) in [("output", ours.0, theirs.0), ("dh", ours.1, theirs.1)] {
            let err = codi_core::tensor_ops::max_abs_diff(a, b);
            assert!(err < 1e-5, "{name}: max |codi − burn| = {err}");
        }
    }
}
