//! Scaled dot-product attention on contiguous f32 buffers: each block of query rows is one score matmul
//! (gemm), a vectorised exp, and one value matmul, with the blocks spread over rayon's threads.

use rayon::prelude::*;

use crate::math::{exp_approx_with, has_avx2_fma};
use crate::sgemm::{sgemm, View};
use crate::transpose::transpose;

/// Query rows per task: a [ROWS, n_kv] block of scores stays in the cache for the value matmul.
pub const ROWS: usize = 64;

/// Sizes of `heads` independent attention problems.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub heads: usize,
    /// Query rows.
    pub n: usize,
    /// Key/value rows.
    pub m: usize,
    /// Query/key width.
    pub d: usize,
    /// Value width.
    pub dv: usize,
}

impl AttentionShape {
    /// Floating-point operations of the forward's two products (scores and values): 2 per multiply-add.
    pub fn flops(&self) -> f64 {
        2.0 * (self.heads * self.n * self.m * (self.d + self.dv)) as f64
    }

    /// Those of [`crate::attention_backward::attention_backward_f32`]: the scores again, then dV, dP, dq
    /// and dk.
    pub fn backward_flops(&self) -> f64 {
        2.0 * (self.heads * self.n * self.m * (3 * self.d + 2 * self.dv)) as f64
    }
}

/// The kernel on contiguous host buffers: q: [heads, n, d], k: [heads, m, d], v: [heads, m, dv] →
/// [heads, n, dv].
pub fn attention_f32(q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape) -> Vec<f32> {
    attention_f32_lse(q, k, v, shape).0
}

/// [`attention_f32`], also returning each query row's log-sum-exp of its scaled scores ([heads, n]), which
/// the backward pass needs to rebuild the probabilities.
pub fn attention_f32_lse(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttentionShape,
) -> (Vec<f32>, Vec<f32>) {
    let AttentionShape { heads, n, m, d, dv } = shape;
    assert_eq!(q.len(), heads * n * d);
    assert_eq!(k.len(), heads * m * d);
    assert_eq!(v.len(), heads * m * dv);
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0f32; heads * n * dv];
    let mut lse = vec![0f32; heads * n];
    out.par_chunks_mut(n * dv)
        .zip(lse.par_chunks_mut(n))
        .enumerate()
        .for_each(|(hd, (o, l))| {
            // kᵀ once per head: [d, m] row-major, so that every block packs it by row copies (packing the
            // transposed view gathered one float at a time, for each block of rows again).
            let mut kt = vec![0f32; m * d];
            transpose(&k[hd * m * d..(hd + 1) * m * d], m, d, &mut kt);
            let vh = &v[hd * m * dv..(hd + 1) * m * dv];
            // Values of at most one vector per row: rows padded to 8 floats for `narrow_values`.
            let v8 = narrow_values_apply(dv).then(|| pad_to_8(vh, dv));
            o.par_chunks_mut(ROWS * dv)
                .zip(l.par_chunks_mut(ROWS))
                .enumerate()
                .for_each_init(
                    || vec![0f32; ROWS * m],
                    |scores, (blk, (ob, lb))| {
                        let r0 = blk * ROWS;
                        let rows = ob.len() / dv;
                        let qb = &q[(hd * n + r0) * d..(hd * n + r0 + rows) * d];
                        let s = &mut scores[..rows * m];
                        // s = scale · q kᵀ: [rows, m]
                        // SAFETY: the blocks are in bounds of q, k, v and the score buffer.
                        unsafe {
                            sgemm(
                                [rows, m, d],
                                s.as_mut_ptr(),
                                m,
                                false,
                                View::row_major(qb, d),
                                View::row_major(&kt, m),
                                scale,
                                false,
                            );
                        }
                        let mut sums = [0f32; ROWS];
                        for ((row, sum), l) in
                            s.chunks_mut(m).zip(sums.iter_mut()).zip(lb.iter_mut())
                        {
                            let (max, total) = exp_normalise(row);
                            *sum = total;
                            *l = max + total.ln();
                        }
                        // o = p v / Σp: [rows, dv]
                        if let Some(v8) = &v8 {
                            narrow_values(s, m, v8, ob, dv, |r| 1.0 / sums[r]);
                            return;
                        }
                        // SAFETY: the blocks are in bounds of q, k, v and the score buffer.
                        unsafe {
                            sgemm(
                                [rows, dv, m],
                                ob.as_mut_ptr(),
                                dv,
                                false,
                                View::row_major(s, m),
                                View::row_major(vh, dv),
                                1.0,
                                false,
                            );
                        }
                        for (orow, sum) in ob.chunks_mut(dv).zip(sums) {
                            let inv = 1.0 / sum;
                            orow.iter_mut().for_each(|x| *x *= inv);
                        }
                    },
                );
        });
    (out, lse)
}

/// Whether o = p v goes through [`narrow_values`]: values of at most 8 floats, where the gemm's 16-wide
/// tile would run at most half full (the mid config's UNet has heads of width 8 at 1,024 tokens).
pub(crate) fn narrow_values_apply(dv: usize) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // `CODI_NARROW_ATTENTION=0` keeps the gemm, for comparisons (read once).
    let on = *ON.get_or_init(|| std::env::var("CODI_NARROW_ATTENTION").map_or(true, |v| v != "0"));
    dv <= 8 && on && has_avx2_fma()
}

/// `b` ([m, width], width ≤ 8) with its rows padded to 8 floats, for [`narrow_values`].
pub(crate) fn pad_to_8(b: &[f32], width: usize) -> Vec<f32> {
    let mut b8 = vec![0f32; b.len() / width * 8];
    for (dst, src) in b8.chunks_exact_mut(8).zip(b.chunks_exact(width)) {
        dst[..width].copy_from_slice(src);
    }
    b8
}

/// o\[r\] = scale(r) · Σ_j p[r, j] v8\[j\] for the rows of p ([rows, m], read in place), v8: [m, 8] (values
/// padded to 8 floats, [`pad_to_8`]), o: [rows, dv].
pub(crate) fn narrow_values(
    p: &[f32],
    m: usize,
    v8: &[f32],
    o: &mut [f32],
    dv: usize,
    scale: impl Fn(usize) -> f32,
) {
    let rows = o.len() / dv;
    assert!(narrow_values_apply(dv) && v8.len() == m * 8 && o.len() == rows * dv);
    assert_eq!(p.len(), rows * m);
    if m == 0 {
        // A sum over no keys.
        o.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    for (blk, (pr, or)) in p
        .chunks(NARROW_ROWS * m)
        .zip(o.chunks_mut(NARROW_ROWS * dv))
        .enumerate()
    {
        let mut acc = [[0f32; 8]; NARROW_ROWS];
        // SAFETY: AVX2 and FMA are present (narrow_values_apply); pr holds whole rows of m floats.
        unsafe { x86::narrow_rows(pr, m, pr.len() / m, v8, &mut acc) };
        for (i, (orow, a)) in or.chunks_mut(dv).zip(&acc).enumerate() {
            let f = scale(blk * NARROW_ROWS + i);
            for (x, a) in orow.iter_mut().zip(a) {
                *x = a * f;
            }
        }
    }
}

/// Rows of p per pass of [`narrow_values`]: one accumulator each, beside the value vector and a broadcast.
const NARROW_ROWS: usize = 8;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::NARROW_ROWS;
    use std::arch::x86_64::*;

    /// acc\[r\] = Σ_j p[r·m + j] v8\[j\] for r < rows (≤ NARROW_ROWS): per key one vector of values, one
    /// broadcast and one multiply-add per row.
    ///
    /// # Safety
    /// AVX2 and FMA present; p holds rows · m floats, v8 m · 8.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn narrow_rows(
        p: &[f32],
        m: usize,
        rows: usize,
        v8: &[f32],
        acc: &mut [[f32; 8]; NARROW_ROWS],
    ) {
        match rows {
            8 => rows_n::<8>(p, m, v8, acc),
            7 => rows_n::<7>(p, m, v8, acc),
            6 => rows_n::<6>(p, m, v8, acc),
            5 => rows_n::<5>(p, m, v8, acc),
            4 => rows_n::<4>(p, m, v8, acc),
            3 => rows_n::<3>(p, m, v8, acc),
            2 => rows_n::<2>(p, m, v8, acc),
            1 => rows_n::<1>(p, m, v8, acc),
            _ => unreachable!("1 to {NARROW_ROWS} rows"),
        }
    }

    #[inline(always)]
    unsafe fn rows_n<const R: usize>(
        p: &[f32],
        m: usize,
        v8: &[f32],
        acc: &mut [[f32; 8]; NARROW_ROWS],
    ) {
        debug_assert!(p.len() >= R * m && v8.len() >= m * 8);
        let (p, v8) = (p.as_ptr(), v8.as_ptr());
        let mut a = [_mm256_setzero_ps(); R];
        for j in 0..m {
            let v = _mm256_loadu_ps(v8.add(8 * j));
            for (r, a) in a.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(_mm256_broadcast_ss(&*p.add(r * m + j)), v, *a);
            }
        }
        for (dst, a) in acc.iter_mut().zip(a) {
            _mm256_storeu_ps(dst.as_mut_ptr(), a);
        }
    }
}

/// row ← exp(row − max(row)); returns the max and the sum of the new row.
fn exp_normalise(row: &mut [f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { exp_normalise_avx2(row) };
        }
    }
    exp_normalise_generic::<false>(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_normalise_avx2(row: &mut [f32]) -> (f32, f32) {
    exp_normalise_generic::<true>(row)
}

/// Written with 8 independent lanes so the compiler vectorises it at whatever width it targets.
#[inline(always)]
fn exp_normalise_generic<const FUSED: bool>(row: &mut [f32]) -> (f32, f32) {
    const L: usize = 8;
    // Four vectors of running maxima: one would make the pass one dependency chain.
    let mut mx = [f32::NEG_INFINITY; 4 * L];
    let mut chunks = row.chunks_exact(4 * L);
    for c in &mut chunks {
        for i in 0..4 * L {
            mx[i] = if c[i] > mx[i] { c[i] } else { mx[i] };
        }
    }
    let mut max = mx.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &x in chunks.remainder() {
        max = max.max(x);
    }
    let mut acc = [0f32; L];
    let mut chunks = row.chunks_exact_mut(L);
    for c in &mut chunks {
        for i in 0..L {
            let e = exp_approx_with::<FUSED>(c[i] - max);
            c[i] = e;
            acc[i] += e;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp_approx_with::<FUSED>(*x - max);
        sum += *x;
    }
    (max, sum)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic values of roughly unit spread (a sum of 4 LCG uniforms, centred), times `scale`.
    pub(crate) fn pseudo_normal(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                let mut acc = 0f32;
                for _ in 0..4 {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    acc += (s >> 40) as f32 / (1u64 << 24) as f32;
                }
                scale * (acc - 2.0) * 1.7
            })
            .collect()
    }

    pub(crate) fn naive(q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape) -> Vec<f32> {
        let AttentionShape { heads, n, m, d, dv } = shape;
        let mut out = vec![0f32; heads * n * dv];
        for h in 0..heads {
            for i in 0..n {
                let s: Vec<f64> = (0..m)
                    .map(|j| {
                        (0..d)
                            .map(|c| (q[(h * n + i) * d + c] * k[(h * m + j) * d + c]) as f64)
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..dv {
                    out[(h * n + i) * dv + c] = ((0..m)
                        .map(|j| e[j] * v[(h * m + j) * dv + c] as f64)
                        .sum::<f64>()
                        / z) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn narrow_values_match_the_definition() {
        // Value widths the 8-float path takes (1, 3, 8) and one it does not (9); rows not a multiple of 8.
        for dv in [1, 3, 8, 9] {
            let (heads, n, m, d) = (2, ROWS + 13, 45, 8);
            let err = error_against_definition(AttentionShape { heads, n, m, d, dv }, 3.0, 7);
            assert!(err < 1e-5, "dv {dv}: max |kernel − definition| = {err}");
        }
    }

    /// max |kernel − definition| on seeded inputs, queries scaled by `q_scale` (large scores need the max
    /// shift).
    fn error_against_definition(shape: AttentionShape, q_scale: f32, seed: u64) -> f32 {
        let AttentionShape { heads, n, m, d, dv } = shape;
        let q = pseudo_normal(heads * n * d, seed, q_scale);
        let k = pseudo_normal(heads * m * d, seed + 1, 1.0);
        let v = pseudo_normal(heads * m * dv, seed + 2, 1.0);
        let got = attention_f32(&q, &k, &v, shape);
        let want = naive(&q, &k, &v, shape);
        got.iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn kernel_matches_the_definition_on_ragged_sizes() {
        // n and m not multiples of the block or lane sizes; scores large enough to need the max shift.
        let (heads, n, m, d, dv) = (3, 2 * ROWS + 5, 77, 8, 12);
        let err = error_against_definition(AttentionShape { heads, n, m, d, dv }, 4.0, 1);
        assert!(err < 1e-5, "max |kernel − definition| = {err}");
    }
}
