//! The CPU fast path: burn-flex tensors through the `codi_kernels` host kernels, and under burn-autodiff as
//! one op each with a host backward pass. Only the layers and [`super::functional`] call in here; each
//! entry point returns its input back (`Err`) when the host kernels do not serve it ([`host::on_cpu_f32`],
//! [`host::on_cpu_autodiff_f32`]), and the caller then runs burn's op.

pub mod attention;
pub mod conv;
pub mod geglu;
pub mod group_norm;
pub mod host;
pub mod layer_norm;
pub mod linear;
#[cfg(test)]
mod perturb;
pub mod silu;
pub mod transpose;

pub use host::host_kernels_on;
