//! The GEGLU gate of the feed-forward for the CPU backend, with and without autodiff: one pass over each
//! projected row through `codi_kernels::geglu` instead of burn's split + gelu + multiply over two strided
//! halves (which burn-flex walks element by element, and burn-autodiff again in the backward pass).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::ops::FloatTensor as Primitive;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use codi_core::backend::{CpuAutodiff, CpuBackend};
use codi_kernels::geglu::{geglu_backward_f32, geglu_f32};
use codi_kernels::profile::{timed, Pass};

use super::host::{
    autodiff_primitive, from_autodiff_primitive, host_to_primitive, host_values,
    on_cpu_autodiff_f32, on_cpu_f32, primitive_values, record_op, HostValues,
};

/// a · gelu(g) for h = [a | g] along the last axis through the host kernels, or h back when they do not
/// serve it. h: [b, n, 2·inner] → [b, n, inner]
pub fn forward<B: Backend>(h: Tensor<B, 3>) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    let [b, n, two_inner] = h.dims();
    let inner = two_inner / 2;
    if on_cpu_f32(&h) {
        return Ok(timed("GEGLU", Pass::Forward, 0.0, || {
            let device = h.device();
            let out = geglu_f32(&host_values(h), inner);
            Tensor::from_data(TensorData::new(out, [b, n, inner]), &device)
        }));
    }
    if !on_cpu_autodiff_f32(&h) {
        return Err(h);
    }
    let out = timed("GEGLU", Pass::Forward, 0.0, || {
        tracked_geglu(autodiff_primitive(h), [b, n, inner])
    });
    Ok(from_autodiff_primitive(out))
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
    record_op(GegluBackward, [&h], (hh, shape), output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::cpu::host::host_path_testable;
    use crate::layers::functional::{geglu, geglu_generic as burns};
    use codi_core::NoiseSource;

    #[test]
    fn geglu_agrees_with_burn_on_the_cpu_backend() {
        if !host_path_testable() {
            return;
        }
        let mut noise = codi_core::SeededNoise::new(6);
        let h = noise.sample::<CpuBackend, 3>([2, 13, 40], &Default::default()) * 2.0;
        assert!(on_cpu_f32(&h), "the test must take the kernel's path");
        let err = codi_core::tensor_ops::max_abs_diff(geglu(h.clone()), burns(h));
        assert!(err < 1e-5, "max |codi − burn| = {err}");
    }

    #[test]
    fn autodiff_geglu_matches_burns_gradients() {
        if !host_path_testable() {
            return;
        }
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
