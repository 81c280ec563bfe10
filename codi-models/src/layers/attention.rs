//! diffusers `Attention` (scaled dot-product attention with q/k/v/out projections), in its two uses:
//! token attention inside transformer blocks, and the spatial self-attention block of the VAE and UNet2DModel
//! (GroupNorm first, residual connection).

use crate::layers::functional::{channels_to_tokens, scaled_dot_product, tokens_to_channels};
use crate::layers::{GroupNorm, GroupNormConfig, Linear, LinearConfig};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

/// Settings of an [`Attention`] layer (diffusers' `Attention` arguments).
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Channels of the query input and of the output.
    pub query_dim: usize,
    /// None: self-attention (keys and values from the query input).
    pub cross_attention_dim: Option<usize>,
    /// Number of attention heads.
    pub heads: usize,
    /// Channels per head; the q/k/v projections are `heads · dim_head` wide.
    pub dim_head: usize,
    /// q/k/v projections with bias (the spatial attention blocks).
    #[config(default = false)]
    pub qkv_bias: bool,
    /// Spatial form: GroupNorm groups applied to the 4D input, residual added, output divided by rescale.
    pub spatial_norm_groups: Option<usize>,
    /// ε of the spatial form's GroupNorm.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// The spatial form divides its output (residual included) by this (diffusers' `rescale_output_factor`).
    #[config(default = 1.0)]
    pub rescale_output_factor: f64,
}

/// diffusers' `Attention`: multi-head scaled dot-product attention between q/k/v and output projections, over
/// tokens ([`Self::forward`]) or as a spatial self-attention block ([`Self::forward_spatial`]).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// GroupNorm over the input of the spatial form (None in transformer blocks).
    pub group_norm: Option<GroupNorm<B>>,
    /// Query projection, query_dim → heads·dim_head.
    pub to_q: Linear<B>,
    /// Key projection of the context (the input itself for self-attention) → heads·dim_head.
    pub to_k: Linear<B>,
    /// Value projection of the context (the input itself for self-attention) → heads·dim_head.
    pub to_v: Linear<B>,
    /// `to_out.0` (to_out.1 is dropout).
    pub to_out: Vec<Linear<B>>,
    /// Number of heads the projections are split into.
    pub heads: usize,
    /// Divisor of the spatial form's output.
    pub rescale_output_factor: f64,
}

impl AttentionConfig {
    /// An attention layer with these settings (burn's default initialisation).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        let inner = self.heads * self.dim_head;
        let kv = self.cross_attention_dim.unwrap_or(self.query_dim);
        let lin = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        Attention {
            group_norm: self.spatial_norm_groups.map(|g| {
                GroupNormConfig::new(g, self.query_dim)
                    .with_epsilon(self.norm_eps)
                    .init(device)
            }),
            to_q: lin(self.query_dim, inner, self.qkv_bias),
            to_k: lin(kv, inner, self.qkv_bias),
            to_v: lin(kv, inner, self.qkv_bias),
            to_out: vec![lin(inner, self.query_dim, true)],
            heads: self.heads,
            rescale_output_factor: self.rescale_output_factor,
        }
    }
}

impl<B: Backend> Attention<B> {
    /// Token attention. x: [batch, n, query_dim], context: [batch, m, cross_dim] (None: x) → [batch, n, query_dim]
    pub fn forward(&self, x: Tensor<B, 3>, context: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let ctx = context.unwrap_or_else(|| x.clone());
        let q = self.split_heads(self.to_q.forward(x));
        let k = self.split_heads(self.to_k.forward(ctx.clone()));
        let v = self.split_heads(self.to_v.forward(ctx));
        let o = scaled_dot_product(q, k, v); // [b, h, n, d]
        let [b, h, n, d] = o.dims();
        let o = o.swap_dims(1, 2).reshape([b, n, h * d]);
        self.to_out[0].forward(o)
    }

    /// Spatial self-attention block. x: [batch, c, h, w] → [batch, c, h, w]
    pub fn forward_spatial(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let residual = x.clone();
        let x = match &self.group_norm {
            Some(n) => n.forward(x),
            None => x,
        };
        let tokens = channels_to_tokens(x.reshape([b, c, h * w]));
        let out = tokens_to_channels(self.forward(tokens, None)).reshape([b, c, h, w]);
        let out = out + residual;
        if self.rescale_output_factor == 1.0 {
            out
        } else {
            out.div_scalar(self.rescale_output_factor)
        }
    }

    /// [b, n, heads·d] → [b, heads, n, d]
    fn split_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, n, inner] = x.dims();
        x.reshape([b, n, self.heads, inner / self.heads])
            .swap_dims(1, 2)
    }
}
