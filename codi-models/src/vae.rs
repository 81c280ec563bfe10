//! diffusers' `AutoencoderKL`: an encoder to a diagonal Gaussian over latents, and a decoder.

use crate::diffusers_json::defaults::{four, groups, one, three};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;

use crate::diffusers_json::{parse, require_default};
use crate::error::ModelError;
use crate::layers::blocks::{AttentionKind, BlockConfig, DownBlock, MidBlock, UpBlock};
use crate::layers::{conv2d, Conv2d, GroupNorm, GroupNormConfig};

/// The AutoencoderKL settings codi implements, named as in diffusers' `config.json`.
#[derive(Config, Debug, PartialEq)]
pub struct AutoencoderKLConfig {
    /// Channels of the input image (diffusers' `in_channels`).
    #[config(default = 3)]
    pub in_channels: usize,
    /// Channels of the decoded image (diffusers' `out_channels`).
    #[config(default = 3)]
    pub out_channels: usize,
    /// Output channels of each encoder level, shallowest first; every level after the first halves the
    /// resolution (diffusers' `block_out_channels`).
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block; decoder blocks have one more (diffusers' `layers_per_block`).
    #[config(default = 1)]
    pub layers_per_block: usize,
    /// Channels of the latent (diffusers' `latent_channels`).
    #[config(default = 4)]
    pub latent_channels: usize,
    /// GroupNorm groups (diffusers' `norm_num_groups`).
    #[config(default = 32)]
    pub norm_num_groups: usize,
    /// Factor latents are multiplied by before the diffusion model sees them, 0.18215 for SD 1.x (diffusers'
    /// `scaling_factor`).
    #[config(default = 0.18215)]
    pub scaling_factor: f64,
}

#[derive(Deserialize)]
struct Json {
    #[serde(default = "three")]
    in_channels: usize,
    #[serde(default = "three")]
    out_channels: usize,
    block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    layers_per_block: usize,
    #[serde(default = "four")]
    latent_channels: usize,
    #[serde(default = "groups")]
    norm_num_groups: usize,
    #[serde(default = "scale")]
    scaling_factor: f64,
    down_block_types: Option<Vec<String>>,
    up_block_types: Option<Vec<String>>,
}
fn scale() -> f64 {
    0.18215
}

impl AutoencoderKLConfig {
    /// Reads diffusers' `config.json` (already parsed); `file` names it in errors. Options codi does not
    /// implement are errors.
    pub fn from_diffusers(value: &Value, file: &Path) -> Result<Self, ModelError> {
        require_default(value, file, "act_fn", &[json!("silu")])?;
        require_default(value, file, "shift_factor", &[json!(0.0)])?;
        require_default(value, file, "latents_mean", &[])?;
        require_default(value, file, "use_quant_conv", &[json!(true)])?;
        require_default(value, file, "use_post_quant_conv", &[json!(true)])?;
        require_default(value, file, "mid_block_add_attention", &[json!(true)])?;
        let j: Json = parse(value, file)?;
        let n = j.block_out_channels.len();
        let blocks_ok = |types: &Option<Vec<String>>, name: &str| {
            types
                .as_ref()
                .is_none_or(|t| t.len() == n && t.iter().all(|s| s == name))
        };
        if n == 0
            || !blocks_ok(&j.down_block_types, "DownEncoderBlock2D")
            || !blocks_ok(&j.up_block_types, "UpDecoderBlock2D")
        {
            return Err(ModelError::Unsupported {
                file: file.to_path_buf(),
                what: "block types other than one DownEncoderBlock2D / UpDecoderBlock2D per block_out_channels entry".into(),
            });
        }
        let config = Self {
            in_channels: j.in_channels,
            out_channels: j.out_channels,
            block_out_channels: j.block_out_channels,
            layers_per_block: j.layers_per_block,
            latent_channels: j.latent_channels,
            norm_num_groups: j.norm_num_groups,
            scaling_factor: j.scaling_factor,
        };
        crate::limits::checked(config, file, Self::check)
    }

    /// Whether codi can build this autoencoder, within [`crate::limits`]. → Ok, or every problem by key
    pub fn check(&self) -> Result<(), String> {
        use crate::limits::*;
        Check::new()
            .levels(&self.block_out_channels, self.norm_num_groups)
            .channels("in_channels", self.in_channels)
            .channels("out_channels", self.out_channels)
            .channels("latent_channels", self.latent_channels)
            .count("layers_per_block", self.layers_per_block, 1, MAX_LAYERS)
            .positive("scaling_factor", self.scaling_factor)
            .finish()
    }

    /// diffusers' `config.json` for this model.
    pub fn to_diffusers(&self) -> Value {
        let n = self.block_out_channels.len();
        json!({
            "_class_name": "AutoencoderKL",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "down_block_types": vec!["DownEncoderBlock2D"; n],
            "up_block_types": vec!["UpDecoderBlock2D"; n],
            "block_out_channels": self.block_out_channels,
            "layers_per_block": self.layers_per_block,
            "act_fn": "silu",
            "latent_channels": self.latent_channels,
            "norm_num_groups": self.norm_num_groups,
            "scaling_factor": self.scaling_factor,
        })
    }

    /// Downsampling factor between pixels and latents.
    pub fn factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// Stable Diffusion 1.5's VAE.
    pub fn sd15() -> Self {
        Self::new(vec![128, 256, 512, 512]).with_layers_per_block(2)
    }

    fn block(&self, i: usize, o: usize, layers: usize) -> BlockConfig {
        BlockConfig::new(i, o, layers, self.norm_num_groups, 1e-6)
    }

    fn mid(&self) -> BlockConfig {
        let c = *self.block_out_channels.last().expect("at least one block");
        BlockConfig::new(c, c, 1, self.norm_num_groups, 1e-6)
            .with_attention(Some(AttentionKind::Spatial { dim_head: c }))
    }

    /// A randomly initialised autoencoder with these settings.
    pub fn init<B: Backend>(&self, device: &B::Device) -> AutoencoderKL<B> {
        let ch = &self.block_out_channels;
        let n = ch.len();
        let l = self.latent_channels;
        let norm = |c| {
            GroupNormConfig::new(self.norm_num_groups, c)
                .with_epsilon(1e-6)
                .init(device)
        };
        let encoder = Encoder {
            conv_in: conv2d(self.in_channels, ch[0], 3, 1, device),
            down_blocks: (0..n)
                .map(|i| {
                    self.block(
                        if i == 0 { ch[0] } else { ch[i - 1] },
                        ch[i],
                        self.layers_per_block,
                    )
                    .with_resample(i + 1 < n)
                    .with_downsample_padding(0)
                    .init_down(device)
                })
                .collect(),
            mid_block: self.mid().init_mid(device),
            conv_norm_out: norm(ch[n - 1]),
            conv_out: conv2d(ch[n - 1], 2 * l, 3, 1, device),
        };
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let decoder = Decoder {
            conv_in: conv2d(l, rev[0], 3, 1, device),
            mid_block: self.mid().init_mid(device),
            up_blocks: (0..n)
                .map(|i| {
                    self.block(0, rev[i], self.layers_per_block + 1)
                        .with_prev_output_channels(if i == 0 { rev[0] } else { rev[i - 1] })
                        .with_with_skips(false)
                        .with_resample(i + 1 < n)
                        .init_up(device)
                })
                .collect(),
            conv_norm_out: norm(ch[0]),
            conv_out: conv2d(ch[0], self.out_channels, 3, 1, device),
        };
        AutoencoderKL {
            encoder,
            decoder,
            quant_conv: conv2d(2 * l, 2 * l, 1, 1, device),
            post_quant_conv: conv2d(l, l, 1, 1, device),
            scaling_factor: self.scaling_factor,
        }
    }
}

/// diffusers' VAE `Encoder`: image → moments (mean ‖ logvar), before `quant_conv`.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// 3×3 input convolution from the image to the first level's channels.
    pub conv_in: Conv2d<B>,
    /// Down blocks without time embedding or attention, shallowest first; all but the last end in a
    /// downsampler.
    pub down_blocks: Vec<DownBlock<B>>,
    /// Mid block: resnet, single-head spatial self-attention, resnet.
    pub mid_block: MidBlock<B>,
    /// GroupNorm (followed by SiLU) before the output convolution.
    pub conv_norm_out: GroupNorm<B>,
    /// 3×3 convolution to 2 × latent channels (mean and log-variance).
    pub conv_out: Conv2d<B>,
}

/// diffusers' VAE `Decoder`: latent (after `post_quant_conv`) → image.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// 3×3 input convolution from the latent to the deepest level's channels.
    pub conv_in: Conv2d<B>,
    /// Mid block: resnet, single-head spatial self-attention, resnet.
    pub mid_block: MidBlock<B>,
    /// Up blocks without skips, deepest first; all but the last end in a 2× upsampler.
    pub up_blocks: Vec<UpBlock<B>>,
    /// GroupNorm (followed by SiLU) before the output convolution.
    pub conv_norm_out: GroupNorm<B>,
    /// 3×3 output convolution to the image's channels.
    pub conv_out: Conv2d<B>,
}

/// diffusers' `AutoencoderKL`: [`Self::encode`] maps images to a [`DiagonalGaussian`] over latents,
/// [`Self::decode`] maps latents back to images.
#[derive(Module, Debug)]
pub struct AutoencoderKL<B: Backend> {
    /// Image → moments.
    pub encoder: Encoder<B>,
    /// Latent → image.
    pub decoder: Decoder<B>,
    /// 1×1 convolution on the encoder's moments.
    pub quant_conv: Conv2d<B>,
    /// 1×1 convolution on the latent, before the decoder.
    pub post_quant_conv: Conv2d<B>,
    /// Factor latents are multiplied by before the diffusion model sees them; [`Self::decode`] takes latents
    /// without it (divided back).
    pub scaling_factor: f64,
}

/// A diagonal Gaussian over latents.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian<B: Backend> {
    /// [batch, latent, h, w]
    pub mean: Tensor<B, 4>,
    /// log σ², clamped to [−30, 20] as in diffusers. [batch, latent, h, w]
    pub logvar: Tensor<B, 4>,
}

impl<B: Backend> DiagonalGaussian<B> {
    /// The distribution's mode, its mean. → [batch, latent, h, w]
    pub fn mode(&self) -> Tensor<B, 4> {
        self.mean.clone()
    }

    /// σ = exp(logvar / 2). → [batch, latent, h, w]
    pub fn std(&self) -> Tensor<B, 4> {
        self.logvar.clone().mul_scalar(0.5).exp()
    }

    /// mean + std·noise. noise: [batch, latent, h, w] ~ N(0, I)
    pub fn sample(&self, noise: Tensor<B, 4>) -> Tensor<B, 4> {
        self.mean.clone() + self.std() * noise
    }

    /// KL(q ‖ N(0, I)) summed over latent dimensions, per sample. → \[batch\]
    pub fn kl(&self) -> Tensor<B, 1> {
        let var = self.logvar.clone().exp();
        let kl = (self.mean.clone().powi_scalar(2) + var - self.logvar.clone())
            .sub_scalar(1.0)
            .mul_scalar(0.5);
        let b = kl.dims()[0];
        kl.reshape([b as i32, -1]).sum_dim(1).squeeze_dim(1)
    }
}

impl<B: Backend> AutoencoderKL<B> {
    /// Channels of the latent space.
    pub fn latent_channels(&self) -> usize {
        self.post_quant_conv.weight.dims()[0]
    }

    /// Pixels per latent along each side.
    pub fn factor(&self) -> usize {
        1 << (self.encoder.down_blocks.len() - 1)
    }

    /// The raw moments (mean ‖ logvar). x: [batch, in, H, W] → [batch, 2·latent, H/f, W/f]
    pub fn moments(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let e = &self.encoder;
        let mut h = e.conv_in.forward(x);
        for block in &e.down_blocks {
            h = block.forward(h, None, None).0;
        }
        let h = e.mid_block.forward(h, None, None);
        let h = e.conv_out.forward(e.conv_norm_out.forward_silu(h));
        self.quant_conv.forward(h)
    }

    /// x: [batch, in, H, W] in [−1, 1] → the posterior over latents.
    pub fn encode(&self, x: Tensor<B, 4>) -> DiagonalGaussian<B> {
        let m = self.moments(x);
        let l = m.dims()[1] / 2;
        let mut parts = m.split(l, 1);
        let logvar = parts.pop().expect("two halves").clamp(-30.0, 20.0);
        let mean = parts.pop().expect("two halves");
        DiagonalGaussian { mean, logvar }
    }

    /// z: [batch, latent, h, w] (unscaled) → [batch, out, h·f, w·f]
    pub fn decode(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let d = &self.decoder;
        let h = d.conv_in.forward(self.post_quant_conv.forward(z));
        let mut h = d.mid_block.forward(h, None, None);
        for block in &d.up_blocks {
            h = block.forward(h, None, None, None);
        }
        d.conv_out.forward(d.conv_norm_out.forward_silu(h))
    }

    /// Builds the autoencoder from a diffusers folder: `config.json` and safetensors weights.
    pub fn from_diffusers_dir(dir: &Path, device: &B::Device) -> Result<Self, ModelError> {
        crate::io::load_dir(
            dir,
            AutoencoderKLConfig::from_diffusers,
            |c| c.init(device),
            &Default::default(),
        )
    }
}
