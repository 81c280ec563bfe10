//! The down, mid and up blocks of diffusers' UNets and VAE, one struct each: a block without attention has an
//! empty `attentions` list (DownBlock2D vs CrossAttnDownBlock2D), so keys match diffusers' as they are.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use super::attention::{Attention, AttentionConfig};
use super::resnet::{ResnetBlock2D, ResnetBlock2DConfig};
use super::sampling::{Downsample2D, Upsample2D};
use super::transformer::{Transformer2DConfig, Transformer2DModel};

/// The attention layer a block puts after each resnet.
#[derive(Config, Debug, PartialEq)]
pub enum AttentionKind {
    /// Transformer2DModel with cross-attention to the text (`CrossAttn*Block2D`, `UNetMidBlock2DCrossAttn`).
    Transformer {
        /// Attention heads; each has channels / heads channels.
        heads: usize,
        /// Transformer blocks in the Transformer2DModel (the UNet's `transformer_layers_per_block`).
        layers: usize,
        /// Width of the text states the transformer cross-attends to.
        cross_attention_dim: usize,
        /// proj_in / proj_out as linear layers instead of 1×1 convolutions.
        use_linear_projection: bool,
    },
    /// Spatial self-attention with `dim_head` channels per head (`Attn*Block2D`, VAE and UNet2DModel mid block).
    Spatial {
        /// Channels per head; the layer has channels / dim_head heads.
        dim_head: usize,
    },
}

/// One block's attention layer.
#[derive(Module, Debug)]
pub enum BlockAttention<B: Backend> {
    /// A Transformer2DModel with self- and cross-attention.
    Transformer(Transformer2DModel<B>),
    /// Spatial self-attention (GroupNorm first, residual added).
    Spatial(Attention<B>),
}

impl<B: Backend> BlockAttention<B> {
    /// x: [batch, c, h, w], context: [batch, m, cross_dim] (cross-attention only) → [batch, c, h, w]
    pub fn forward(&self, x: Tensor<B, 4>, context: Option<&Tensor<B, 3>>) -> Tensor<B, 4> {
        match self {
            Self::Transformer(t) => t.forward(
                x,
                context
                    .expect("a cross-attention block needs encoder_hidden_states")
                    .clone(),
            ),
            Self::Spatial(a) => a.forward_spatial(x),
        }
    }
}

fn init_attention<B: Backend>(
    kind: &Option<AttentionKind>,
    channels: usize,
    groups: usize,
    eps: f64,
    rescale: f64,
    device: &B::Device,
) -> Option<BlockAttention<B>> {
    kind.as_ref().map(|k| match *k {
        AttentionKind::Transformer {
            heads,
            layers,
            cross_attention_dim,
            use_linear_projection,
        } => BlockAttention::Transformer(
            Transformer2DConfig::new(channels, heads, channels / heads, cross_attention_dim)
                .with_layers(layers)
                .with_norm_groups(groups)
                .with_use_linear_projection(use_linear_projection)
                .init(device),
        ),
        AttentionKind::Spatial { dim_head } => BlockAttention::Spatial(
            AttentionConfig::new(channels, channels / dim_head, dim_head)
                .with_spatial_norm_groups(Some(groups))
                .with_qkv_bias(true)
                .with_norm_eps(eps)
                .with_rescale_output_factor(rescale)
                .init(device),
        ),
    })
}

/// Settings shared by every block of a network.
#[derive(Config, Debug)]
pub struct BlockConfig {
    /// Down and mid blocks: the input channels. Up blocks: the channels of the skip the last resnet takes
    /// (the matching down block's input channels; diffusers' `in_channels`).
    pub in_channels: usize,
    /// Output channels of every resnet of a down or up block (mid blocks keep `in_channels`).
    pub out_channels: usize,
    /// None: no time embedding (VAE).
    pub temb_channels: Option<usize>,
    /// Resnets in a down or up block; in a mid block, the (attention, resnet) pairs after its first resnet.
    pub layers: usize,
    /// The attention layer after each resnet (in a mid block: between resnets); None for none.
    pub attention: Option<AttentionKind>,
    /// GroupNorm groups of the resnets and attention layers.
    pub groups: usize,
    /// GroupNorm ε of the resnets and of the spatial attention.
    pub eps: f64,
    /// Divisor of every resnet's output, and of the spatial attention's (diffusers' `output_scale_factor`).
    #[config(default = 1.0)]
    pub output_scale_factor: f64,
    /// Down blocks: add a stride-2 downsampler (with this padding); up blocks: add an upsampler.
    #[config(default = false)]
    pub resample: bool,
    /// Padding of the downsampler's convolution: 1 in the UNets; 0 first pads one zero column and row on the
    /// right and bottom (the VAE).
    #[config(default = 1)]
    pub downsample_padding: usize,
    /// Up blocks: channels of the previous up block's output (the first resnet's input).
    #[config(default = 0)]
    pub prev_output_channels: usize,
    /// Up blocks: whether skips from the down path are concatenated (UNet) or not (VAE decoder).
    #[config(default = true)]
    pub with_skips: bool,
}

impl BlockConfig {
    fn resnet<B: Backend>(&self, i: usize, o: usize, device: &B::Device) -> ResnetBlock2D<B> {
        ResnetBlock2DConfig::new(i, o)
            .with_temb_channels(self.temb_channels)
            .with_groups(self.groups)
            .with_eps(self.eps)
            .with_output_scale_factor(self.output_scale_factor)
            .init(device)
    }

    fn attentions<B: Backend>(
        &self,
        n: usize,
        channels: usize,
        device: &B::Device,
    ) -> Vec<BlockAttention<B>> {
        (0..n)
            .filter_map(|_| {
                init_attention(
                    &self.attention,
                    channels,
                    self.groups,
                    self.eps,
                    self.output_scale_factor,
                    device,
                )
            })
            .collect()
    }

    /// Down block: `layers` resnets (the first from `in_channels`), each followed by its attention, then a
    /// stride-2 downsampler when `resample`.
    pub fn init_down<B: Backend>(&self, device: &B::Device) -> DownBlock<B> {
        let (i, o) = (self.in_channels, self.out_channels);
        DownBlock {
            resnets: (0..self.layers)
                .map(|l| self.resnet(if l == 0 { i } else { o }, o, device))
                .collect(),
            attentions: self.attentions(self.layers, o, device),
            downsamplers: if self.resample {
                vec![Downsample2D::new(o, o, self.downsample_padding, device)]
            } else {
                vec![]
            },
        }
    }

    /// Mid block on `in_channels`: resnet, then (attention, resnet) × layers.
    pub fn init_mid<B: Backend>(&self, device: &B::Device) -> MidBlock<B> {
        let c = self.in_channels;
        MidBlock {
            resnets: (0..=self.layers)
                .map(|_| self.resnet(c, c, device))
                .collect(),
            attentions: self.attentions(self.layers, c, device),
        }
    }

    /// Up block: `in_channels` is the channel count of the skips' deepest level (diffusers' `in_channels`).
    pub fn init_up<B: Backend>(&self, device: &B::Device) -> UpBlock<B> {
        let o = self.out_channels;
        let resnets = (0..self.layers)
            .map(|l| {
                let res_in = if l == 0 { self.prev_output_channels } else { o };
                let skip = if !self.with_skips {
                    0
                } else if l == self.layers - 1 {
                    self.in_channels
                } else {
                    o
                };
                self.resnet(res_in + skip, o, device)
            })
            .collect();
        UpBlock {
            resnets,
            attentions: self.attentions(self.layers, o, device),
            upsamplers: if self.resample {
                vec![Upsample2D::new(o, o, device)]
            } else {
                vec![]
            },
        }
    }
}

/// diffusers' `DownBlock2D`, `CrossAttnDownBlock2D`, `AttnDownBlock2D` or `DownEncoderBlock2D`: resnets, each
/// optionally followed by attention, then an optional downsampler.
#[derive(Module, Debug)]
pub struct DownBlock<B: Backend> {
    /// Residual blocks, applied in order.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// Attention after each resnet (empty in blocks without attention).
    pub attentions: Vec<BlockAttention<B>>,
    /// The stride-2 downsampler at the end (empty in the last block).
    pub downsamplers: Vec<Downsample2D<B>>,
}

impl<B: Backend> DownBlock<B> {
    /// x: [batch, in, h, w] → ([batch, out, h', w'], the skip states in order)
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        temb: Option<&Tensor<B, 2>>,
        context: Option<&Tensor<B, 3>>,
    ) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, temb);
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(x, context);
            }
            states.push(x.clone());
        }
        for down in &self.downsamplers {
            x = down.forward(x);
            states.push(x.clone());
        }
        (x, states)
    }
}

/// diffusers' `UNetMidBlock2DCrossAttn` or `UNetMidBlock2D`: a resnet, then (attention, resnet) pairs.
#[derive(Module, Debug)]
pub struct MidBlock<B: Backend> {
    /// Residual blocks, one more than the attention layers.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// Attention between consecutive resnets.
    pub attentions: Vec<BlockAttention<B>>,
}

impl<B: Backend> MidBlock<B> {
    /// x: [batch, c, h, w] → [batch, c, h, w]
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb: Option<&Tensor<B, 2>>,
        context: Option<&Tensor<B, 3>>,
    ) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, temb);
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = resnet.forward(attn.forward(x, context), temb);
        }
        x
    }
}

/// diffusers' `UpBlock2D`, `CrossAttnUpBlock2D`, `AttnUpBlock2D` or `UpDecoderBlock2D`: resnets over the
/// features concatenated with a skip, each optionally followed by attention, then an optional upsampler.
#[derive(Module, Debug)]
pub struct UpBlock<B: Backend> {
    /// Residual blocks, each taking the running features concatenated with one skip (no skip in the VAE
    /// decoder).
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// Attention after each resnet (empty in blocks without attention).
    pub attentions: Vec<BlockAttention<B>>,
    /// The 2× upsampler at the end (empty in the last block).
    pub upsamplers: Vec<Upsample2D<B>>,
}

impl<B: Backend> UpBlock<B> {
    /// x: [batch, prev, h, w]; `skips` is the down path's stack, popped from the end (one per resnet; None for
    /// the VAE decoder); `upsample_size` overrides 2× (odd sizes). → [batch, out, h', w']
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        mut skips: Option<&mut Vec<Tensor<B, 4>>>,
        temb: Option<&Tensor<B, 2>>,
        context: Option<&Tensor<B, 3>>,
    ) -> Tensor<B, 4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            if let Some(stack) = skips.as_deref_mut() {
                let skip = stack
                    .pop()
                    .expect("the down path left one skip per up-block resnet");
                x = Tensor::cat(vec![x, skip], 1);
            }
            x = resnet.forward(x, temb);
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(x, context);
            }
        }
        for up in &self.upsamplers {
            // Match the next skip's size when the input was not a multiple of 2ⁿ.
            let size = skips.as_deref().and_then(|s| s.last()).map(|t| {
                let [_, _, h, w] = t.dims();
                [h, w]
            });
            x = up.forward(x, size);
        }
        x
    }
}

/// The block layout every diffusers UNet shares: channels per level, resnets per level, which levels attend.
pub struct UNetLayout<'a> {
    /// Output channels of each level, shallowest first (diffusers' `block_out_channels`).
    pub block_out_channels: &'a [usize],
    /// Resnets of each level's down block; its up block has one more.
    pub layers_per_block: &'a [usize],
    /// Width of the time embedding every resnet receives.
    pub temb_channels: usize,
    /// GroupNorm groups (diffusers' `norm_num_groups`).
    pub groups: usize,
    /// GroupNorm ε of the resnets (diffusers' `norm_eps`).
    pub eps: f64,
    /// Padding of the down blocks' downsampler convolutions (diffusers' `downsample_padding`).
    pub downsample_padding: usize,
}

impl UNetLayout<'_> {
    /// Down block i: `attention(i)` is its attention layer, if any.
    pub fn down(&self, attention: impl Fn(usize) -> Option<AttentionKind>) -> Vec<BlockConfig> {
        let ch = self.block_out_channels;
        let n = ch.len();
        (0..n)
            .map(|i| {
                BlockConfig::new(
                    if i == 0 { ch[0] } else { ch[i - 1] },
                    ch[i],
                    self.layers_per_block[i],
                    self.groups,
                    self.eps,
                )
                .with_temb_channels(Some(self.temb_channels))
                .with_attention(attention(i))
                .with_resample(i + 1 < n)
                .with_downsample_padding(self.downsample_padding)
            })
            .collect()
    }

    /// Up block i (deepest first); `attention(i)` is its attention layer, given the up-block index.
    pub fn up(&self, attention: impl Fn(usize) -> Option<AttentionKind>) -> Vec<BlockConfig> {
        let n = self.block_out_channels.len();
        let rev: Vec<usize> = self.block_out_channels.iter().rev().copied().collect();
        (0..n)
            .map(|i| {
                BlockConfig::new(
                    rev[(i + 1).min(n - 1)],
                    rev[i],
                    self.layers_per_block[n - 1 - i] + 1,
                    self.groups,
                    self.eps,
                )
                .with_temb_channels(Some(self.temb_channels))
                .with_attention(attention(i))
                .with_resample(i + 1 < n)
                .with_prev_output_channels(if i == 0 {
                    rev[0]
                } else {
                    rev[i - 1]
                })
            })
            .collect()
    }
}
