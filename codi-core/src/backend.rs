//! The CPU backend by name: what the tests, the embedded default and the host kernels of `codi-models`
//! use. Which backend and device a run uses is the binary's choice (`codi --device`), not this crate's.

/// The CPU backend (burn-flex).
pub type CpuBackend = burn::backend::Flex;
/// The CPU backend with autodiff (training).
pub type CpuAutodiff = burn::backend::Autodiff<CpuBackend>;
