//! One row-major matrix product for the attention kernels, through [`crate::sgemm`].

use crate::sgemm::{sgemm, View};

/// A matrix operand: (pointer, column stride, row stride); a transpose is the two strides swapped.
pub(crate) type Operand = (*const f32, usize, usize);

/// dst[r, c] = beta · Σ lhs[r, i] rhs[i, c], plus dst if `acc`; dst has row stride `dst_rs`.
///
/// # Safety
/// Every (pointer, strides) must address inside its buffer for the given sizes, and dst must not alias.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    dims: [usize; 3],
    dst: *mut f32,
    dst_rs: usize,
    acc: bool,
    lhs: Operand,
    rhs: Operand,
    beta: f32,
    parallelism: gemm::Parallelism,
) {
    let view = |(ptr, cs, rs): Operand| View { ptr, rs, cs };
    let par = !matches!(parallelism, gemm::Parallelism::None);
    sgemm(dims, dst, dst_rs, acc, view(lhs), view(rhs), beta, par);
}
