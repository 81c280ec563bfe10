//! Sinusoidal timestep features and the time-embedding MLP (diffusers `Timesteps`, `TimestepEmbedding`).

use crate::layers::functional::silu;
use crate::layers::{Linear, LinearConfig};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

/// diffusers' `get_timestep_embedding`: exponent = −ln(10000)·i/(half − shift); [sin, cos] or [cos, sin].
/// t: \[batch\] → [batch, dim].
pub fn timestep_features<B: Backend>(
    t: Tensor<B, 1>,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Tensor<B, 2> {
    let half = dim / 2;
    let device = t.device();
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f64.ln()) * i as f64 / (half as f64 - freq_shift)).exp() as f32)
        .collect();
    let freqs = Tensor::<B, 1>::from_floats(freqs.as_slice(), &device).unsqueeze_dim::<2>(0);
    let args = t.unsqueeze_dim::<2>(1) * freqs; // [batch, half]
    let (sin, cos) = (args.clone().sin(), args.cos());
    let emb = if flip_sin_to_cos {
        Tensor::cat(vec![cos, sin], 1)
    } else {
        Tensor::cat(vec![sin, cos], 1)
    };
    if dim % 2 == 1 {
        let b = emb.dims()[0];
        Tensor::cat(vec![emb, Tensor::zeros([b, 1], &device)], 1)
    } else {
        emb
    }
}

/// Settings of a [`TimestepEmbedding`].
#[derive(Config, Debug)]
pub struct TimestepEmbeddingConfig {
    /// Width of the sinusoidal timestep features it reads (diffusers' `in_channels`).
    pub in_channels: usize,
    /// Width of the time embedding (diffusers' `time_embed_dim`).
    pub time_embed_dim: usize,
}

/// linear_1 → SiLU → linear_2.
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    /// First linear layer, in_channels → time_embed_dim.
    pub linear_1: Linear<B>,
    /// Second linear layer (after SiLU), time_embed_dim → time_embed_dim.
    pub linear_2: Linear<B>,
}

impl TimestepEmbeddingConfig {
    /// A time-embedding MLP with burn's default initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TimestepEmbedding<B> {
        TimestepEmbedding {
            linear_1: LinearConfig::new(self.in_channels, self.time_embed_dim).init(device),
            linear_2: LinearConfig::new(self.time_embed_dim, self.time_embed_dim).init(device),
        }
    }
}

impl<B: Backend> TimestepEmbedding<B> {
    /// x: [batch, in_channels] → [batch, time_embed_dim]
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear_2.forward(silu(self.linear_1.forward(x)))
    }
}
