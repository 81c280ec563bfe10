//! A dense layer y = x W + b on contiguous f32 buffers (x: [rows, d_in], W: [d_in, d_out] as burn stores
//! it), forward and backward, through [`crate::sgemm`]. The activations are read in place as the left
//! operand, the rows split over rayon's threads; only the small weight matrix is packed.

use rayon::prelude::*;

use crate::buffer::{as_ptr, written};
use crate::sgemm::{gemm_packed, Lhs, PackedLhs, View, MR};

/// Sizes of one dense layer applied to `rows` vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearShape {
    pub rows: usize,
    pub d_in: usize,
    pub d_out: usize,
}

impl LinearShape {
    /// Floating-point operations of the product: 2 per multiply-add.
    pub fn flops(&self) -> f64 {
        2.0 * (self.rows * self.d_in * self.d_out) as f64
    }
}

/// Gradients of a dense layer's input, weight and bias.
pub struct LinearGrads {
    /// [rows, d_in]; None when not asked for.
    pub dx: Option<Vec<f32>>,
    /// [d_in, d_out]; None when not asked for.
    pub dw: Option<Vec<f32>>,
    /// \[d_out\]
    pub db: Vec<f32>,
}

/// out[rows, n] = lhs[rows, k] · rhs (+ nothing), the rows split over the threads; lhs row-major.
fn rows_times(lhs: &[f32], k: usize, rhs: View, n: usize) -> Vec<f32> {
    let rows = lhs.len() / k.max(1);
    if rows == 0 || n == 0 || k == 0 {
        return vec![0f32; rows * n];
    }
    let threads = rayon::current_num_threads().max(1);
    // Whole register tiles per chunk, and at least a few of them, so each thread's packing of rhs pays off.
    let chunk = rows.div_ceil(threads).div_ceil(MR).max(4) * MR;
    // SAFETY: the product (not accumulated, k > 0) writes every output.
    unsafe {
        written(rows * n, |out| {
            out.par_chunks_mut(chunk * n)
                .zip(lhs.par_chunks(chunk * k))
                .for_each(|(o, l)| {
                    let lhs = Lhs::Rows {
                        ptr: l.as_ptr(),
                        rs: k,
                        m: o.len() / n,
                        k,
                    };
                    // SAFETY: l holds this chunk's [m, k] rows, o its [m, n] outputs; rhs addresses [k, n].
                    gemm_packed(n, as_ptr(o), n, false, lhs, &rhs, false)
                });
        })
    }
}

/// x: [rows, d_in], weight: [d_in, d_out], bias: \[d_out\] → [rows, d_out].
pub fn linear_f32(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: LinearShape) -> Vec<f32> {
    assert_eq!(x.len(), s.rows * s.d_in);
    assert_eq!(weight.len(), s.d_in * s.d_out);
    let mut out = rows_times(x, s.d_in, View::row_major(weight, s.d_out), s.d_out);
    if let Some(b) = bias {
        assert_eq!(b.len(), s.d_out);
        out.par_chunks_mut(s.d_out)
            .for_each(|row| row.iter_mut().zip(b).for_each(|(v, b)| *v += b));
    }
    out
}

/// Gradients of [`linear_f32`] given the output gradient g: [rows, d_out]; `input` / `weight` say which of
/// dx and dW to compute (db always).
pub fn linear_backward_f32(
    x: &[f32],
    weight: &[f32],
    g: &[f32],
    s: LinearShape,
    input: bool,
    weight_grad: bool,
) -> LinearGrads {
    assert_eq!(x.len(), s.rows * s.d_in);
    assert_eq!(weight.len(), s.d_in * s.d_out);
    assert_eq!(g.len(), s.rows * s.d_out);
    // dx = g Wᵀ: [rows, d_in]
    let dx = input.then(|| rows_times(g, s.d_out, View::row_major(weight, s.d_out).t(), s.d_in));
    // dW = xᵀ g: [d_in, d_out], the depth being the rows.
    let dw = weight_grad.then(|| {
        let mut dw = vec![0f32; s.d_in * s.d_out];
        // SAFETY: x holds [rows, d_in] (its transpose is read), g [rows, d_out], dw [d_in, d_out].
        unsafe {
            let xt = PackedLhs::new(View::row_major(x, s.d_in).t(), s.d_in, s.rows, 1.0);
            let g = View::row_major(g, s.d_out);
            gemm_packed(
                s.d_out,
                dw.as_mut_ptr(),
                s.d_out,
                false,
                Lhs::Packed(&xt),
                &g,
                true,
            );
        }
        dw
    });
    let db = g
        .par_chunks(s.d_out * 64)
        .fold(
            || vec![0f32; s.d_out],
            |mut acc, rows| {
                for row in rows.chunks(s.d_out) {
                    acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                }
                acc
            },
        )
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        })
        .unwrap_or_else(|| vec![0f32; s.d_out]);
    LinearGrads { dx, dw, db }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::tests::pseudo_normal;

    fn naive(x: &[f32], w: &[f32], b: &[f32], s: LinearShape) -> Vec<f64> {
        let mut out = vec![0f64; s.rows * s.d_out];
        for r in 0..s.rows {
            for o in 0..s.d_out {
                out[r * s.d_out + o] = b[o] as f64
                    + (0..s.d_in)
                        .map(|i| x[r * s.d_in + i] as f64 * w[i * s.d_out + o] as f64)
                        .sum::<f64>();
            }
        }
        out
    }

    #[test]
    fn forward_and_gradients_match_the_definition() {
        for s in [
            LinearShape {
                rows: 1,
                d_in: 3,
                d_out: 5,
            },
            LinearShape {
                rows: 77,
                d_in: 19,
                d_out: 40,
            },
            LinearShape {
                rows: 300,
                d_in: 64,
                d_out: 17,
            },
        ] {
            let x = pseudo_normal(s.rows * s.d_in, 1, 1.0);
            let w = pseudo_normal(s.d_in * s.d_out, 2, 1.0);
            let b = pseudo_normal(s.d_out, 3, 1.0);
            let g = pseudo_normal(s.rows * s.d_out, 4, 1.0);
            let out = linear_f32(&x, &w, Some(&b), s);
            for (o, want) in out.iter().zip(naive(&x, &w, &b, s)) {
                assert!((*o as f64 - want).abs() < 1e-4, "{s:?}: {o} vs {want}");
            }
            let grads = linear_backward_f32(&x, &w, &g, s, true, true);
            // L = Σ g ∘ y is linear in each argument: dx = g Wᵀ, dW = xᵀ g, db = Σ_rows g.
            let (dx, dw) = (grads.dx.expect("dx"), grads.dw.expect("dw"));
            for r in 0..s.rows {
                for i in 0..s.d_in {
                    let want: f64 = (0..s.d_out)
                        .map(|o| g[r * s.d_out + o] as f64 * w[i * s.d_out + o] as f64)
                        .sum();
                    assert!((dx[r * s.d_in + i] as f64 - want).abs() < 1e-4, "{s:?} dx");
                }
            }
            for i in 0..s.d_in {
                for o in 0..s.d_out {
                    let want: f64 = (0..s.rows)
                        .map(|r| x[r * s.d_in + i] as f64 * g[r * s.d_out + o] as f64)
                        .sum();
                    let got = dw[i * s.d_out + o] as f64;
                    assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "{s:?} dw");
                }
            }
            for o in 0..s.d_out {
                let want: f64 = (0..s.rows).map(|r| g[r * s.d_out + o] as f64).sum();
                assert!((grads.db[o] as f64 - want).abs() < 1e-4, "{s:?} db");
            }
            let none = linear_backward_f32(&x, &w, &g, s, false, false);
            assert!(none.dx.is_none() && none.dw.is_none());
        }
    }
}
