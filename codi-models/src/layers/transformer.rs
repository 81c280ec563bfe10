//! diffusers `Transformer2DModel` with `BasicTransformerBlock`s (self-attention, cross-attention to the text,
//! GEGLU feed-forward), as used in SD's cross-attention UNet blocks.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use super::attention::{Attention, AttentionConfig};
use super::functional::{channels_to_tokens, geglu, tokens_to_channels};
use super::{
    conv2d, Conv2d, GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};

/// GEGLU feed-forward: h, g = proj(x).chunk(2); out(h · gelu(g)). Keys `ff.net.0.proj` and `ff.net.2` are
/// mapped to `ff.proj` and `ff.out` by the weight loader.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    pub proj: Linear<B>,
    pub out: Linear<B>,
}

impl<B: Backend> FeedForward<B> {
    pub fn new(dim: usize, mult: usize, device: &B::Device) -> Self {
        let inner = dim * mult;
        Self {
            proj: LinearConfig::new(dim, inner * 2).init(device),
            out: LinearConfig::new(inner, dim).init(device),
        }
    }

    /// x: [batch, n, dim] → [batch, n, dim]
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.out.forward(geglu(self.proj.forward(x)))
    }
}

/// ε of the transformer blocks' LayerNorms (diffusers' default).
const NORM_EPS: f64 = 1e-5;

#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn1: Attention<B>,
    pub norm2: LayerNorm<B>,
    pub attn2: Attention<B>,
    pub norm3: LayerNorm<B>,
    pub ff: FeedForward<B>,
}

impl<B: Backend> BasicTransformerBlock<B> {
    pub fn new(
        dim: usize,
        heads: usize,
        dim_head: usize,
        cross_attention_dim: usize,
        device: &B::Device,
    ) -> Self {
        let ln = || {
            LayerNormConfig::new(dim)
                .with_epsilon(NORM_EPS)
                .init(device)
        };
        Self {
            norm1: ln(),
            attn1: AttentionConfig::new(dim, heads, dim_head).init(device),
            norm2: ln(),
            attn2: AttentionConfig::new(dim, heads, dim_head)
                .with_cross_attention_dim(Some(cross_attention_dim))
                .init(device),
            norm3: ln(),
            ff: FeedForward::new(dim, 4, device),
        }
    }

    /// x: [batch, n, dim], context: [batch, m, cross_dim] → [batch, n, dim]
    pub fn forward(&self, x: Tensor<B, 3>, context: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.attn1.forward(self.norm1.forward(x.clone()), None) + x;
        let x = self
            .attn2
            .forward(self.norm2.forward(x.clone()), Some(context))
            + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}

/// The projection in and out of token space: 1×1 convs, or linear layers (`use_linear_projection`).
#[derive(Module, Debug)]
pub enum Projection<B: Backend> {
    Conv(Conv2d<B>),
    Linear(Linear<B>),
}

#[derive(Config, Debug)]
pub struct Transformer2DConfig {
    pub channels: usize,
    pub heads: usize,
    pub dim_head: usize,
    pub cross_attention_dim: usize,
    #[config(default = 1)]
    pub layers: usize,
    #[config(default = 32)]
    pub norm_groups: usize,
    #[config(default = false)]
    pub use_linear_projection: bool,
}

#[derive(Module, Debug)]
pub struct Transformer2DModel<B: Backend> {
    pub norm: GroupNorm<B>,
    pub proj_in: Projection<B>,
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    pub proj_out: Projection<B>,
}

impl Transformer2DConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Transformer2DModel<B> {
        let inner = self.heads * self.dim_head;
        let proj = |i, o| {
            if self.use_linear_projection {
                Projection::Linear(LinearConfig::new(i, o).init(device))
            } else {
                Projection::Conv(conv2d(i, o, 1, 1, device))
            }
        };
        Transformer2DModel {
            norm: GroupNormConfig::new(self.norm_groups, self.channels)
                .with_epsilon(1e-6)
                .init(device),
            proj_in: proj(self.channels, inner),
            transformer_blocks: (0..self.layers)
                .map(|_| {
                    BasicTransformerBlock::new(
                        inner,
                        self.heads,
                        self.dim_head,
                        self.cross_attention_dim,
                        device,
                    )
                })
                .collect(),
            proj_out: proj(inner, self.channels),
        }
    }
}

impl<B: Backend> Transformer2DModel<B> {
    /// x: [batch, c, h, w], context: [batch, m, cross_dim] → [batch, c, h, w]
    pub fn forward(&self, x: Tensor<B, 4>, context: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let residual = x.clone();
        let x = self.norm.forward(x);
        let to_tokens = |x: Tensor<B, 4>| {
            let ch = x.dims()[1];
            channels_to_tokens(x.reshape([b, ch, h * w]))
        };
        let mut t = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(x)),
            Projection::Linear(lin) => lin.forward(to_tokens(x)),
        };
        for block in &self.transformer_blocks {
            t = block.forward(t, context.clone());
        }
        let inner = t.dims()[2];
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(tokens_to_channels(t).reshape([b, inner, h, w])),
            Projection::Linear(lin) => tokens_to_channels(lin.forward(t)).reshape([b, c, h, w]),
        };
        out + residual
    }
}
