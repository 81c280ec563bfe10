//! Pretraining of the embedded default with burn-train's Learner: the VAE, the text-to-image teacher (UNet +
//! text encoder) and the evaluation classifier. Each model has a config file (`configs/pretrain/*.json`), a
//! `TrainStep` wrapper and an entry point that trains, checkpoints every epoch, resumes, and saves the result
//! in diffusers layout. The loop itself is [`crate::training`].

pub mod classifier;
pub mod presets;
pub mod teacher;
pub mod vae;
