//! diffusers `ResnetBlock2D` (time_embedding_norm "default", no up/down inside).

use crate::layers::functional::silu;
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use super::{conv2d, Conv2d, GroupNorm, GroupNormConfig, Linear, LinearConfig};

#[derive(Config, Debug)]
pub struct ResnetBlock2DConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// None: no time embedding (the VAE).
    pub temb_channels: Option<usize>,
    #[config(default = 32)]
    pub groups: usize,
    #[config(default = 1e-5)]
    pub eps: f64,
    #[config(default = 1.0)]
    pub output_scale_factor: f64,
}

#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    pub norm1: GroupNorm<B>,
    pub conv1: Conv2d<B>,
    pub time_emb_proj: Option<Linear<B>>,
    pub norm2: GroupNorm<B>,
    pub conv2: Conv2d<B>,
    pub conv_shortcut: Option<Conv2d<B>>,
    pub output_scale_factor: f64,
}

impl ResnetBlock2DConfig {
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
