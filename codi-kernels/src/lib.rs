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
mod scratch;
pub mod sgemm;
pub mod transpose;
pub mod winograd;
