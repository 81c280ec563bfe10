//! The CPU backend by name: what the tests, the embedded default and the host kernels of `codi-models`
//! use. Which backend and device a run uses is the binary's choice (`codi --device`), not this crate's.

/// The CPU backend (burn-flex).
pub type CpuBackend = burn::backend::Flex;
/// The CPU backend with autodiff (training).
pub type CpuAutodiff = burn::backend::Autodiff<CpuBackend>;
/// The CPU backend with autodiff that keeps fewer activations: burn-autodiff's balanced checkpointing
/// recomputes the outputs of memory-bound ops (element-wise) in the backward pass instead of keeping them.
pub type CpuAutodiffCheckpointed = burn::backend::Autodiff<
    CpuBackend,
    burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing,
>;
