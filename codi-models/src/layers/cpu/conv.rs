//! 2-D convolution on the CPU backend through `codi_kernels::conv` (packed gemm with the im2col columns
//! written straight into the packed layout), and under autodiff as one op with a host backward.
//!
//! burn's convolution gradients swap the batch and channel axes of the activations and output gradients (the
//! weight gradient) and run a transposed convolution with a scalar col2im (the input gradient); burn-flex
//! copies every swapped tensor element by element. `codi_kernels::conv` computes the same gradients as gemms
//! over a recomputed im2col buffer. Used for f32 tensors on `Flex` and `Autodiff<Flex>` when the convolution has
//! groups 1, dilation 1, a bias and symmetric padding; everything else keeps burn's op.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::ops::FloatTensor as Primitive;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use codi_core::backend::{CpuAutodiff, CpuBackend};
use codi_kernels::conv::{conv2d_backward_f32, conv2d_f32, ConvShape, Wanted};
use codi_kernels::profile::{timed, Pass};

use super::host::{
    autodiff_primitive, from_autodiff_primitive, host_to_primitive, host_values,
    on_cpu_autodiff_f32, on_cpu_f32, primitive_values, record_op, register_grad, HostValues,
};
use crate::layers::Conv2d;

/// `conv` applied to x through the host kernels, or x back when they do not serve it.
/// x: [b, c_in, h, w] → [b, c_out, h_out, w_out]
pub fn forward<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let (Some(bias), Some(shape)) = (&conv.bias, host_shape(conv, &x)) else {
        return Err(x);
    };
    if on_cpu_f32(&x) {
        return Ok(timed(
            shape.profile_name(),
            Pass::Forward,
            shape.flops(),
            || {
                let device = x.device();
                let out = conv2d_f32(
                    &host_values(x),
                    &host_values(conv.weight.val()),
                    Some(&host_values(bias.val())),
                    shape,
                );
                let dims = [shape.batch, shape.c_out, shape.h_out(), shape.w_out()];
                Tensor::from_data(TensorData::new(out, dims), &device)
            },
        ));
    }
    if !on_cpu_autodiff_f32(&x) {
        return Err(x);
    }
    let out = timed(shape.profile_name(), Pass::Forward, shape.flops(), || {
        tracked_conv(
            autodiff_primitive(x),
            autodiff_primitive(conv.weight.val()),
            autodiff_primitive(bias.val()),
            shape,
        )
    });
    Ok(from_autodiff_primitive(out))
}

fn host_shape<B: Backend>(conv: &Conv2d<B>, x: &Tensor<B, 4>) -> Option<ConvShape> {
    let [batch, c_in, h, w] = x.dims();
    let [c_out, wc_in, kh, kw] = conv.weight.dims();
    let [top, left] = conv.padding;
    (wc_in == c_in && h + 2 * top >= kh && w + 2 * left >= kw).then_some(ConvShape {
        batch,
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        stride: conv.stride,
        pad: [top, left],
    })
}

#[derive(Debug, Clone)]
struct ConvState {
    x: HostValues,
    weight: HostValues,
    shape: ConvShape,
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<CpuBackend, 3> for ConvBackward {
    type State = ConvState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w, node_b] = ops.parents;
        let s = ops.state;
        let sh = s.shape;
        let wanted = Wanted {
            input: node_x.is_some(),
            weight: node_w.is_some(),
        };
        let flops = (wanted.input as u8 + wanted.weight as u8) as f64 * sh.flops();
        timed(sh.profile_name(), Pass::Backward, flops, || {
            let g = primitive_values(grads.consume::<CpuBackend>(&ops.node));
            let d = conv2d_backward_f32(&s.x, &s.weight, &g, sh, wanted);
            let [b, ci, h, w, co, kh, kw] = [sh.batch, sh.c_in, sh.h, sh.w, sh.c_out, sh.kh, sh.kw];
            register_grad(grads, node_x.map(|n| n.id), d.dx, [b, ci, h, w]);
            register_grad(grads, node_w.map(|n| n.id), d.dw, [co, ci, kh, kw]);
            register_grad(grads, node_b.map(|n| n.id), Some(d.db), [co]);
        });
    }
}

fn tracked_conv(
    x: Primitive<CpuAutodiff>,
    weight: Primitive<CpuAutodiff>,
    bias: Primitive<CpuAutodiff>,
    shape: ConvShape,
) -> Primitive<CpuAutodiff> {
    let xh = primitive_values(x.primitive.clone());
    let wh = primitive_values(weight.primitive.clone());
    let bh = primitive_values(bias.primitive.clone());
    let output = host_to_primitive(
        conv2d_f32(&xh, &wh, Some(&bh), shape),
        [shape.batch, shape.c_out, shape.h_out(), shape.w_out()],
    );
    record_op(
        ConvBackward,
        [&x, &weight, &bias],
        ConvState {
            x: xh,
            weight: wh,
            shape,
        },
        output,
    )
}

#[cfg(test)]
mod tests {
    use super::super::perturb::Perturb;
    use super::*;
    use crate::layers::cpu::host::host_path_testable;
    use crate::layers::{conv2d, zero_conv};
    use burn::module::{Module, ModuleMapper, Param};
    use codi_core::NoiseSource;

    /// Makes every parameter a constant (a frozen backbone).
    struct Freeze;

    impl ModuleMapper<CpuAutodiff> for Freeze {
        fn map_float<const D: usize>(
            &mut self,
            param: Param<Tensor<CpuAutodiff, D>>,
        ) -> Param<Tensor<CpuAutodiff, D>> {
            param.map(|t| Tensor::from_inner(t.inner()))
        }
    }

    #[test]
    fn a_frozen_convolution_passes_the_input_gradient_only() {
        if !host_path_testable() {
            return;
        }
        type AB = CpuAutodiff;
        let dev = Default::default();
        let conv: Conv2d<AB> = conv2d(5, 7, 3, 1, &dev);
        let conv = conv.map(&mut Freeze);
        let x = Tensor::<AB, 4>::from_inner(
            codi_core::SeededNoise::new(8).sample::<CpuBackend, 4>([2, 5, 9, 8], &dev),
        )
        .require_grad();
        let grad = |ours: bool| {
            let out = if ours {
                conv.forward(x.clone())
            } else {
                conv.forward_generic(x.clone())
            };
            let grads = (out.clone() * out).sum().backward();
            assert!(conv.weight.val().grad(&grads).is_none());
            x.grad(&grads).expect("input gradient")
        };
        let err = codi_core::tensor_ops::max_abs_diff(grad(true), grad(false));
        assert!(err < 1e-4, "dx: max |codi − burn| = {err}");
    }

    #[test]
    fn inference_convolution_matches_burns() {
        if !host_path_testable() {
            return;
        }
        let dev = Default::default();
        let mut noise = codi_core::SeededNoise::new(9);
        for (i, (k, stride)) in [(3, 1), (3, 2), (1, 1)].into_iter().enumerate() {
            let conv: Conv2d<CpuBackend> = conv2d(5, 7, k, stride, &dev);
            // 17 columns: output rows that do not fill whole 16-pixel panels.
            let x = noise.sample::<CpuBackend, 4>([3, 5, 9, 17], &dev);
            assert!(
                host_shape(&conv, &x).is_some(),
                "conv {i} must take the host path"
            );
            let err = codi_core::tensor_ops::max_abs_diff(
                conv.forward(x.clone()),
                conv.forward_generic(x),
            );
            assert!(err < 1e-4, "conv {i}: max |codi − burn| = {err}");
        }
    }

    #[test]
    fn host_convolution_matches_burns_values_and_gradients() {
        if !host_path_testable() {
            return;
        }
        type AB = CpuAutodiff;
        let dev = Default::default();
        let mut noise = codi_core::SeededNoise::new(6);
        let convs: Vec<Conv2d<AB>> = vec![
            conv2d(5, 7, 3, 1, &dev),
            conv2d(5, 7, 3, 2, &dev),
            conv2d(5, 7, 1, 1, &dev),
            // Zero weights, made nonzero below: the ControlNet's zero convs take this path too.
            zero_conv(5, 7, 1, &dev),
        ];
        for (i, conv) in convs.into_iter().enumerate() {
            let conv = conv.map(&mut Perturb(codi_core::SeededNoise::new(i as u64)));
            let x = Tensor::<AB, 4>::from_inner(noise.sample::<CpuBackend, 4>([2, 5, 9, 8], &dev))
                .require_grad();
            for (name, err, _) in against_burn(&conv, x) {
                assert!(err < 1e-4, "conv {i} {name}: max |codi − burn| = {err}");
            }
        }
    }

    #[test]
    fn a_winograd_sized_convolution_matches_burns_values_and_gradients() {
        if !host_path_testable() {
            return;
        }
        // 16 → 24 channels, 2 × 16 × 17 tiles of 2×2 (odd sides): the forward and both gradients go through
        // Winograd's F(2×2, 3×3) in codi_kernels.
        type AB = CpuAutodiff;
        let dev = Default::default();
        let conv: Conv2d<AB> = conv2d(16, 24, 3, 1, &dev);
        let conv = conv.map(&mut Perturb(codi_core::SeededNoise::new(11)));
        let x = codi_core::SeededNoise::new(12).sample::<CpuBackend, 4>([2, 16, 31, 33], &dev);
        let x = Tensor::<AB, 4>::from_inner(x).require_grad();
        for (name, err, scale) in against_burn(&conv, x) {
            assert!(
                err < 2e-6 * scale,
                "{name}: max |codi − burn| = {err} (largest value {scale})"
            );
        }
    }

    /// Output and gradients of `conv` on `x` through the host path against burn's own: (name, largest
    /// difference, largest |burn value|) each.
    fn against_burn(
        conv: &Conv2d<CpuAutodiff>,
        x: Tensor<CpuAutodiff, 4>,
    ) -> Vec<(&'static str, f32, f32)> {
        type AB = CpuAutodiff;
        assert!(
            host_shape(conv, &x).is_some(),
            "the convolution must take the host path"
        );
        let dev = x.device();
        let run = |ours: bool| {
            let out = if ours {
                conv.forward(x.clone())
            } else {
                conv.forward_generic(x.clone())
            };
            let w = Tensor::<AB, 4>::from_inner(
                codi_core::SeededNoise::new(7).sample::<CpuBackend, 4>(out.dims(), &dev),
            );
            let grads = (out.clone() * w).sum().backward();
            [
                out.inner(),
                x.grad(&grads).expect("input gradient"),
                conv.weight.val().grad(&grads).expect("weight gradient"),
                conv.bias
                    .as_ref()
                    .expect("bias")
                    .val()
                    .grad(&grads)
                    .expect("bias gradient")
                    .reshape([1, 1, 1, -1]),
            ]
        };
        let (ours, theirs) = (run(true), run(false));
        ["output", "dx", "dw", "db"]
            .into_iter()
            .zip(ours.into_iter().zip(theirs))
            .map(|(name, (a, b))| {
                let scale = b.clone().abs().max().into_scalar();
                (name, codi_core::tensor_ops::max_abs_diff(a, b), scale)
            })
            .collect()
    }
}
