//! Building blocks shared by the UNets, the VAE and the ControlNet adapter; field names mirror diffusers.
//!
//! The layers ([`Conv2d`], [`Linear`], [`GroupNorm`], [`LayerNorm`]) and the parameter-free ops
//! ([`functional`]) are what model code calls. Each decides for itself whether a host kernel serves the
//! tensor at hand (burn-flex, f32, a CPU with AVX2 + FMA; the glue lives in [`cpu`]) and runs burn's op
//! otherwise — the path CUDA and wgpu take, and every backend when `CODI_GENERIC_OPS=1`.

pub mod attention;
pub mod blocks;
pub mod conv;
pub mod cpu;
pub mod embeddings;
pub mod functional;
pub mod linear;
pub mod norm;
pub mod resnet;
pub mod sampling;
pub mod transformer;

pub use conv::{conv2d, zero_conv, Conv2d, Conv2dConfig};
pub use linear::{Linear, LinearConfig};
pub use norm::{GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig};
