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
    /// Linear layer to twice the inner width, split into the hidden half h and the gate g.
    pub proj: Linear<B>,
    /// Linear layer from the inner width back to `dim`.
    pub out: Linear<B>,
}

impl<B: Backend> FeedForward<B> {
    /// A feed-forward of width `dim` with inner width `dim · mult` (the transformer blocks use mult = 4).
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

/// diffusers' `BasicTransformerBlock`: pre-LayerNorm self-attention, cross-attention to the text and GEGLU
/// feed-forward, each with a residual connection.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    /// LayerNorm before the self-attention.
    pub norm1: LayerNorm<B>,
    /// Self-attention over the tokens.
    pub attn1: Attention<B>,
    /// LayerNorm before the cross-attention.
    pub norm2: LayerNorm<B>,
    /// Cross-attention from the tokens to the text states.
    pub attn2: Attention<B>,
    /// LayerNorm before the feed-forward.
    pub norm3: LayerNorm<B>,
    /// GEGLU feed-forward network.
    pub ff: FeedForward<B>,
}

impl<B: Backend> BasicTransformerBlock<B> {
    /// A block of width `dim` with `heads` heads of `dim_head` channels, cross-attending to states of width
    /// `cross_attention_dim`.
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
    /// 1×1 convolutions on the feature map (SD 1.x).
    Conv(Conv2d<B>),
    /// Linear layers on the tokens (`use_linear_projection`, SD 2.x).
    Linear(Linear<B>),
}

/// Settings of a [`Transformer2DModel`].
#[derive(Config, Debug)]
pub struct Transformer2DConfig {
    /// Channels of the feature map, in and out.
    pub channels: usize,
    /// Attention heads of each transformer block.
    pub heads: usize,
    /// Channels per head; the token width is `heads · dim_head`.
    pub dim_head: usize,
    /// Width of the text states the blocks cross-attend to.
    pub cross_attention_dim: usize,
    /// Number of transformer blocks (diffusers' `num_layers`).
    #[config(default = 1)]
    pub layers: usize,
    /// Groups of the input GroupNorm (diffusers' `norm_num_groups`).
    #[config(default = 32)]
    pub norm_groups: usize,
    /// proj_in and proj_out as linear layers instead of 1×1 convolutions (diffusers'
    /// `use_linear_projection`).
    #[config(default = false)]
    pub use_linear_projection: bool,
}

/// diffusers' `Transformer2DModel` on a feature map: GroupNorm, proj_in, transformer blocks over the h·w
/// tokens, proj_out, plus the input as a residual.
#[derive(Module, Debug)]
pub struct Transformer2DModel<B: Backend> {
    /// GroupNorm over the input feature map (ε = 1e-6).
    pub norm: GroupNorm<B>,
    /// Projection from the channels to the token width.
    pub proj_in: Projection<B>,
    /// The transformer blocks, applied in order.
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    /// Projection from the token width back to the channels.
    pub proj_out: Projection<B>,
}

impl Transformer2DConfig {
    /// A transformer with these settings (burn's default initialisation).
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
