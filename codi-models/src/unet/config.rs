use crate::diffusers_json::defaults::{eps, four, groups, one, onef, three, yes};
use burn::config::Config;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;

use super::UNet2DConditionModel;
use crate::diffusers_json::{parse, require_default, PerBlock};
use crate::error::ModelError;
use crate::layers::blocks::{AttentionKind, BlockConfig, UNetLayout};
use crate::layers::embeddings::TimestepEmbeddingConfig;
use crate::layers::{conv2d, GroupNormConfig};

/// A down block of [`UNet2DConditionModel`], as diffusers names it in `down_block_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownBlockType {
    /// Resnets, each followed by a cross-attention transformer.
    CrossAttnDownBlock2D,
    /// Resnets only.
    DownBlock2D,
}

/// An up block of [`UNet2DConditionModel`], as diffusers names it in `up_block_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpBlockType {
    /// Resnets, each followed by a cross-attention transformer.
    CrossAttnUpBlock2D,
    /// Resnets only.
    UpBlock2D,
}

/// The UNet2DConditionModel settings codi implements, named as in diffusers' `config.json`.
#[derive(Config, Debug, PartialEq)]
pub struct UNet2DConditionModelConfig {
    /// Channels of the input latent (diffusers' `in_channels`).
    #[config(default = 4)]
    pub in_channels: usize,
    /// Channels of the output (diffusers' `out_channels`).
    #[config(default = 4)]
    pub out_channels: usize,
    /// Timestep features as [cos, sin] rather than [sin, cos] (diffusers' `flip_sin_to_cos`).
    #[config(default = true)]
    pub flip_sin_to_cos: bool,
    /// Shift of the timestep features' frequency denominator (diffusers' `freq_shift`).
    #[config(default = 0.0)]
    pub freq_shift: f64,
    /// The down blocks, shallowest first (diffusers' `down_block_types`).
    pub down_block_types: Vec<DownBlockType>,
    /// The up blocks, deepest first (diffusers' `up_block_types`).
    pub up_block_types: Vec<UpBlockType>,
    /// Output channels of each level, shallowest first (diffusers' `block_out_channels`).
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (up blocks have one more).
    pub layers_per_block: Vec<usize>,
    /// Padding of the downsamplers' convolutions (diffusers' `downsample_padding`).
    #[config(default = 1)]
    pub downsample_padding: usize,
    /// Divisor of the mid block's resnet outputs (diffusers' `mid_block_scale_factor`).
    #[config(default = 1.0)]
    pub mid_block_scale_factor: f64,
    /// GroupNorm groups of the resnets, the transformers and the output norm (diffusers' `norm_num_groups`).
    #[config(default = 32)]
    pub norm_num_groups: usize,
    /// GroupNorm ε of the resnets and the output norm (diffusers' `norm_eps`).
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// Width of the text states the transformers cross-attend to (diffusers' `cross_attention_dim`).
    pub cross_attention_dim: usize,
    /// Transformer blocks per attention layer, per down block.
    pub transformer_layers_per_block: Vec<usize>,
    /// Attention heads per down block (diffusers reads `attention_head_dim` as this when
    /// `num_attention_heads` is null).
    pub num_attention_heads: Vec<usize>,
    /// The transformers project in and out with linear layers instead of 1×1 convolutions (diffusers'
    /// `use_linear_projection`).
    #[config(default = false)]
    pub use_linear_projection: bool,
}

#[derive(Deserialize)]
struct Json {
    #[serde(default = "four")]
    in_channels: usize,
    #[serde(default = "four")]
    out_channels: usize,
    #[serde(default = "yes")]
    flip_sin_to_cos: bool,
    #[serde(default)]
    freq_shift: f64,
    down_block_types: Vec<DownBlockType>,
    up_block_types: Vec<UpBlockType>,
    block_out_channels: Vec<usize>,
    #[serde(default = "two")]
    layers_per_block: PerBlock<usize>,
    #[serde(default = "one")]
    downsample_padding: usize,
    #[serde(default = "onef")]
    mid_block_scale_factor: f64,
    #[serde(default = "groups")]
    norm_num_groups: usize,
    #[serde(default = "eps")]
    norm_eps: f64,
    cross_attention_dim: usize,
    #[serde(default = "one_per")]
    transformer_layers_per_block: PerBlock<usize>,
    attention_head_dim: Option<PerBlock<usize>>,
    num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    use_linear_projection: bool,
    #[serde(default = "mid_type")]
    mid_block_type: Option<String>,
    #[serde(default = "three")]
    conv_in_kernel: usize,
    #[serde(default = "three")]
    conv_out_kernel: usize,
}
fn two() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn one_per() -> PerBlock<usize> {
    PerBlock::One(1)
}
fn mid_type() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}

impl UNet2DConditionModelConfig {
    /// Reads diffusers' `config.json` (already parsed); `file` names it in errors.
    pub fn from_diffusers(value: &Value, file: &Path) -> Result<Self, ModelError> {
        for key in [
            "class_embed_type",
            "addition_embed_type",
            "encoder_hid_dim",
            "time_cond_proj_dim",
            "num_class_embeds",
            "dual_cross_attention",
            "only_cross_attention",
            "class_embeddings_concat",
            "time_embedding_dim",
            "timestep_post_act",
            "reverse_transformer_layers_per_block",
        ] {
            require_default(value, file, key, &[])?;
        }
        require_default(value, file, "resnet_time_scale_shift", &[json!("default")])?;
        require_default(value, file, "time_embedding_type", &[json!("positional")])?;
        require_default(value, file, "act_fn", &[json!("silu")])?;
        require_default(value, file, "center_input_sample", &[])?;
        require_default(value, file, "attention_type", &[json!("default")])?;
        require_default(value, file, "resnet_skip_time_act", &[])?;
        require_default(
            value,
            file,
            "resnet_out_scale_factor",
            &[json!(1.0), json!(1)],
        )?;
        let j: Json = parse(value, file)?;
        let n = j.block_out_channels.len();
        let bad = |reason: String| ModelError::Config {
            file: file.to_path_buf(),
            reason,
        };
        if n == 0 || j.down_block_types.len() != n || j.up_block_types.len() != n {
            return Err(bad(format!(
                "{} block_out_channels, {} down blocks and {} up blocks must be equal and non-zero",
                n,
                j.down_block_types.len(),
                j.up_block_types.len()
            )));
        }
        if j.mid_block_type.as_deref() != Some("UNetMidBlock2DCrossAttn") {
            return Err(ModelError::Unsupported {
                file: file.to_path_buf(),
                what: format!("mid_block_type {:?}", j.mid_block_type),
            });
        }
        if j.conv_in_kernel != 3 || j.conv_out_kernel != 3 {
            return Err(ModelError::Unsupported {
                file: file.to_path_buf(),
                what: "conv_in/conv_out kernels other than 3".into(),
            });
        }
        // diffusers: `num_attention_heads = num_attention_heads or attention_head_dim` (a historical naming).
        let heads = j
            .num_attention_heads
            .or(j.attention_head_dim)
            .unwrap_or(PerBlock::One(8))
            .expand(n, "attention_head_dim", file)?;
        let config = Self {
            in_channels: j.in_channels,
            out_channels: j.out_channels,
            flip_sin_to_cos: j.flip_sin_to_cos,
            freq_shift: j.freq_shift,
            down_block_types: j.down_block_types,
            up_block_types: j.up_block_types,
            block_out_channels: j.block_out_channels,
            layers_per_block: j.layers_per_block.expand(n, "layers_per_block", file)?,
            downsample_padding: j.downsample_padding,
            mid_block_scale_factor: j.mid_block_scale_factor,
            norm_num_groups: j.norm_num_groups,
            norm_eps: j.norm_eps,
            cross_attention_dim: j.cross_attention_dim,
            transformer_layers_per_block: j.transformer_layers_per_block.expand(
                n,
                "transformer_layers_per_block",
                file,
            )?,
            num_attention_heads: heads,
            use_linear_projection: j.use_linear_projection,
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
            .len("layers_per_block", self.layers_per_block.len(), n)
            .len(
                "transformer_layers_per_block",
                self.transformer_layers_per_block.len(),
                n,
            )
            .len("attention_head_dim", self.num_attention_heads.len(), n)
            .channels("in_channels", self.in_channels)
            .channels("out_channels", self.out_channels)
            .channels("cross_attention_dim", self.cross_attention_dim)
            .counts("layers_per_block", &self.layers_per_block, 1, MAX_LAYERS)
            .counts(
                "transformer_layers_per_block",
                &self.transformer_layers_per_block,
                1,
                MAX_LAYERS,
            )
            .positive("norm_eps", self.norm_eps)
            .real("freq_shift", self.freq_shift, -1e6, 1e6)
            .positive("mid_block_scale_factor", self.mid_block_scale_factor)
            // diffusers pads a downsampler by this many zeros; codi's convolution pads 0 or 1.
            .count("downsample_padding", self.downsample_padding, 0, 1);
        for (ch, h) in self
            .block_out_channels
            .iter()
            .zip(&self.num_attention_heads)
        {
            c.require(*h > 0 && ch.is_multiple_of(*h), || {
                format!("a block with {ch} channels cannot have {h} attention heads")
            });
        }
        c.finish()
    }

    /// Stable Diffusion 1.5's UNet.
    pub fn sd15() -> Self {
        use DownBlockType::*;
        use UpBlockType::*;
        Self::new(
            vec![
                CrossAttnDownBlock2D,
                CrossAttnDownBlock2D,
                CrossAttnDownBlock2D,
                DownBlock2D,
            ],
            vec![
                UpBlock2D,
                CrossAttnUpBlock2D,
                CrossAttnUpBlock2D,
                CrossAttnUpBlock2D,
            ],
            vec![320, 640, 1280, 1280],
            vec![2; 4],
            768,
            vec![1; 4],
            vec![8; 4],
        )
    }

    /// The time embedding width (4 × the first block's channels).
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    fn attention(&self, block: usize, cross: bool) -> Option<AttentionKind> {
        cross.then(|| AttentionKind::Transformer {
            heads: self.num_attention_heads[block],
            layers: self.transformer_layers_per_block[block],
            cross_attention_dim: self.cross_attention_dim,
            use_linear_projection: self.use_linear_projection,
        })
    }

    fn layout(&self) -> UNetLayout<'_> {
        UNetLayout {
            block_out_channels: &self.block_out_channels,
            layers_per_block: &self.layers_per_block,
            temb_channels: self.time_embed_dim(),
            groups: self.norm_num_groups,
            eps: self.norm_eps,
            downsample_padding: self.downsample_padding,
        }
    }

    /// The down-path block settings (shared with the ControlNet encoder copy).
    pub fn down_block_configs(&self) -> Vec<BlockConfig> {
        self.layout().down(|i| {
            self.attention(
                i,
                self.down_block_types[i] == DownBlockType::CrossAttnDownBlock2D,
            )
        })
    }

    /// The mid block's settings.
    pub fn mid_block_config(&self) -> BlockConfig {
        let c = *self.block_out_channels.last().expect("at least one block");
        let last = self.block_out_channels.len() - 1;
        BlockConfig::new(c, c, 1, self.norm_num_groups, self.norm_eps)
            .with_temb_channels(Some(self.time_embed_dim()))
            .with_attention(self.attention(last, true))
            .with_output_scale_factor(self.mid_block_scale_factor)
    }

    fn up_block_configs(&self) -> Vec<BlockConfig> {
        let n = self.block_out_channels.len();
        self.layout().up(|i| {
            self.attention(
                n - 1 - i,
                self.up_block_types[i] == UpBlockType::CrossAttnUpBlock2D,
            )
        })
    }

    /// A randomly initialised UNet with these settings.
    pub fn init<B: Backend>(&self, device: &B::Device) -> UNet2DConditionModel<B> {
        let c0 = self.block_out_channels[0];
        UNet2DConditionModel {
            conv_in: conv2d(self.in_channels, c0, 3, 1, device),
            time_embedding: TimestepEmbeddingConfig::new(c0, self.time_embed_dim()).init(device),
            down_blocks: self
                .down_block_configs()
                .iter()
                .map(|c| c.init_down(device))
                .collect(),
            mid_block: self.mid_block_config().init_mid(device),
            up_blocks: self
                .up_block_configs()
                .iter()
                .map(|c| c.init_up(device))
                .collect(),
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

impl UNet2DConditionModelConfig {
    /// diffusers' `config.json` for this model (the keys `from_diffusers` reads, plus the class name).
    pub fn to_diffusers(&self) -> Value {
        json!({
            "_class_name": "UNet2DConditionModel",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "flip_sin_to_cos": self.flip_sin_to_cos,
            "freq_shift": self.freq_shift,
            "down_block_types": self.down_block_types,
            "up_block_types": self.up_block_types,
            "mid_block_type": "UNetMidBlock2DCrossAttn",
            "block_out_channels": self.block_out_channels,
            "layers_per_block": compact(&self.layers_per_block),
            "downsample_padding": self.downsample_padding,
            "mid_block_scale_factor": self.mid_block_scale_factor,
            "act_fn": "silu",
            "norm_num_groups": self.norm_num_groups,
            "norm_eps": self.norm_eps,
            "cross_attention_dim": self.cross_attention_dim,
            "transformer_layers_per_block": compact(&self.transformer_layers_per_block),
            "attention_head_dim": compact(&self.num_attention_heads),
            "use_linear_projection": self.use_linear_projection,
        })
    }
}

/// One number when every block has the same (diffusers' ControlNetModel accepts only that), else the list.
fn compact(v: &[usize]) -> Value {
    match v.first() {
        Some(&x) if v.iter().all(|&y| y == x) => json!(x),
        _ => json!(v),
    }
}

/// A two-level UNet the size of the diffusers fixture (tests).
#[cfg(test)]
pub(crate) fn small_test_config() -> UNet2DConditionModelConfig {
    UNet2DConditionModelConfig::new(
        vec![
            DownBlockType::CrossAttnDownBlock2D,
            DownBlockType::DownBlock2D,
        ],
        vec![UpBlockType::UpBlock2D, UpBlockType::CrossAttnUpBlock2D],
        vec![16, 32],
        vec![1, 1],
        32,
        vec![1, 1],
        vec![2, 2],
    )
    .with_norm_num_groups(8)
}
