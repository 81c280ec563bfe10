//! diffusers' `UNet2DModel`: the unconditional (pixel-space) UNet with spatial self-attention blocks.

use crate::diffusers_json::defaults::{eight, eps, groups, one, onef, three, two, yes};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;

use crate::diffusers_json::{parse, require_default};
use crate::error::ModelError;
use crate::layers::blocks::{AttentionKind, BlockConfig, DownBlock, MidBlock, UNetLayout, UpBlock};
use crate::layers::embeddings::{timestep_features, TimestepEmbedding, TimestepEmbeddingConfig};
use crate::layers::{conv2d, Conv2d, GroupNorm, GroupNormConfig};

/// A block of [`UNet2DModel`], as diffusers names it: the `Down` kinds in `down_block_types`, the `Up` kinds
/// in `up_block_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UNet2DBlockType {
    /// Down block of resnets only.
    DownBlock2D,
    /// Down block with spatial self-attention after each resnet.
    AttnDownBlock2D,
    /// Up block of resnets only.
    UpBlock2D,
    /// Up block with spatial self-attention after each resnet.
    AttnUpBlock2D,
}

/// The UNet2DModel settings codi implements, named as in diffusers' `config.json`.
#[derive(Config, Debug, PartialEq)]
pub struct UNet2DModelConfig {
    /// Channels of the input image (diffusers' `in_channels`).
    #[config(default = 3)]
    pub in_channels: usize,
    /// Channels of the output (diffusers' `out_channels`).
    #[config(default = 3)]
    pub out_channels: usize,
    /// Timestep features as [cos, sin] rather than [sin, cos] (diffusers' `flip_sin_to_cos`).
    #[config(default = true)]
    pub flip_sin_to_cos: bool,
    /// Shift of the timestep features' frequency denominator (diffusers' `freq_shift`).
    #[config(default = 0.0)]
    pub freq_shift: f64,
    /// The down blocks, shallowest first (diffusers' `down_block_types`).
    pub down_block_types: Vec<UNet2DBlockType>,
    /// The up blocks, deepest first (diffusers' `up_block_types`).
    pub up_block_types: Vec<UNet2DBlockType>,
    /// Output channels of each level, shallowest first (diffusers' `block_out_channels`).
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block; up blocks have one more (diffusers' `layers_per_block`).
    #[config(default = 2)]
    pub layers_per_block: usize,
    /// Padding of the downsamplers' convolutions (diffusers' `downsample_padding`).
    #[config(default = 1)]
    pub downsample_padding: usize,
    /// Divisor of the mid block's resnet and attention outputs (diffusers' `mid_block_scale_factor`).
    #[config(default = 1.0)]
    pub mid_block_scale_factor: f64,
    /// Channels per attention head (in this class diffusers reads `attention_head_dim` as the head size).
    #[config(default = 8)]
    pub attention_head_dim: usize,
    /// GroupNorm groups of the resnets, the attention layers and the output norm (diffusers'
    /// `norm_num_groups`).
    #[config(default = 32)]
    pub norm_num_groups: usize,
    /// GroupNorm ε of the resnets, the attention layers and the output norm (diffusers' `norm_eps`).
    #[config(default = 1e-5)]
    pub norm_eps: f64,
}

#[derive(Deserialize)]
struct Json {
    #[serde(default = "three")]
    in_channels: usize,
    #[serde(default = "three")]
    out_channels: usize,
    #[serde(default = "yes")]
    flip_sin_to_cos: bool,
    #[serde(default)]
    freq_shift: f64,
    down_block_types: Vec<UNet2DBlockType>,
    up_block_types: Vec<UNet2DBlockType>,
    block_out_channels: Vec<usize>,
    #[serde(default = "two")]
    layers_per_block: usize,
    #[serde(default = "one")]
    downsample_padding: usize,
    #[serde(default = "onef")]
    mid_block_scale_factor: f64,
    #[serde(default = "eight")]
    attention_head_dim: usize,
    #[serde(default = "groups")]
    norm_num_groups: usize,
    #[serde(default = "eps")]
    norm_eps: f64,
}

impl UNet2DModelConfig {
    /// Reads diffusers' `config.json` (already parsed); `file` names it in errors. Options codi does not
    /// implement are errors.
    pub fn from_diffusers(value: &Value, file: &Path) -> Result<Self, ModelError> {
        for key in [
            "class_embed_type",
            "num_class_embeds",
            "time_embedding_dim",
            "attn_norm_num_groups",
            "center_input_sample",
        ] {
            require_default(value, file, key, &[])?;
        }
        require_default(value, file, "time_embedding_type", &[json!("positional")])?;
        require_default(value, file, "resnet_time_scale_shift", &[json!("default")])?;
        require_default(value, file, "act_fn", &[json!("silu")])?;
        require_default(value, file, "add_attention", &[json!(true)])?;
        require_default(value, file, "mid_block_type", &[json!("UNetMidBlock2D")])?;
        require_default(value, file, "downsample_type", &[json!("conv")])?;
        require_default(value, file, "upsample_type", &[json!("conv")])?;
        let j: Json = parse(value, file)?;
        let n = j.block_out_channels.len();
        use UNet2DBlockType::*;
        let downs_ok = j
            .down_block_types
            .iter()
            .all(|t| matches!(t, DownBlock2D | AttnDownBlock2D));
        let ups_ok = j
            .up_block_types
            .iter()
            .all(|t| matches!(t, UpBlock2D | AttnUpBlock2D));
        if n == 0
            || j.down_block_types.len() != n
            || j.up_block_types.len() != n
            || !downs_ok
            || !ups_ok
        {
            return Err(ModelError::Config {
                file: file.to_path_buf(),
                reason: "needs one down (DownBlock2D/AttnDownBlock2D) and one up (UpBlock2D/AttnUpBlock2D) block per block_out_channels entry".into(),
            });
        }
        let config = Self {
            in_channels: j.in_channels,
            out_channels: j.out_channels,
            flip_sin_to_cos: j.flip_sin_to_cos,
            freq_shift: j.freq_shift,
            down_block_types: j.down_block_types,
            up_block_types: j.up_block_types,
            block_out_channels: j.block_out_channels,
            layers_per_block: j.layers_per_block,
            downsample_padding: j.downsample_padding,
            mid_block_scale_factor: j.mid_block_scale_factor,
            attention_head_dim: j.attention_head_dim,
            norm_num_groups: j.norm_num_groups,
            norm_eps: j.norm_eps,
        };
        crate::limits::checked(config, file, Self::check)
    }

    /// Whether codi can build this UNet, within [`crate::limits`]. → Ok, or every problem by key
    pub fn check(&self) -> Result<(), String> {
        use crate::limits::*;
        let n = self.block_out_channels.len();
        let mut c = Check::new();
        c.levels(&self.block_out_channels, self.norm_num_groups)
            .len("down_block_types", self.down_block_types.len(), n)
            .len("up_block_types", self.up_block_types.len(), n)
            .channels("in_channels", self.in_channels)
            .channels("out_channels", self.out_channels)
            .count("layers_per_block", self.layers_per_block, 1, MAX_LAYERS)
            .positive("norm_eps", self.norm_eps)
            .real("freq_shift", self.freq_shift, -1e6, 1e6)
            .positive("mid_block_scale_factor", self.mid_block_scale_factor)
            .count("downsample_padding", self.downsample_padding, 0, 1);
        // Attention splits a block's channels into heads of `attention_head_dim`; the mid block attends too.
        let d = self.attention_head_dim;
        c.require(
            d > 0
                && self
                    .block_out_channels
                    .iter()
                    .all(|ch| ch.is_multiple_of(d)),
            || {
                format!(
                    "`attention_head_dim` = {d} must divide every channel count {:?}",
                    self.block_out_channels
                )
            },
        );
        c.finish()
    }

    /// A randomly initialised UNet with these settings.
    pub fn init<B: Backend>(&self, device: &B::Device) -> UNet2DModel<B> {
        let ch = &self.block_out_channels;
        let c0 = ch[0];
        let temb = c0 * 4;
        let layers = vec![self.layers_per_block; ch.len()];
        let layout = UNetLayout {
            block_out_channels: ch,
            layers_per_block: &layers,
            temb_channels: temb,
            groups: self.norm_num_groups,
            eps: self.norm_eps,
            downsample_padding: self.downsample_padding,
        };
        let spatial = |attend: bool| {
            attend.then_some(AttentionKind::Spatial {
                dim_head: self.attention_head_dim,
            })
        };
        let down =
            layout.down(|i| spatial(self.down_block_types[i] == UNet2DBlockType::AttnDownBlock2D));
        let up = layout.up(|i| spatial(self.up_block_types[i] == UNet2DBlockType::AttnUpBlock2D));
        let c_mid = *ch.last().expect("at least one block");
        let mid = BlockConfig::new(c_mid, c_mid, 1, self.norm_num_groups, self.norm_eps)
            .with_temb_channels(Some(temb))
            .with_attention(spatial(true))
            .with_output_scale_factor(self.mid_block_scale_factor);
        UNet2DModel {
            conv_in: conv2d(self.in_channels, c0, 3, 1, device),
            time_embedding: TimestepEmbeddingConfig::new(c0, temb).init(device),
            down_blocks: down.iter().map(|c| c.init_down(device)).collect(),
            mid_block: mid.init_mid(device),
            up_blocks: up.iter().map(|c| c.init_up(device)).collect(),
            conv_norm_out: GroupNormConfig::new(self.norm_num_groups, c0)
                .with_epsilon(self.norm_eps)
                .init(device),
            conv_out: conv2d(c0, self.out_channels, 3, 1, device),
            time_proj_dim: c0,
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
        }
    }
}

/// diffusers' `UNet2DModel`: the unconditional denoiser, with spatial self-attention in the blocks that ask
/// for it.
#[derive(Module, Debug)]
pub struct UNet2DModel<B: Backend> {
    /// 3×3 input convolution from the image to the first level's channels.
    pub conv_in: Conv2d<B>,
    /// MLP from the sinusoidal timestep features to the time embedding every resnet receives.
    pub time_embedding: TimestepEmbedding<B>,
    /// Down blocks, shallowest first; their outputs (after conv_in's) are the skips.
    pub down_blocks: Vec<DownBlock<B>>,
    /// Mid block at the deepest level: resnet, spatial self-attention, resnet.
    pub mid_block: MidBlock<B>,
    /// Up blocks, deepest first, each consuming skips from the down path.
    pub up_blocks: Vec<UpBlock<B>>,
    /// GroupNorm (followed by SiLU) before the output convolution.
    pub conv_norm_out: GroupNorm<B>,
    /// 3×3 output convolution to `out_channels`.
    pub conv_out: Conv2d<B>,
    /// Width of the sinusoidal timestep features (diffusers' `time_proj`, which has no parameters): the first
    /// level's channels.
    pub time_proj_dim: usize,
    /// Timestep features as [cos, sin] rather than [sin, cos].
    pub flip_sin_to_cos: bool,
    /// Shift of the timestep features' frequency denominator.
    pub freq_shift: f64,
}

impl<B: Backend> UNet2DModel<B> {
    /// sample: [batch, in, h, w], timesteps: \[batch\] → [batch, out, h, w]
    pub fn forward(&self, sample: Tensor<B, 4>, timesteps: Tensor<B, 1>) -> Tensor<B, 4> {
        let emb = self.time_embedding.forward(timestep_features(
            timesteps,
            self.time_proj_dim,
            self.flip_sin_to_cos,
            self.freq_shift,
        ));
        let mut x = self.conv_in.forward(sample);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            let (h, states) = block.forward(x, Some(&emb), None);
            x = h;
            skips.extend(states);
        }
        let mut x = self.mid_block.forward(x, Some(&emb), None);
        for block in &self.up_blocks {
            x = block.forward(x, Some(&mut skips), Some(&emb), None);
        }
        self.conv_out.forward(self.conv_norm_out.forward_silu(x))
    }

    /// Builds the model from a diffusers folder: `config.json` and safetensors weights.
    pub fn from_diffusers_dir(dir: &Path, device: &B::Device) -> Result<Self, ModelError> {
        crate::io::load_dir(
            dir,
            UNet2DModelConfig::from_diffusers,
            |c| c.init(device),
            &Default::default(),
        )
    }
}
