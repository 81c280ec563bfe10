//! Small tensor helpers shared by the maths.

use burn::tensor::{backend::Backend, Tensor};

/// Reshapes a per-sample vector so that it broadcasts over the remaining axes.
/// v: \[batch\] → [batch, 1, …, 1] (rank D).
pub fn per_sample<B: Backend, const D: usize>(v: Tensor<B, 1>) -> Tensor<B, D> {
    let mut shape = [1usize; D];
    shape[0] = v.dims()[0];
    v.reshape(shape)
}

/// Host values of a tensor as f32 (for tests, metrics and printing).
pub fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("a float tensor converts to f32")
}

/// The largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "max_abs_diff needs equal shapes");
    to_vec((a - b).abs().max())[0]
}
