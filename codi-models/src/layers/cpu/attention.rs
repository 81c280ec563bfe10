//! Scaled dot-product attention for the CPU backend (burn-flex), with and without autodiff.
//!
//! burn-flex 0.21's fused attention walks the (batch, head) pairs on one thread and takes a scalar `expf` per
//! score; in a UNet at 32×32 latents that is about half of a forward pass, and burn-autodiff decomposes
//! attention into ops that keep every [n, m] score tensor for the backward pass (book: performance chapter).
//! On the CPU backend, f32 attention goes through `codi_kernels::attention`; under autodiff as one op whose
//! backward is `codi_kernels::attention_backward` (it keeps the inputs, the output and one log-sum-exp per
//! query row). Other backends keep burn's op.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::ops::FloatTensor as Primitive;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use codi_core::backend::{CpuAutodiff, CpuBackend};

use super::host::{
    autodiff_primitive, from_autodiff_primitive, on_cpu_autodiff_f32, on_cpu_f32,
    primitive_to_host, record_op, swap_heads_and_tokens, to_host, token_major_to_primitive,
};
use codi_kernels::attention::{attention_f32, attention_f32_lse, AttentionShape};
use codi_kernels::attention_backward::attention_backward_f32;
use codi_kernels::profile::{timed, Pass};

/// The three attention inputs, handed back when the host kernels do not serve them.
pub type Qkv<B> = (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>);

/// softmax(q·kᵀ/√d)·v through the host kernels, or (q, k, v) back when they do not serve them.
/// q: [b, h, n, d], k: [b, h, m, d], v: [b, h, m, dv] → [b, h, n, dv]
pub fn forward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, Qkv<B>> {
    let [b, h, n, d] = q.dims();
    let [_, _, m, dv] = v.dims();
    let shape = AttentionShape {
        heads: b * h,
        n,
        m,
        d,
        dv,
    };
    if on_cpu_f32(&q) && on_cpu_f32(&k) && on_cpu_f32(&v) {
        return Ok(timed("attention", Pass::Forward, shape.flops(), || {
            let device = q.device();
            let out = attention_f32(&to_host(q), &to_host(k), &to_host(v), shape);
            // Token-major memory: the caller's merge of the heads is then free.
            let out = swap_heads_and_tokens(&out, [b, h, n, dv]);
            Tensor::<B, 4>::from_data(TensorData::new(out, [b, n, h, dv]), &device).swap_dims(1, 2)
        }));
    }
    if on_cpu_autodiff_f32(&q) && on_cpu_autodiff_f32(&k) && on_cpu_autodiff_f32(&v) {
        let out = timed("attention", Pass::Forward, shape.flops(), || {
            tracked_attention(
                autodiff_primitive(q),
                autodiff_primitive(k),
                autodiff_primitive(v),
                shape,
                [b, h],
            )
        });
        return Ok(from_autodiff_primitive(out));
    }
    Err((q, k, v))
}

/// What the backward pass needs, on the host.
#[derive(Debug, Clone)]
struct AttentionState {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    out: Vec<f32>,
    lse: Vec<f32>,
    shape: AttentionShape,
    batch_heads: [usize; 2],
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<CpuBackend, 3> for AttentionBackward {
    type State = AttentionState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_q, node_k, node_v] = ops.parents;
        let s = ops.state;
        timed(
            "attention",
            Pass::Backward,
            s.shape.backward_flops(),
            || {
                let dout = primitive_to_host(grads.consume::<CpuBackend>(&ops.node));
                let g = attention_backward_f32(&s.q, &s.k, &s.v, &s.out, &s.lse, &dout, s.shape);
                let AttentionShape { n, m, d, dv, .. } = s.shape;
                let [b, h] = s.batch_heads;
                for (node, values, rows, width) in [
                    (node_q, g.dq, n, d),
                    (node_k, g.dk, m, d),
                    (node_v, g.dv, m, dv),
                ] {
                    if let Some(node) = node {
                        // Token-major, as the head split they flow back through is laid out.
                        let shape = [b, h, rows, width];
                        let values = swap_heads_and_tokens(&values, shape);
                        grads.register::<CpuBackend>(
                            node.id,
                            token_major_to_primitive(values, shape),
                        );
                    }
                }
            },
        );
    }
}

/// One attention op on the autodiff CPU backend: the kernel forward, recorded with [`AttentionBackward`].
fn tracked_attention(
    q: Primitive<CpuAutodiff>,
    k: Primitive<CpuAutodiff>,
    v: Primitive<CpuAutodiff>,
    shape: AttentionShape,
    [b, h]: [usize; 2],
) -> Primitive<CpuAutodiff> {
    let host = |t: &Primitive<CpuAutodiff>| primitive_to_host(t.primitive.clone());
    let (qh, kh, vh) = (host(&q), host(&k), host(&v));
    let (out, lse) = attention_f32_lse(&qh, &kh, &vh, shape);
    let out_shape = [b, h, shape.n, shape.dv];
    let output = token_major_to_primitive(swap_heads_and_tokens(&out, out_shape), out_shape);
    let state = AttentionState {
        q: qh,
        k: kh,
        v: vh,
        out,
        lse,
        shape,
        batch_heads: [b, h],
    };
    record_op(AttentionBackward, [&q, &k, &v], state, output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::cpu::host::host_path_testable;
    use crate::layers::functional::{scaled_dot_product, scaled_dot_product_generic};
    use codi_core::NoiseSource;

    #[test]
    fn scaled_dot_product_agrees_with_burn_on_the_cpu_backend() {
        if !host_path_testable() {
            return;
        }
        type B = CpuBackend;
        let dev = Default::default();
        let mut noise = codi_core::SeededNoise::new(4);
        let q = noise.sample::<B, 4>([2, 4, 70, 16], &dev);
        let k = noise.sample::<B, 4>([2, 4, 9, 16], &dev);
        let v = noise.sample::<B, 4>([2, 4, 9, 16], &dev);
        let ours = scaled_dot_product(q.clone(), k.clone(), v.clone());
        let burns = scaled_dot_product_generic(q, k, v);
        let err = codi_core::tensor_ops::max_abs_diff(ours, burns);
        assert!(err < 1e-5, "max |codi − burn| = {err}");
    }

    #[test]
    fn autodiff_attention_matches_burns_gradients() {
        if !host_path_testable() {
            return;
        }
        type AB = CpuAutodiff;
        let dev = Default::default();
        let mut noise = codi_core::SeededNoise::new(5);
        let mut draw = |shape: [usize; 4]| {
            Tensor::<AB, 4>::from_inner(noise.sample::<CpuBackend, 4>(shape, &dev)).require_grad()
        };
        let (q, k, v) = (draw([2, 3, 70, 8]), draw([2, 3, 9, 8]), draw([2, 3, 9, 6]));
        assert!(
            on_cpu_autodiff_f32(&q),
            "the test must take the kernel's path"
        );
        let w = draw([2, 3, 70, 6]).detach();
        let run = |ours: bool| {
            let (q2, k2, v2) = (q.clone(), k.clone(), v.clone());
            let out = if ours {
                scaled_dot_product(q2, k2, v2)
            } else {
                scaled_dot_product_generic(q2, k2, v2)
            };
            let grads = (out.clone() * w.clone()).sum().backward();
            let grad = |t: &Tensor<AB, 4>| t.grad(&grads).expect("a gradient");
            (out.inner(), grad(&q), grad(&k), grad(&v))
        };
        let (ours, theirs) = (run(true), run(false));
        for (name, a, b) in [
            ("output", ours.0, theirs.0),
            ("dq", ours.1, theirs.1),
            ("dk", ours.2, theirs.2),
            ("dv", ours.3, theirs.3),
        ] {
            let err = codi_core::tensor_ops::max_abs_diff(a, b);
            assert!(err < 1e-5, "{name}: max |codi − burn| = {err}");
        }
    }
}
