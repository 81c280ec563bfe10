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
        heads: usize,
        layers: usize,
        cross_attention_dim: usize,
        use_linear_projection: bool,
    },
    /// Spatial self-attention with `dim_head` channels per head (`Attn*Block2D`, VAE and UNet2DModel mid block).
    Spatial { dim_head: usize },
}

/// One block's attention layer.
#[derive(Module, Debug)]
pub enum BlockAttention<B: Backend> {
    Transformer(Transformer2DModel<B>),
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
    pub in_channels: usize,
    pub out_channels: usize,
    /// None: no time embedding (VAE).
    pub temb_channels: Option<usize>,
    pub layers: usize,
    pub attention: Option<AttentionKind>,
    pub groups: usize,
    pub eps: f64,
    #[config(default = 1.0)]
    pub output_scale_factor: f64,
    /// Down blocks: add a stride-2 downsampler (with this padding); up blocks: add an upsampler.
    #[config(default = false)]
    pub resample: bool,
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

#[derive(Module, Debug)]
pub struct DownBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<BlockAttention<B>>,
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

#[derive(Module, Debug)]
pub struct MidBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
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

#[derive(Module, Debug)]
pub struct UpBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<BlockAttention<B>>,
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
    pub block_out_channels: &'a [usize],
    pub layers_per_block: &'a [usize],
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
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
