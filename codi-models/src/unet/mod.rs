//! diffusers' `UNet2DConditionModel` (Stable Diffusion's denoiser), configured from its `config.json`.

mod config;

#[cfg(test)]
pub(crate) use config::small_test_config;
pub use config::{DownBlockType, UNet2DConditionModelConfig, UpBlockType};

use crate::layers::{Conv2d, GroupNorm};
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::layers::blocks::{DownBlock, MidBlock, UpBlock};
use crate::layers::embeddings::{timestep_features, TimestepEmbedding};

/// Extra inputs to the skip connections and the mid block (a ControlNet's output).
#[derive(Debug, Clone)]
pub struct Residuals<B: Backend> {
    /// One per skip state, in the down path's order: [batch, c_i, h_i, w_i]
    pub down: Vec<Tensor<B, 4>>,
    /// [batch, c_mid, h_mid, w_mid]
    pub mid: Tensor<B, 4>,
    /// How they join the backbone's features.
    pub fusion: Fusion<B>,
}

/// How adapter features join the backbone's.
#[derive(Debug, Clone)]
pub enum Fusion<B: Backend> {
    /// h' = h + r (diffusers' ControlNet; zero convs make r = 0 at the start).
    Add,
    /// h' = (1 − μ)·h + μ·r (the CoDi paper's fusion; μ starts at 0). mu: \[1\]
    Mix(Tensor<B, 1>),
}

impl<B: Backend> Fusion<B> {
    /// Joins adapter features `r` to backbone features `h`. h, r: [batch, c, h, w] → [batch, c, h, w]
    pub fn apply(&self, h: Tensor<B, 4>, r: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Self::Add => h + r,
            Self::Mix(mu) => {
                let mu = mu.clone().reshape([1, 1, 1, 1]);
                h.clone() + (r - h) * mu
            }
        }
    }
}

/// diffusers' `UNet2DConditionModel`: Stable Diffusion's text-conditioned latent denoiser.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel<B: Backend> {
    /// 3×3 input convolution from the latent to the first level's channels.
    pub conv_in: Conv2d<B>,
    /// MLP from the sinusoidal timestep features to the time embedding every resnet receives.
    pub time_embedding: TimestepEmbedding<B>,
    /// Down blocks, shallowest first; their outputs (after conv_in's) are the skips.
    pub down_blocks: Vec<DownBlock<B>>,
    /// Mid block at the deepest level: resnet, cross-attention transformer, resnet.
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

impl<B: Backend> UNet2DConditionModel<B> {
    /// The time embedding. t: \[batch\] → [batch, time_embed_dim]
    pub fn embed_time(&self, t: Tensor<B, 1>) -> Tensor<B, 2> {
        self.time_embedding.forward(timestep_features(
            t,
            self.time_proj_dim,
            self.flip_sin_to_cos,
            self.freq_shift,
        ))
    }

    /// sample: [batch, in, h, w], timesteps: \[batch\], encoder_hidden_states: [batch, tokens, cross_dim]
    /// → [batch, out, h, w]
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timesteps: Tensor<B, 1>,
        encoder_hidden_states: Tensor<B, 3>,
    ) -> Tensor<B, 4> {
        self.forward_with_residuals(sample, timesteps, encoder_hidden_states, None)
    }

    /// [`Self::forward`] with adapter residuals joined to the skips and the mid block output.
    pub fn forward_with_residuals(
        &self,
        sample: Tensor<B, 4>,
        timesteps: Tensor<B, 1>,
        encoder_hidden_states: Tensor<B, 3>,
        residuals: Option<Residuals<B>>,
    ) -> Tensor<B, 4> {
        let emb = self.embed_time(timesteps);
        let ctx = Some(&encoder_hidden_states);
        let mut x = self.conv_in.forward(sample);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            let (h, states) = block.forward(x, Some(&emb), ctx);
            x = h;
            skips.extend(states);
        }
        let mut x = self.mid_block.forward(x, Some(&emb), ctx);
        if let Some(r) = residuals {
            assert_eq!(
                r.down.len(),
                skips.len(),
                "the adapter gives {} down residuals, the UNet has {} skips",
                r.down.len(),
                skips.len()
            );
            skips = skips
                .into_iter()
                .zip(r.down)
                .map(|(h, d)| r.fusion.apply(h, d))
                .collect();
            x = r.fusion.apply(x, r.mid);
        }
        for block in &self.up_blocks {
            x = block.forward(x, Some(&mut skips), Some(&emb), ctx);
        }
        self.conv_out.forward(self.conv_norm_out.forward_silu(x))
    }
}

impl<B: Backend> UNet2DConditionModel<B> {
    /// Builds the model from a diffusers folder (`config.json` + safetensors weights).
    pub fn from_diffusers_dir(
        dir: &std::path::Path,
        device: &B::Device,
    ) -> Result<Self, crate::ModelError> {
        crate::io::load_dir(
            dir,
            UNet2DConditionModelConfig::from_diffusers,
            |c| c.init(device),
            &Default::default(),
        )
    }
}

#[cfg(test)]
mod tests;
