//! The ControlNet-style conditional encoder (diffusers' `ControlNetModel`): a trainable copy of the UNet's
//! conv_in, time embedding, down blocks and mid block, a conditioning-embedding CNN, and zero-initialised 1×1
//! convs per skip and for the mid block. Plus CoDi's fusion h' = (1 − μ)h + μ·h_c with a learnable μ.

use crate::layers::functional::silu;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};
use serde_json::{json, Value};
use std::path::Path;

use crate::diffusers_json::{parse, require_default};
use crate::error::ModelError;
use crate::fresh::copy_with_fresh_ids;
use crate::layers::blocks::{DownBlock, MidBlock};
use crate::layers::embeddings::{timestep_features, TimestepEmbedding, TimestepEmbeddingConfig};
use crate::layers::{conv2d, zero_conv, Conv2d};
use crate::unet::{
    DownBlockType, Fusion, Residuals, UNet2DConditionModel, UNet2DConditionModelConfig, UpBlockType,
};

/// How the adapter's residuals join the backbone.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum FusionKind {
    /// h + r (diffusers).
    Add,
    /// (1 − μ)h + μ·r with a learnable μ starting at 0 (the CoDi paper).
    Mix,
}

/// The settings of the ControlNet-style adapter: the backbone UNet's config plus the conditioning embedding
/// and the fusion.
#[derive(Config, Debug, PartialEq)]
pub struct ControlNetConfig {
    /// The backbone's config (its down and mid blocks are the ones copied).
    pub unet: UNet2DConditionModelConfig,
    /// Channels of the condition image (diffusers' `conditioning_channels`).
    #[config(default = 3)]
    pub conditioning_channels: usize,
    /// Channels of the conditioning embedding's levels; each level after the first halves the resolution
    /// (diffusers' `conditioning_embedding_out_channels`).
    #[config(default = "vec![16, 32, 96, 256]")]
    pub conditioning_embedding_out_channels: Vec<usize>,
    /// How the residuals join the backbone; [`FusionKind::Mix`] is written to `config.json` as `codi_fusion`.
    #[config(default = "FusionKind::Add")]
    pub fusion: FusionKind,
    /// Start the conditioning embedding's last conv at zero (diffusers). The zero convs on the residuals
    /// already make the adapted model equal the backbone at step 0; a random last conv lets the condition reach
    /// them from the first step, which short runs need (the book's distillation chapter measures it).
    #[config(default = true)]
    pub conditioning_embedding_zero_out: bool,
}

impl ControlNetConfig {
    /// Reads diffusers' ControlNetModel `config.json`.
    pub fn from_diffusers(value: &Value, file: &Path) -> Result<Self, ModelError> {
        require_default(value, file, "global_pool_conditions", &[])?;
        require_default(
            value,
            file,
            "controlnet_conditioning_channel_order",
            &[json!("rgb")],
        )?;
        // The same block keys as the UNet; the up path is the mirror image of the down path.
        let mut unet_json = value.clone();
        let ups: Vec<Value> = parse::<Vec<DownBlockType>>(&value["down_block_types"], file)?
            .iter()
            .rev()
            .map(|d| match d {
                DownBlockType::CrossAttnDownBlock2D => json!(UpBlockType::CrossAttnUpBlock2D),
                DownBlockType::DownBlock2D => json!(UpBlockType::UpBlock2D),
            })
            .collect();
        unet_json["up_block_types"] = Value::Array(ups);
        let unet = UNet2DConditionModelConfig::from_diffusers(&unet_json, file)?;
        let mut c = Self::new(unet);
        c.fusion = match value.get("codi_fusion") {
            None | Some(Value::Null) => FusionKind::Add,
            Some(v) if v == "add" => FusionKind::Add,
            Some(v) if v == "mix" => FusionKind::Mix,
            Some(v) => {
                return Err(ModelError::Config {
                    file: file.to_path_buf(),
                    reason: format!("`codi_fusion` = {v}: expected \"add\" or \"mix\""),
                })
            }
        };
        if let Some(v) = value.get("conditioning_channels") {
            c.conditioning_channels = parse(v, file)?;
        }
        if let Some(v) = value.get("conditioning_embedding_out_channels") {
            c.conditioning_embedding_out_channels = parse(v, file)?;
        }
        crate::limits::checked(c, file, Self::check)
    }

    /// Whether codi can build this adapter, within [`crate::limits`]: its UNet part and its conditioning
    /// embedding. → Ok, or every problem by key
    pub fn check(&self) -> Result<(), String> {
        use crate::limits::*;
        self.unet.check()?;
        let ch = &self.conditioning_embedding_out_channels;
        Check::new()
            .channels("conditioning_channels", self.conditioning_channels)
            .entries(
                "conditioning_embedding_out_channels",
                ch.len(),
                1,
                MAX_LEVELS,
            )
            .counts("conditioning_embedding_out_channels", ch, 1, MAX_CHANNELS)
            .finish()
    }

    /// diffusers' `config.json` for this adapter (μ-fusion is codi's own and stored as `codi_fusion`).
    pub fn to_diffusers(&self) -> Value {
        let mut v = self.unet.to_diffusers();
        let obj = v.as_object_mut().expect("an object");
        obj.insert("_class_name".into(), json!("ControlNetModel"));
        obj.remove("up_block_types");
        obj.remove("out_channels");
        obj.insert(
            "conditioning_channels".into(),
            json!(self.conditioning_channels),
        );
        obj.insert(
            "conditioning_embedding_out_channels".into(),
            json!(self.conditioning_embedding_out_channels),
        );
        obj.insert("controlnet_conditioning_channel_order".into(), json!("rgb"));
        obj.insert("global_pool_conditions".into(), json!(false));
        if self.fusion == FusionKind::Mix {
            obj.insert("codi_fusion".into(), json!("mix"));
        }
        v
    }

    /// A fresh adapter: every module randomly initialised, the zero convs (and, by default, the conditioning
    /// embedding's last conv) at zero, μ = 0 for the mix fusion. [`Self::init_from_unet`] copies the backbone
    /// instead.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ControlNetModel<B> {
        let u = &self.unet;
        let c0 = u.block_out_channels[0];
        let ch = &self.conditioning_embedding_out_channels;
        let mut blocks = Vec::new();
        for w in ch.windows(2) {
            blocks.push(conv2d(w[0], w[0], 3, 1, device));
            blocks.push(conv2d(w[0], w[1], 3, 2, device));
        }
        let down_cfgs = u.down_block_configs();
        let mut zero = vec![zero_conv(c0, c0, 1, device)];
        for cfg in &down_cfgs {
            for _ in 0..cfg.layers {
                zero.push(zero_conv(cfg.out_channels, cfg.out_channels, 1, device));
            }
            if cfg.resample {
                zero.push(zero_conv(cfg.out_channels, cfg.out_channels, 1, device));
            }
        }
        let mid_c = *u.block_out_channels.last().expect("at least one block");
        ControlNetModel {
            conv_in: conv2d(u.in_channels, c0, 3, 1, device),
            time_embedding: TimestepEmbeddingConfig::new(c0, u.time_embed_dim()).init(device),
            controlnet_cond_embedding: ConditioningEmbedding {
                conv_in: conv2d(self.conditioning_channels, ch[0], 3, 1, device),
                blocks,
                conv_out: if self.conditioning_embedding_zero_out {
                    zero_conv(*ch.last().expect("non-empty"), c0, 3, device)
                } else {
                    conv2d(*ch.last().expect("non-empty"), c0, 3, 1, device)
                },
            },
            down_blocks: down_cfgs.iter().map(|c| c.init_down(device)).collect(),
            controlnet_down_blocks: zero,
            mid_block: u.mid_block_config().init_mid(device),
            controlnet_mid_block: zero_conv(mid_c, mid_c, 1, device),
            mu: (self.fusion == FusionKind::Mix)
                .then(|| Param::from_tensor(Tensor::zeros([1], device))),
            time_proj_dim: c0,
            flip_sin_to_cos: u.flip_sin_to_cos,
            freq_shift: u.freq_shift,
        }
    }

    /// diffusers' `ControlNetModel.from_unet`: the encoder half copied from `unet` (new parameter ids),
    /// conditioning embedding freshly initialised, zero convs (and, by default, the embedding's last conv) at zero.
    pub fn init_from_unet<B: Backend>(
        &self,
        unet: &UNet2DConditionModel<B>,
        device: &B::Device,
    ) -> ControlNetModel<B> {
        let mut c = self.init(device);
        c.conv_in = copy_with_fresh_ids(&unet.conv_in);
        c.time_embedding = copy_with_fresh_ids(&unet.time_embedding);
        c.down_blocks = unet.down_blocks.iter().map(copy_with_fresh_ids).collect();
        c.mid_block = copy_with_fresh_ids(&unet.mid_block);
        c
    }
}

/// Condition image → features at conv_in's resolution: conv_in, (3×3, 3×3 stride 2) per level, conv_out (zero).
#[derive(Module, Debug)]
pub struct ConditioningEmbedding<B: Backend> {
    /// 3×3 convolution from the condition's channels to the first level's.
    pub conv_in: Conv2d<B>,
    /// Per level after the first: a 3×3 convolution, then a 3×3 stride-2 convolution to the next level's
    /// channels.
    pub blocks: Vec<Conv2d<B>>,
    /// 3×3 convolution from the last level to the UNet's first-level channels; zero-initialised unless
    /// `conditioning_embedding_zero_out` is false.
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> ConditioningEmbedding<B> {
    /// cond: [batch, cond_ch, H, W] → [batch, c0, H/2ᵏ, W/2ᵏ]
    pub fn forward(&self, cond: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = silu(self.conv_in.forward(cond));
        for b in &self.blocks {
            h = silu(b.forward(h));
        }
        self.conv_out.forward(h)
    }
}

/// diffusers' `ControlNetModel` (plus CoDi's optional μ): encodes (sample, t, text, condition) into residuals
/// for the backbone's skips and mid block.
#[derive(Module, Debug)]
pub struct ControlNetModel<B: Backend> {
    /// 3×3 input convolution from the latent, a copy of the backbone's `conv_in`.
    pub conv_in: Conv2d<B>,
    /// Time-embedding MLP, a copy of the backbone's.
    pub time_embedding: TimestepEmbedding<B>,
    /// CNN from the condition image to features added to conv_in's output.
    pub controlnet_cond_embedding: ConditioningEmbedding<B>,
    /// Down blocks, copies of the backbone's.
    pub down_blocks: Vec<DownBlock<B>>,
    /// Zero-initialised 1×1 convolutions, one per skip state (conv_in's output, then every resnet and
    /// downsampler output), in the down path's order.
    pub controlnet_down_blocks: Vec<Conv2d<B>>,
    /// Mid block, a copy of the backbone's.
    pub mid_block: MidBlock<B>,
    /// Zero-initialised 1×1 convolution on the mid block's output.
    pub controlnet_mid_block: Conv2d<B>,
    /// CoDi's fusion weight μ (None: plain addition). Not part of diffusers' ControlNetModel; saved as `mu`.
    pub mu: Option<Param<Tensor<B, 1>>>,
    /// Width of the sinusoidal timestep features (diffusers' `time_proj`, which has no parameters): the first
    /// level's channels.
    pub time_proj_dim: usize,
    /// Timestep features as [cos, sin] rather than [sin, cos] (diffusers' `flip_sin_to_cos`).
    pub flip_sin_to_cos: bool,
    /// Shift of the timestep features' frequency denominator (diffusers' `freq_shift`).
    pub freq_shift: f64,
}

impl<B: Backend> ControlNetModel<B> {
    /// sample: [batch, in, h, w], timesteps: \[batch\], encoder_hidden_states: [batch, tokens, cross_dim],
    /// cond: [batch, cond_ch, h·2ᵏ, w·2ᵏ] → residuals for the backbone, each multiplied by `scale`.
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timesteps: Tensor<B, 1>,
        encoder_hidden_states: Tensor<B, 3>,
        cond: Tensor<B, 4>,
        scale: f64,
    ) -> Residuals<B> {
        let emb = self.time_embedding.forward(timestep_features(
            timesteps,
            self.time_proj_dim,
            self.flip_sin_to_cos,
            self.freq_shift,
        ));
        let ctx = Some(&encoder_hidden_states);
        let mut x = self.conv_in.forward(sample) + self.controlnet_cond_embedding.forward(cond);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            let (h, states) = block.forward(x, Some(&emb), ctx);
            x = h;
            skips.extend(states);
        }
        let x = self.mid_block.forward(x, Some(&emb), ctx);
        let down = skips
            .into_iter()
            .zip(&self.controlnet_down_blocks)
            .map(|(h, zc)| zc.forward(h).mul_scalar(scale))
            .collect();
        Residuals {
            down,
            mid: self.controlnet_mid_block.forward(x).mul_scalar(scale),
            fusion: match &self.mu {
                Some(mu) => Fusion::Mix(mu.val()),
                None => Fusion::Add,
            },
        }
    }

    /// Builds the adapter from a diffusers folder: ControlNetModel `config.json` and safetensors weights.
    pub fn from_diffusers_dir(dir: &Path, device: &B::Device) -> Result<Self, ModelError> {
        crate::io::load_dir(
            dir,
            ControlNetConfig::from_diffusers,
            |c| c.init(device),
            &Default::default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unet::small_test_config;
    use burn::backend::Flex;
    use burn::module::Module;
    use burn::tensor::Distribution;
    use codi_core::tensor_ops::{max_abs_diff, to_vec};

    type B = Flex;

    #[test]
    fn codi_fusion_round_trips_and_an_unknown_value_is_an_error() {
        let file = Path::new("controlnet/config.json");
        for fusion in [FusionKind::Add, FusionKind::Mix] {
            let c = ControlNetConfig::new(small_test_config()).with_fusion(fusion);
            let back = ControlNetConfig::from_diffusers(&c.to_diffusers(), file).unwrap();
            assert_eq!(back.fusion, fusion);
        }
        let mut v = ControlNetConfig::new(small_test_config()).to_diffusers();
        v["codi_fusion"] = json!("Mix");
        let err = ControlNetConfig::from_diffusers(&v, file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("codi_fusion") && err.contains("Mix"), "{err}");
    }

    #[test]
    fn from_unet_starts_as_the_identity_for_both_fusions_and_embedding_inits() {
        let device = Default::default();
        let unet = small_test_config().init::<B>(&device);
        let x = Tensor::<B, 4>::random([2, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let t = Tensor::<B, 1>::from_floats([20.0, 700.0], &device);
        let ctx = Tensor::<B, 3>::random([2, 5, 32], Distribution::Normal(0.0, 1.0), &device);
        let cond = Tensor::<B, 4>::random([2, 3, 16, 16], Distribution::Default, &device);
        let plain = unet.forward(x.clone(), t.clone(), ctx.clone());
        for fusion in [FusionKind::Add, FusionKind::Mix] {
            for zero_out in [true, false] {
                let cn = ControlNetConfig::new(small_test_config())
                    .with_conditioning_embedding_out_channels(vec![8, 16])
                    .with_fusion(fusion)
                    .with_conditioning_embedding_zero_out(zero_out)
                    .init_from_unet(&unet, &device);
                let emb = cn.controlnet_cond_embedding.conv_out.weight.val();
                assert_eq!(
                    to_vec(emb.clone().abs()).iter().all(|&v| v == 0.0),
                    zero_out,
                    "the embedding's last conv starts at zero only when asked"
                );
                let r = cn.forward(x.clone(), t.clone(), ctx.clone(), cond.clone(), 1.0);
                let adapted =
                    unet.forward_with_residuals(x.clone(), t.clone(), ctx.clone(), Some(r));
                assert!(
                    max_abs_diff(adapted, plain.clone()) < 1e-6,
                    "{fusion:?}, zero_out {zero_out}"
                );
            }
        }
    }

    #[test]
    fn from_unet_copies_values_under_new_parameter_ids() {
        let device = Default::default();
        let unet = small_test_config().init::<B>(&device);
        let cn = ControlNetConfig::new(small_test_config()).init_from_unet(&unet, &device);
        assert_eq!(
            to_vec(cn.conv_in.weight.val()),
            to_vec(unet.conv_in.weight.val())
        );
        assert_ne!(cn.conv_in.weight.id, unet.conv_in.weight.id);
        // A nonzero zero-conv makes the adapter change the output.
        let mut cn = cn;
        cn.controlnet_mid_block.weight = cn.controlnet_mid_block.weight.map(|w| w.ones_like());
        let x = Tensor::<B, 4>::ones([1, 4, 8, 8], &device);
        let t = Tensor::<B, 1>::from_floats([500.0], &device);
        let ctx = Tensor::<B, 3>::ones([1, 3, 32], &device);
        let r = cn.forward(
            x.clone(),
            t.clone(),
            ctx.clone(),
            Tensor::ones([1, 3, 8, 8], &device),
            1.0,
        );
        let plain = unet.forward(x.clone(), t.clone(), ctx.clone());
        assert!(max_abs_diff(unet.forward_with_residuals(x, t, ctx, Some(r)), plain) > 1e-4);
        assert!(cn.num_params() > 0);
    }
}
