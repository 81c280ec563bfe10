//! GEGLU, the gated activation of SD's feed-forward: each row of the projection is [a | g] and the output is
//! a · gelu(g) (exact, erf-based gelu). burn multiplies the two strided halves element by element through a
//! generic index walk, forward and backward; these kernels read each row once.

use rayon::prelude::*;

use crate::math::exp_approx;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// erf(x), absolute error < 5e-7 (Abramowitz & Stegun 7.1.26 with the kernels' exponential), branch-free.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let z = x.abs();
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    (1.0 - poly * exp_approx(-z * z)).copysign(x)
}

/// Rows per parallel task: enough work to amortise the task.
fn rows_per_task(inner: usize) -> usize {
    (16_384 / inner.max(1)).max(1)
}

/// h: [rows, 2·inner] → [rows, inner], out = a · gelu(g).
pub fn geglu_f32(h: &[f32], inner: usize) -> Vec<f32> {
    let rows = h.len() / (2 * inner);
    let mut out = vec![0.0f32; rows * inner];
    let chunk = rows_per_task(inner);
    out.par_chunks_mut(chunk * inner)
        .zip(h.par_chunks(chunk * 2 * inner))
        .for_each(|(out, h)| {
            for (o, row) in out.chunks_exact_mut(inner).zip(h.chunks_exact(2 * inner)) {
                let (a, g) = row.split_at(inner);
                for ((o, &a), &g) in o.iter_mut().zip(a).zip(g) {
                    *o = a * 0.5 * g * (1.0 + erf(g * FRAC_1_SQRT_2));
                }
            }
        });
    out
}

/// The gradient of [`geglu_f32`] with respect to h, given the output's gradient dout: [rows, inner] →
/// [rows, 2·inner] with da = dout · gelu(g), dg = dout · a · gelu′(g).
pub fn geglu_backward_f32(h: &[f32], dout: &[f32], inner: usize) -> Vec<f32> {
    let mut dh = vec![0.0f32; h.len()];
    let chunk = rows_per_task(inner);
    dh.par_chunks_mut(chunk * 2 * inner)
        .zip(h.par_chunks(chunk * 2 * inner))
        .zip(dout.par_chunks(chunk * inner))
        .for_each(|((dh, h), dout)| {
            for ((dh, row), dout) in dh
                .chunks_exact_mut(2 * inner)
                .zip(h.chunks_exact(2 * inner))
                .zip(dout.chunks_exact(inner))
            {
                let (a, g) = row.split_at(inner);
                let (da, dg) = dh.split_at_mut(inner);
                for i in 0..inner {
                    let (a, g, d) = (a[i], g[i], dout[i]);
                    let cdf = 0.5 * (1.0 + erf(g * FRAC_1_SQRT_2));
                    let pdf = INV_SQRT_2PI * exp_approx(-0.5 * g * g);
                    da[i] = d * g * cdf;
                    dg[i] = d * a * (cdf + g * pdf);
                }
            }
        });
    dh
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
