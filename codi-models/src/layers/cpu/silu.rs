//! SiLU on the CPU backend through `codi_kernels::math::silu_f32` (vectorised, threaded), with and without
//! autodiff: burn-flex maps the sigmoid's exponential through libm one element at a time, on one thread,
//! forward and backward.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::ops::FloatTensor as Primitive;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use codi_core::backend::{CpuAutodiff, CpuBackend};
use codi_kernels::profile::{timed, Pass};

use super::host::{
    autodiff_primitive, from_autodiff_primitive, host_to_primitive, on_cpu_autodiff_f32,
    on_cpu_f32, primitive_values, record_op, register_grad, to_host, HostValues,
};

/// x·σ(x) through the host kernels, or x back when they do not serve it. x: any shape → same shape
pub fn forward<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if on_cpu_f32(&x) {
        return Ok(timed("SiLU", Pass::Forward, 0.0, || {
            let (shape, device) = (x.shape(), x.device());
            let mut values = to_host(x);
            codi_kernels::math::silu_f32(&mut values);
            Tensor::from_data(TensorData::new(values, shape), &device)
        }));
    }
    if !on_cpu_autodiff_f32(&x) {
        return Err(x);
    }
    let dims = x.dims();
    let n = dims.iter().product();
    let flat = autodiff_primitive(x.reshape([n]));
    let out = timed("SiLU", Pass::Forward, 0.0, || tracked(flat, n));
    Ok(from_autodiff_primitive::<B, 1>(out).reshape(dims))
}

#[derive(Debug)]
struct SiluBackward;

impl Backward<CpuBackend, 1> for SiluBackward {
    /// The input's values.
    type State = HostValues;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node] = ops.parents;
        timed("SiLU", Pass::Backward, 0.0, || {
            let g = primitive_values(grads.consume::<CpuBackend>(&ops.node));
            let x = ops.state;
            let dx = node
                .as_ref()
                .map(|_| codi_kernels::math::silu_backward_f32(&x, &g));
            register_grad(grads, node.map(|n| n.id), dx, [x.len()]);
        });
    }
}

/// SiLU of x: \[n\] as one op whose backward runs the gradient kernel.
fn tracked(x: Primitive<CpuAutodiff>, n: usize) -> Primitive<CpuAutodiff> {
    let xh = primitive_values(x.primitive.clone());
    let mut out = xh.to_vec();
    codi_kernels::math::silu_f32(&mut out);
    let output = host_to_primitive(out, [n]);
    record_op(SiluBackward, [&x], xh, output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::cpu::host::host_path_testable;
    use crate::layers::functional::silu;
    use burn::tensor::activation;
    use codi_core::NoiseSource;

    #[test]
    fn equals_burns_silu_on_the_cpu_backend() {
        if !host_path_testable() {
            return;
        }
        let mut noise = codi_core::SeededNoise::new(3);
        let x = noise.sample::<CpuBackend, 4>([2, 3, 40, 50], &Default::default()) * 4.0;
        assert!(on_cpu_f32(&x), "the test must take the kernel's path");
        let err = codi_core::tensor_ops::max_abs_diff(silu(x.clone()), activation::silu(x));
        assert!(err < 1e-5, "max |codi − burn| = {err}");
    }

    #[test]
    fn equals_burns_silu_and_gradient_under_autodiff() {
        if !host_path_testable() {
            return;
        }
        let mut noise = codi_core::SeededNoise::new(4);
        let x = noise.sample::<CpuBackend, 3>([2, 30, 41], &Default::default()) * 4.0;
        let w = noise.sample::<CpuBackend, 3>([2, 30, 41], &Default::default());
        let x = Tensor::<CpuAutodiff, 3>::from_inner(x).require_grad();
        assert!(on_cpu_autodiff_f32(&x), "the test must take the op's path");
        let run = |ours: bool| {
            let y = if ours {
                silu(x.clone())
            } else {
                activation::silu(x.clone())
            };
            let grads = (y.clone() * Tensor::from_inner(w.clone())).sum().backward();
            (y.inner(), x.grad(&grads).expect("input gradient"))
        };
        let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
        use codi_core::tensor_ops::max_abs_diff as diff;
        let (ey, edx) = (diff(y, y_ref), diff(dx, dx_ref));
        assert!(
            ey < 1e-5 && edx < 1e-5,
            "max |codi − burn|: y {ey}, dx {edx}"
        );
    }
}
