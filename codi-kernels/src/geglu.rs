//! GEGLU, the gated activation of SD's feed-forward: each row of the projection is [a | g] and the output is
//! a · gelu(g) (exact, erf-based gelu). burn multiplies the two strided halves element by element through a
//! generic index walk, forward and backward; these kernels read each row once.

use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::buffer::written;
use crate::math::{exp_approx_with, has_avx2_fma, mul_add};

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// erf(x), absolute error < 5e-7 (Abramowitz & Stegun 7.1.26 with the kernels' exponential), branch-free.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    erf_with::<false>(x)
}

/// [`erf`] with fused multiply-adds when `FUSED` (see [`crate::math::mul_add`]).
#[inline(always)]
fn erf_with<const FUSED: bool>(x: f32) -> f32 {
    let fma = mul_add::<FUSED>;
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let z = x.abs();
    let t = 1.0 / fma(P, z, 1.0);
    let poly = t * fma(t, fma(t, fma(t, fma(t, A[4], A[3]), A[2]), A[1]), A[0]);
    fma(-poly, exp_approx_with::<FUSED>(-z * z), 1.0).copysign(x)
}

/// Rows per parallel task: enough work to amortise the task.
fn rows_per_task(inner: usize) -> usize {
    (16_384 / inner.max(1)).max(1)
}

/// h: [rows, 2·inner] → [rows, inner], out = a · gelu(g).
pub fn geglu_f32(h: &[f32], inner: usize) -> Vec<f32> {
    let rows = h.len() / (2 * inner);
    let chunk = rows_per_task(inner);
    // SAFETY: every task writes each of its outputs.
    unsafe {
        written(rows * inner, |out| {
            out.par_chunks_mut(chunk * inner)
                .zip(h.par_chunks(chunk * 2 * inner))
                .for_each(|(out, h)| {
                    #[cfg(target_arch = "x86_64")]
                    if has_avx2_fma() {
                        // SAFETY: the CPU has the features the function is compiled for.
                        return forward_rows_avx2(out, h, inner);
                    }
                    forward_rows::<false>(out, h, inner)
                });
        })
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_rows_avx2(out: &mut [MaybeUninit<f32>], h: &[f32], inner: usize) {
    forward_rows::<true>(out, h, inner)
}

#[inline(always)]
fn forward_rows<const FUSED: bool>(out: &mut [MaybeUninit<f32>], h: &[f32], inner: usize) {
    for (o, row) in out.chunks_exact_mut(inner).zip(h.chunks_exact(2 * inner)) {
        let (a, g) = row.split_at(inner);
        for ((o, &a), &g) in o.iter_mut().zip(a).zip(g) {
            o.write(a * 0.5 * g * (1.0 + erf_with::<FUSED>(g * FRAC_1_SQRT_2)));
        }
    }
}

/// The gradient of [`geglu_f32`] with respect to h, given the output's gradient dout: [rows, inner] →
/// [rows, 2·inner] with da = dout · gelu(g), dg = dout · a · gelu′(g).
pub fn geglu_backward_f32(h: &[f32], dout: &[f32], inner: usize) -> Vec<f32> {
    let chunk = rows_per_task(inner);
    // SAFETY: every task writes each of its values of dh.
    unsafe {
        written(h.len(), |dh| {
            dh.par_chunks_mut(chunk * 2 * inner)
                .zip(h.par_chunks(chunk * 2 * inner))
                .zip(dout.par_chunks(chunk * inner))
                .for_each(|((dh, h), dout)| {
                    #[cfg(target_arch = "x86_64")]
                    if has_avx2_fma() {
                        // SAFETY: the CPU has the features the function is compiled for.
                        return backward_rows_avx2(dh, h, dout, inner);
                    }
                    backward_rows::<false>(dh, h, dout, inner)
                });
        })
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn backward_rows_avx2(dh: &mut [MaybeUninit<f32>], h: &[f32], dout: &[f32], inner: usize) {
    backward_rows::<true>(dh, h, dout, inner)
}

#[inline(always)]
fn backward_rows<const FUSED: bool>(
    dh: &mut [MaybeUninit<f32>],
    h: &[f32],
    dout: &[f32],
    inner: usize,
) {
    for ((dh, row), dout) in dh
        .chunks_exact_mut(2 * inner)
        .zip(h.chunks_exact(2 * inner))
        .zip(dout.chunks_exact(inner))
    {
        let (a, g) = row.split_at(inner);
        let (da, dg) = dh.split_at_mut(inner);
        for i in 0..inner {
            let (a, g, d) = (a[i], g[i], dout[i]);
            let cdf = 0.5 * (1.0 + erf_with::<FUSED>(g * FRAC_1_SQRT_2));
            let pdf = INV_SQRT_2PI * exp_approx_with::<FUSED>(-0.5 * g * g);
            da[i].write(d * g * cdf);
            dg[i].write(d * a * mul_add::<FUSED>(g, pdf, cdf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series in f64 (converges quickly for |x| ≤ 3).
    fn erf_reference(x: f64) -> f64 {
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_accurate() {
        for i in -300..=300 {
            let x = i as f64 / 100.0;
            let err = (erf(x as f32) as f64 - erf_reference(x)).abs();
            assert!(err < 5e-7, "erf({x}): error {err}");
        }
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    fn rows(rows: usize, inner: usize, seed: u32) -> Vec<f32> {
        (0..rows * 2 * inner)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                v as f32 / (1u32 << 24) as f32 * 8.0 - 4.0
            })
            .collect()
    }

    #[test]
    fn forward_matches_the_definition() {
        let (n, inner) = (37, 5);
        let h = rows(n, inner, 1);
        let out = geglu_f32(&h, inner);
        for r in 0..n {
            for i in 0..inner {
                let a = h[r * 2 * inner + i] as f64;
                let g = h[r * 2 * inner + inner + i] as f64;
                let want = a * 0.5 * g * (1.0 + erf_reference(g / 2f64.sqrt()));
                assert!((out[r * inner + i] as f64 - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (n, inner) = (9, 7);
        let h = rows(n, inner, 2);
        let dout: Vec<f32> = rows(n, inner, 3)[..n * inner].to_vec();
        let dh = geglu_backward_f32(&h, &dout, inner);
        let loss = |h: &[f64]| -> f64 {
            let mut s = 0.0;
            for r in 0..n {
                for i in 0..inner {
                    let a = h[r * 2 * inner + i];
                    let g = h[r * 2 * inner + inner + i];
                    s += dout[r * inner + i] as f64
                        * a
                        * 0.5
                        * g
                        * (1.0 + erf_reference(g / 2f64.sqrt()));
                }
            }
            s
        };
        let base: Vec<f64> = h.iter().map(|&v| v as f64).collect();
        for j in 0..h.len() {
            let (mut p, mut m) = (base.clone(), base.clone());
            p[j] += 1e-4;
            m[j] -= 1e-4;
            let fd = (loss(&p) - loss(&m)) / 2e-4;
            assert!(
                (dh[j] as f64 - fd).abs() < 1e-4,
                "dh[{j}] {} vs {fd}",
                dh[j]
            );
        }
    }
}
