//! Host CPU kernels for the places where codi's CPU backend is slowest (book: performance chapter). They
//! work on plain slices; `codi-models` decides when a tensor goes through them.

pub mod alloc;
pub mod attention;
pub mod attention_backward;
mod buffer;
pub mod conv;
pub mod geglu;
pub mod layer_norm;
pub mod linear;
pub mod math;
pub mod norm;
pub mod profile;
pub mod resample;
mod scratch;
pub mod sgemm;
pub mod transpose;
pub mod winograd;

/// Whether the environment sets `name` to anything but `0` or the empty string: the switches that force a
/// path for tests and comparisons (`CODI_PORTABLE_KERNELS`, `CODI_GENERIC_OPS`).
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty() && v.trim() != "0")
}
