//! One row-major matrix product through the `gemm` crate, shared by the kernels.

/// A matrix operand: (pointer, column stride, row stride); a transpose is the two strides swapped.
pub(crate) type Operand = (*const f32, usize, usize);

/// dst[r, c] = beta · Σ lhs[r, i] rhs[i, c], plus dst if `acc`; dst has row stride `dst_rs`.
///
/// # Safety
/// Every (pointer, strides) must address inside its buffer for the given sizes, and dst must not alias.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    [rows, cols, inner]: [usize; 3],
    dst: *mut f32,
    dst_rs: usize,
    acc: bool,
    lhs: Operand,
    rhs: Operand,
    beta: f32,
    parallelism: gemm::Parallelism,
) {
    gemm::gemm(
        rows,
        cols,
        inner,
        dst,
        1,
        dst_rs as isize,
        acc,
        lhs.0,
        lhs.1 as isize,
        lhs.2 as isize,
        rhs.0,
        rhs.1 as isize,
        rhs.2 as isize,
        if acc { 1.0 } else { 0.0 },
        beta,
        false,
        false,
        false,
        parallelism,
    );
}
