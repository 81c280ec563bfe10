//! Inference for codi: everything that samples from a model and needs no optimizer — the text-to-image pipeline
//! of a pretrained latent diffusion model in diffusers' folder layout, the few-step conditional pipeline (a
//! backbone with a distilled adapter), the adapter's identity file, the conditions a task is sampled from,
//! PNG grids and training-curve plots. The CLI, the evaluation and the distiller share it.
#![warn(missing_docs)]

pub mod adapter;
pub mod conditional;
/// The crate's error type.
pub mod error;
pub mod figures;
pub mod image_file;
pub mod image_io;
pub mod plot;
pub mod resize;
pub mod task;
pub mod text_to_image;
pub mod tokenizer;

pub use adapter::{AdapterInfo, CodiNet, DistillMode};
pub use conditional::ConditionalPipeline;
pub use error::PipelineError;
pub use task::TaskKind;
pub use text_to_image::{SchedulerFile, TextToImage};
