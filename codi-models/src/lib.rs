//! The networks of codi, backend-generic and configured like diffusers: every module mirrors diffusers'
//! module tree, so real checkpoints load by their `config.json` and save back in the same layout.
#![warn(missing_docs)]

pub mod classifier;
pub mod clip;
pub mod clip_tokenizer;
pub mod controlnet;
pub mod diffusers_json;
pub mod error;
pub mod fresh;
pub mod inspect;
pub mod io;
pub mod layers;
pub mod limits;
pub mod tokenizer;
pub mod unet;
pub mod unet2d;
pub mod vae;

pub use clip::{CLIPTextConfig, CLIPTextModel};
pub use controlnet::{ControlNetConfig, ControlNetModel, FusionKind};
pub use error::ModelError;
pub use unet::{UNet2DConditionModel, UNet2DConditionModelConfig};
pub use unet2d::{UNet2DModel, UNet2DModelConfig};
pub use vae::{AutoencoderKL, AutoencoderKLConfig, DiagonalGaussian};
