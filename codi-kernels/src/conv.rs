//! 2-D convolution (groups 1, dilation 1) on contiguous NCHW f32 buffers, forward and backward, as im2col +
//! gemm per sample. The backward recomputes each sample's im2col buffer rather than keeping it (k² times the
//! input), runs the weight gradient as one gemm against it and the input gradient as one gemm and a col2im
//! scatter, so no axis of an activation is ever transposed in memory.

use rayon::prelude::*;

use crate::matmul::{matmul, Operand};

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
}

impl ConvShape {
    pub fn h_out(&self) -> usize {
        (self.h + 2 * self.pad[0] - self.kh) / self.stride[0] + 1
    }
    pub fn w_out(&self) -> usize {
        (self.w + 2 * self.pad[1] - self.kw) / self.stride[1] + 1
    }
    /// Rows of the im2col buffer: c_in · kh · kw.
    fn patch(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    fn pixels_out(&self) -> usize {
        self.h_out() * self.w_out()
    }
    /// A 1×1, stride-1, unpadded convolution reads its input as the im2col buffer itself.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0, 0]
    }
    /// The im2col buffer of one sample (empty for a pointwise convolution).
    fn col_buffer(&self) -> Vec<f32> {
        vec![
            0f32;
            if self.is_pointwise() {
                0
            } else {
                self.patch() * self.pixels_out()
            }
        ]
    }
    /// Sample `n`'s im2col columns: its input itself for a pointwise convolution, else written into `col`.
    fn columns<'a>(&self, x: &'a [f32], n: usize, col: &'a mut [f32], par: bool) -> &'a [f32] {
        let xn = &x[n * self.c_in * self.h * self.w..(n + 1) * self.c_in * self.h * self.w];
        if self.is_pointwise() {
            return xn;
        }
        im2col(xn, self, col, par);
        col
    }
}

/// Gradients of a convolution's input, weight and bias.
pub struct ConvGrads {
    /// None when not asked for.
    pub dx: Option<Vec<f32>>,
    /// None when not asked for.
    pub dw: Option<Vec<f32>>,
    pub db: Vec<f32>,
}

/// Which gradients the backward pass computes (a frozen backbone's convolutions need no weight gradient, the
/// first convolution on data no input gradient). The bias gradient is always computed; it is one row sum.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub input: bool,
    pub weight: bool,
}

/// dst[r, c] = Σ lhs[r, i] rhs[i, c] (+ dst if `acc`), dst dense; on rayon's threads if `par`.
unsafe fn matmul_dense(
    dims: [usize; 3],
    dst: *mut f32,
    acc: bool,
    lhs: Operand,
    rhs: Operand,
    par: bool,
) {
    let parallelism = if par {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    matmul(dims, dst, dims[1], acc, lhs, rhs, 1.0, parallelism);
}

/// Runs `f` on each (index, chunk), on rayon's threads if `par`.
fn for_each_chunk(
    buf: &mut [f32],
    chunk: usize,
    par: bool,
    f: impl Fn((usize, &mut [f32])) + Sync + Send,
) {
    if par {
        buf.par_chunks_mut(chunk).enumerate().for_each(f);
    } else {
        buf.chunks_mut(chunk).enumerate().for_each(f);
    }
}

/// Whether to spread the samples over the threads (each sample's work on one thread) rather than each
/// sample's gemms: small per-sample problems pay the threads' start-up on every gemm otherwise.
fn sample_parallel(s: &ConvShape) -> bool {
    s.batch >= rayon::current_num_threads()
}

/// col[(c, i, j), (y, x)] = x[c, y·s − p + i, x·s − p + j] (0 outside), one sample: [patch, h_out · w_out].
fn im2col(x: &[f32], s: &ConvShape, col: &mut [f32], par: bool) {
    let (ho, wo) = (s.h_out(), s.w_out());
    for_each_chunk(col, s.kh * s.kw * ho * wo, par, |(c, cc)| {
        let xc = &x[c * s.h * s.w..(c + 1) * s.h * s.w];
        for i in 0..s.kh {
            for j in 0..s.kw {
                let row = &mut cc[(i * s.kw + j) * ho * wo..(i * s.kw + j + 1) * ho * wo];
                for y in 0..ho {
                    let out = &mut row[y * wo..(y + 1) * wo];
                    let iy = (y * s.stride[0] + i) as isize - s.pad[0] as isize;
                    if iy < 0 || iy >= s.h as isize {
                        out.fill(0.0);
                        continue;
                    }
                    let xrow = &xc[iy as usize * s.w..(iy as usize + 1) * s.w];
                    for (xo, o) in out.iter_mut().enumerate() {
                        let ix = (xo * s.stride[1] + j) as isize - s.pad[1] as isize;
                        *o = if ix >= 0 && ix < s.w as isize {
                            xrow[ix as usize]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    });
}

/// The adjoint of [`im2col`]: dx[c, ·, ·] = Σ of the col entries that read it, one sample.
fn col2im(col: &[f32], s: &ConvShape, dx: &mut [f32], par: bool) {
    let (ho, wo) = (s.h_out(), s.w_out());
    for_each_chunk(dx, s.h * s.w, par, |(c, dxc)| {
        dxc.fill(0.0);
        let cc = &col[c * s.kh * s.kw * ho * wo..(c + 1) * s.kh * s.kw * ho * wo];
        for i in 0..s.kh {
            for j in 0..s.kw {
                let row = &cc[(i * s.kw + j) * ho * wo..(i * s.kw + j + 1) * ho * wo];
                for y in 0..ho {
                    let iy = (y * s.stride[0] + i) as isize - s.pad[0] as isize;
                    if iy < 0 || iy >= s.h as isize {
                        continue;
                    }
                    let drow = &mut dxc[iy as usize * s.w..(iy as usize + 1) * s.w];
                    for (xo, &g) in row[y * wo..(y + 1) * wo].iter().enumerate() {
                        let ix = (xo * s.stride[1] + j) as isize - s.pad[1] as isize;
                        if ix >= 0 && ix < s.w as isize {
                            drow[ix as usize] += g;
                        }
                    }
                }
            }
        }
    });
}

/// x: [batch, c_in, h, w], weight: [c_out, c_in, kh, kw], bias: [c_out] → [batch, c_out, h_out, w_out].
pub fn conv2d_f32(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: ConvShape) -> Vec<f32> {
    let (patch, pix) = (s.patch(), s.pixels_out());
    assert_eq!(x.len(), s.batch * s.c_in * s.h * s.w);
    assert_eq!(weight.len(), s.c_out * patch);
    let mut out = vec![0f32; s.batch * s.c_out * pix];
    let sample = |n: usize, on: &mut [f32], col: &mut Vec<f32>, par: bool| {
        let cols = s.columns(x, n, col, par);
        // SAFETY: the operands are the buffers asserted or allocated above, with their row-major strides.
        unsafe {
            matmul_dense(
                [s.c_out, pix, patch],
                on.as_mut_ptr(),
                false,
                (weight.as_ptr(), 1, patch),
                (cols.as_ptr(), 1, pix),
                par,
            );
        }
        if let Some(b) = bias {
            for (row, &bc) in on.chunks_mut(pix).zip(b) {
                row.iter_mut().for_each(|v| *v += bc);
            }
        }
    };
    if sample_parallel(&s) {
        out.par_chunks_mut(s.c_out * pix)
            .enumerate()
            .for_each_init(|| s.col_buffer(), |col, (n, on)| sample(n, on, col, false));
    } else {
        let mut col = s.col_buffer();
        for (n, on) in out.chunks_mut(s.c_out * pix).enumerate() {
            sample(n, on, &mut col, true);
        }
    }
    out
}

/// Per-thread accumulators of the backward pass: dW, db and the two im2col-sized scratch buffers.
struct Accumulators {
    dw: Vec<f32>,
    db: Vec<f32>,
    col: Vec<f32>,
    dcol: Vec<f32>,
}

impl Accumulators {
    fn new(s: &ConvShape) -> Self {
        Self {
            dw: vec![0f32; s.c_out * s.patch()],
            db: vec![0f32; s.c_out],
            col: s.col_buffer(),
            dcol: s.col_buffer(),
        }
    }
    fn merge(mut self, other: Self) -> Self {
        self.dw.iter_mut().zip(&other.dw).for_each(|(a, b)| *a += b);
        self.db.iter_mut().zip(&other.db).for_each(|(a, b)| *a += b);
        self
    }
}

/// Gradients of [`conv2d_f32`] given the output gradient `g`: [batch, c_out, h_out, w_out].
pub fn conv2d_backward_f32(
    x: &[f32],
    weight: &[f32],
    g: &[f32],
    s: ConvShape,
    wanted: Wanted,
) -> ConvGrads {
    let (patch, pix) = (s.patch(), s.pixels_out());
    assert_eq!(x.len(), s.batch * s.c_in * s.h * s.w);
    assert_eq!(weight.len(), s.c_out * patch);
    assert_eq!(g.len(), s.batch * s.c_out * pix);
    // The samples are walked as chunks of dx; without an input gradient each chunk is one unused float.
    let per_sample = if wanted.input { s.c_in * s.h * s.w } else { 1 };
    let mut dx = vec![0f32; per_sample * s.batch];
    let sample = |n: usize, dxn: &mut [f32], acc: &mut Accumulators, par: bool| {
        let gn = &g[n * s.c_out * pix..(n + 1) * s.c_out * pix];
        // SAFETY: as in the forward; transposes are expressed as swapped strides.
        if wanted.weight {
            let cols = s.columns(x, n, &mut acc.col, par);
            // dW += g colᵀ: [c_out, patch]
            unsafe {
                matmul_dense(
                    [s.c_out, patch, pix],
                    acc.dw.as_mut_ptr(),
                    true,
                    (gn.as_ptr(), 1, pix),
                    (cols.as_ptr(), pix, 1),
                    par,
                );
            }
        }
        if wanted.input {
            // dcol = Wᵀ g: [patch, pix]
            let dst = if s.is_pointwise() {
                dxn.as_mut_ptr()
            } else {
                acc.dcol.as_mut_ptr()
            };
            unsafe {
                matmul_dense(
                    [patch, pix, s.c_out],
                    dst,
                    false,
                    (weight.as_ptr(), patch, 1),
                    (gn.as_ptr(), 1, pix),
                    par,
                );
            }
            if !s.is_pointwise() {
                col2im(&acc.dcol, &s, dxn, par);
            }
        }
        for (d, row) in acc.db.iter_mut().zip(gn.chunks(pix)) {
            *d += row.iter().sum::<f32>();
        }
    };
    let acc = if sample_parallel(&s) {
        dx.par_chunks_mut(per_sample)
            .enumerate()
            .fold(
                || Accumulators::new(&s),
                |mut acc, (n, dxn)| {
                    sample(n, dxn, &mut acc, false);
                    acc
                },
            )
            .reduce(|| Accumulators::new(&s), Accumulators::merge)
    } else {
        let mut acc = Accumulators::new(&s);
        for (n, dxn) in dx.chunks_mut(per_sample).enumerate() {
            sample(n, dxn, &mut acc, true);
        }
        acc
    };
    ConvGrads {
        dx: wanted.input.then_some(dx),
        dw: wanted.weight.then_some(acc.dw),
        db: acc.db,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::tests::pseudo_normal;

    /// The definition, in f64.
    fn naive(x: &[f32], w: &[f32], b: &[f32], s: &ConvShape) -> Vec<f64> {
        let (ho, wo) = (s.h_out(), s.w_out());
        let mut out = vec![0f64; s.batch * s.c_out * ho * wo];
        for n in 0..s.batch {
            for o in 0..s.c_out {
                for y in 0..ho {
                    for xo in 0..wo {
                        let mut acc = b[o] as f64;
                        for c in 0..s.c_in {
                            for i in 0..s.kh {
                                for j in 0..s.kw {
                                    let iy = (y * s.stride[0] + i) as isize - s.pad[0] as isize;
                                    let ix = (xo * s.stride[1] + j) as isize - s.pad[1] as isize;
                                    if iy >= 0
                                        && ix >= 0
                                        && (iy as usize) < s.h
                                        && (ix as usize) < s.w
                                    {
                                        acc += x[((n * s.c_in + c) * s.h + iy as usize) * s.w
                                            + ix as usize]
                                            as f64
                                            * w[((o * s.c_in + c) * s.kh + i) * s.kw + j] as f64;
                                    }
                                }
                            }
                        }
                        out[((n * s.c_out + o) * ho + y) * wo + xo] = acc;
                    }
                }
            }
        }
        out
    }

    fn shapes() -> Vec<ConvShape> {
        let base = ConvShape {
            batch: 2,
            c_in: 3,
            h: 7,
            w: 6,
            c_out: 4,
            kh: 3,
            kw: 3,
            stride: [1, 1],
            pad: [1, 1],
        };
        // Batch 1 runs each sample's gemms on the threads, batch 2 spreads the samples (on 2+ threads).
        vec![
            ConvShape { batch: 1, ..base },
            base,
            ConvShape {
                stride: [2, 2],
                ..base
            },
            ConvShape {
                kh: 1,
                kw: 1,
                pad: [0, 0],
                ..base
            },
            ConvShape {
                kh: 3,
                kw: 1,
                pad: [1, 0],
                stride: [2, 1],
                ..base
            },
        ]
    }

    /// Seeded input, weight and bias for `s`.
    fn inputs(s: &ConvShape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        (
            pseudo_normal(s.batch * s.c_in * s.h * s.w, 1, 1.0),
            pseudo_normal(s.c_out * s.c_in * s.kh * s.kw, 2, 1.0),
            pseudo_normal(s.c_out, 3, 1.0),
        )
    }

    #[test]
    fn forward_matches_the_definition() {
        for s in shapes() {
            let (x, w, b) = inputs(&s);
            let got = conv2d_f32(&x, &w, Some(&b), s);
            let want = naive(&x, &w, &b, &s);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-5, "{s:?}: max |kernel − definition| = {err}");
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        for s in shapes() {
            let (x, w, b) = inputs(&s);
            let g = pseudo_normal(s.batch * s.c_out * s.h_out() * s.w_out(), 4, 1.0);
            let all = Wanted {
                input: true,
                weight: true,
            };
            let grads = conv2d_backward_f32(&x, &w, &g, s, all);
            let (dx, dw) = (grads.dx.expect("dx"), grads.dw.expect("dw"));
            // Asking for one gradient gives the same values (up to the order of the per-thread sums), and not
            // the other.
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| (p - q).abs() < 1e-5);
            for (input, weight) in [(true, false), (false, true)] {
                let one = conv2d_backward_f32(&x, &w, &g, s, Wanted { input, weight });
                assert_eq!(one.dx.is_some(), input);
                assert_eq!(one.dw.is_some(), weight);
                assert!(one.dx.is_none_or(|d| close(&d, &dx)), "{s:?}: dx alone");
                assert!(one.dw.is_none_or(|d| close(&d, &dw)), "{s:?}: dw alone");
                assert!(close(&one.db, &grads.db), "{s:?}: db");
            }
            // The loss Σ g ∘ conv is linear in each argument, so a central difference is exact up to rounding.
            let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
                naive(x, w, b, &s)
                    .iter()
                    .zip(&g)
                    .map(|(o, g)| o * *g as f64)
                    .sum()
            };
            let eps = 0.5f32;
            let check = |name: &str, v: &[f32], grad: &[f32], at: &dyn Fn(&[f32]) -> f64| {
                for i in (0..v.len()).step_by(5) {
                    let (mut hi, mut lo) = (v.to_vec(), v.to_vec());
                    hi[i] += eps;
                    lo[i] -= eps;
                    let fd = (at(&hi) - at(&lo)) / (2.0 * eps as f64);
                    assert!(
                        (fd - grad[i] as f64).abs() < 1e-4 * (1.0 + fd.abs()),
                        "{s:?} {name}[{i}]: {} vs {fd}",
                        grad[i]
                    );
                }
            };
            check("dx", &x, &dx, &|v| loss(v, &w, &b));
            check("dw", &w, &dw, &|v| loss(&x, v, &b));
            check("db", &b, &grads.db, &|v| loss(&x, &w, v));
        }
    }
}
