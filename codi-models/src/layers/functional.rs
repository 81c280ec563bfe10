//! Parameter-free ops of the networks: SiLU, the GEGLU gate, scaled dot-product attention, and NCHW
//! activations as tokens and back. Each takes the host kernel where it serves ([`super::cpu`]) and burn's
//! op otherwise.

use burn::tensor::activation::gelu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{activation, backend::Backend, Tensor};

use super::cpu;

/// x·σ(x). x: any shape → same shape
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    cpu::silu::forward(x).unwrap_or_else(activation::silu)
}

/// a · gelu(g) for h = [a | g] along the last axis. h: [b, n, 2·inner] → [b, n, inner]
pub fn geglu<B: Backend>(h: Tensor<B, 3>) -> Tensor<B, 3> {
    cpu::geglu::forward(h).unwrap_or_else(geglu_generic)
}

/// [`geglu`] through burn's ops.
pub fn geglu_generic<B: Backend>(h: Tensor<B, 3>) -> Tensor<B, 3> {
    let inner = h.dims()[2] / 2;
    let mut parts = h.split(inner, 2);
    let gate = parts.pop().expect("two halves");
    let hidden = parts.pop().expect("two halves");
    hidden * gelu(gate)
}

/// softmax(q·kᵀ/√d)·v. q: [b, h, n, d], k: [b, h, m, d], v: [b, h, m, dv] → [b, h, n, dv]
pub fn scaled_dot_product<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    cpu::attention::forward(q, k, v).unwrap_or_else(|(q, k, v)| scaled_dot_product_generic(q, k, v))
}

/// [`scaled_dot_product`] through burn's op.
pub fn scaled_dot_product_generic<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    attention(q, k, v, None, None, AttentionModuleOptions::default())
}

/// Channels to tokens: [b, c, n] → [b, n, c] (row-major on the CPU fast path, a view elsewhere).
pub fn channels_to_tokens<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    cpu::transpose::forward(x).unwrap_or_else(|x| x.swap_dims(1, 2))
}

/// Tokens back to channels: [b, n, c] → [b, c, n] (row-major on the CPU fast path, a view elsewhere).
pub fn tokens_to_channels<B: Backend>(t: Tensor<B, 3>) -> Tensor<B, 3> {
    cpu::transpose::forward(t).unwrap_or_else(|t| t.swap_dims(1, 2))
}
