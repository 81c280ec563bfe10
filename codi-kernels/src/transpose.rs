//! Batched matrix transposes: the host side of an NCHW activation read as tokens × channels.

use rayon::prelude::*;

/// Tiles of T × T floats: a source and a destination tile stay in L1 together.
const T: usize = 32;

/// src: `batches` row-major [rows, cols] matrices → their transposes, [batches, cols, rows]; the matrices
/// over rayon's threads.
pub fn transpose_batched(src: &[f32], batches: usize, rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(src.len(), batches * rows * cols);
    let mut out = vec![0f32; src.len()];
    if rows * cols == 0 {
        return out;
    }
    out.par_chunks_mut(rows * cols)
        .zip(src.par_chunks(rows * cols))
        .for_each(|(dst, src)| transpose(src, rows, cols, dst));
    out
}

/// dst [cols, rows] ← the transpose of src [rows, cols], tile by tile.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                let row = &src[r * cols..(r + 1) * cols];
                for c in c0..(c0 + T).min(cols) {
                    dst[c * rows + r] = row[c];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_every_matrix_of_the_batch() {
        let (b, rows, cols) = (3, 37, 70);
        let src: Vec<f32> = (0..b * rows * cols).map(|i| i as f32).collect();
        let out = transpose_batched(&src, b, rows, cols);
        for n in 0..b {
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        out[(n * cols + c) * rows + r],
                        src[(n * rows + r) * cols + c]
                    );
                }
            }
        }
    }
}
