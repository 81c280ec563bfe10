//! diffusers `ResnetBlock2D` (time_embedding_norm "default", no up/down inside).

use crate::layers::functional::silu;
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use super::{conv2d, Conv2d, GroupNorm, GroupNormConfig, Linear, LinearConfig};

/// Settings of a [`ResnetBlock2D`] (diffusers' `ResnetBlock2D` arguments).
#[derive(Config, Debug)]
pub struct ResnetBlock2DConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels; when they differ from the input's, the skip path gets a 1×1 convolution.
    pub out_channels: usize,
    /// None: no time embedding (the VAE).
    pub temb_channels: Option<usize>,
    /// GroupNorm groups of both norms (diffusers' `groups`).
    #[config(default = 32)]
    pub groups: usize,
    /// GroupNorm ε of both norms (diffusers' `eps`).
    #[config(default = 1e-5)]
    pub eps: f64,
    /// The block's output (skip + residual) is divided by this (diffusers' `output_scale_factor`).
    #[config(default = 1.0)]
    pub output_scale_factor: f64,
}

/// diffusers' `ResnetBlock2D`: (skip(x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x))) +
/// time_emb_proj(SiLU(temb)))))) / output_scale_factor.
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    /// GroupNorm (followed by SiLU) over the input, opening the residual branch.
    pub norm1: GroupNorm<B>,
    /// First 3×3 convolution of the residual branch, in → out channels.
    pub conv1: Conv2d<B>,
    /// Projection of the SiLU-activated time embedding to out channels, added per channel after conv1 (None
    /// without a time embedding, as in the VAE).
    pub time_emb_proj: Option<Linear<B>>,
    /// GroupNorm (followed by SiLU) before the second convolution.
    pub norm2: GroupNorm<B>,
    /// Second 3×3 convolution of the residual branch, out → out channels.
    pub conv2: Conv2d<B>,
    /// 1×1 convolution on the skip path, present when the channel count changes.
    pub conv_shortcut: Option<Conv2d<B>>,
    /// Divisor of the block's output.
    pub output_scale_factor: f64,
}

impl ResnetBlock2DConfig {
    /// A residual block with these settings (burn's default initialisation; GroupNorm γ = 1, β = 0).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResnetBlock2D<B> {
        let (i, o) = (self.in_channels, self.out_channels);
        ResnetBlock2D {
            norm1: GroupNormConfig::new(self.groups, i)
                .with_epsilon(self.eps)
                .init(device),
            conv1: conv2d(i, o, 3, 1, device),
            time_emb_proj: self
                .temb_channels
                .map(|t| LinearConfig::new(t, o).init(device)),
            norm2: GroupNormConfig::new(self.groups, o)
                .with_epsilon(self.eps)
                .init(device),
            conv2: conv2d(o, o, 3, 1, device),
            conv_shortcut: (i != o).then(|| conv2d(i, o, 1, 1, device)),
            output_scale_factor: self.output_scale_factor,
        }
    }
}

impl<B: Backend> ResnetBlock2D<B> {
    /// x: [batch, in, h, w], temb: [batch, temb_channels] → [batch, out, h, w]
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let mut h = self.conv1.forward(self.norm1.forward_silu(x.clone()));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(silu(temb.clone()));
            let [b, c] = t.dims();
            h = h + t.reshape([b, c, 1, 1]);
        }
        let h = self.conv2.forward(self.norm2.forward_silu(h));
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x),
            None => x,
        };
        let out = skip + h;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out.div_scalar(self.output_scale_factor)
        }
    }
}
