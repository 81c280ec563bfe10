//! The maths of codi, written once and shared by every crate: noise schedules, ε/x/v conversions,
//! consistency boundary scalings, timestep grids, samplers over a [`Denoiser`], seeded noise. Nothing here
//! knows a network or chooses a device.
#![warn(missing_docs)]

pub mod backend;
pub mod boundary;
pub mod error;
pub mod grid;
pub mod loss;
pub mod metrics;
pub mod noise;
pub mod prediction;
pub mod progressive;
pub mod sampler;
pub mod schedule;
pub mod tensor_ops;

pub use boundary::{BoundaryForm, BoundaryScalings};
pub use error::CoreError;
pub use grid::{codi_timesteps, ddim_timesteps, dpm_timesteps, lcm_timesteps, TimestepSpacing};
pub use noise::{ExplicitNoise, NoiseSource, SeededNoise};
pub use prediction::{Prediction, PredictionType};
pub use sampler::{Denoiser, FnDenoiser, Guided, PlannedStep, Sampler, SamplerKind};
pub use schedule::{BetaSchedule, NoiseSchedule, NoiseScheduleConfig};
