//! LayerNorm over the last axis and its backward pass, rows spread over rayon's threads. burn-flex fuses the
//! forward for inference, but under autodiff burn records LayerNorm as its definition, a dozen element-wise
//! ops over the tokens (forward and backward) in every transformer block.

use rayon::prelude::*;

use crate::math::{has_avx2_fma, mul_add};
use crate::norm::lane_sum;

/// A LayerNorm over rows of `width` floats: y = (x − μ) / √(σ² + ε) · γ + β.
#[derive(Debug, Clone, Copy)]
pub struct LayerNormSpec<'a> {
    pub width: usize,
    /// γ: \[width\].
    pub gamma: &'a [f32],
    /// β: \[width\], or None.
    pub beta: Option<&'a [f32]>,
    pub eps: f32,
}

impl LayerNormSpec<'_> {
    fn check(&self, len: usize) {
        assert!(
            self.width > 0 && len.is_multiple_of(self.width),
            "x is not [rows, width]"
        );
        assert_eq!(
            self.gamma.len(),
            self.width,
            "γ must have one value per column"
        );
        if let Some(b) = self.beta {
            assert_eq!(b.len(), self.width, "β must have one value per column");
        }
    }

    /// Rows per task: about 16 K floats, so that small layers stay on one thread.
    fn rows_per_task(&self) -> usize {
        (16_384 / self.width).max(1)
    }
}

/// Normalises x ([rows, width], contiguous) in place; returns each row's mean and 1/√(σ² + ε), which
/// [`layer_norm_backward_f32`] takes.
pub fn layer_norm_f32(x: &mut [f32], spec: LayerNormSpec<'_>) -> Vec<[f32; 2]> {
    spec.check(x.len());
    let w = spec.width;
    let mut stats = vec![[0f32; 2]; x.len() / w];
    let per = spec.rows_per_task();
    x.par_chunks_mut(per * w)
        .zip(stats.par_chunks_mut(per))
        .for_each(|(xs, st)| {
            for (row, s) in xs.chunks_exact_mut(w).zip(st) {
                #[cfg(target_arch = "x86_64")]
                if has_avx2_fma() {
                    // SAFETY: the CPU has the features the function is compiled for.
                    *s = unsafe { normalise_row_avx2(row, &spec) };
                    continue;
                }
                *s = normalise_row::<false>(row, &spec);
            }
        });
    stats
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn normalise_row_avx2(row: &mut [f32], spec: &LayerNormSpec<'_>) -> [f32; 2] {
    normalise_row::<true>(row, spec)
}

/// Mean first, then the variance of the centred values (two passes, as PyTorch computes it).
#[inline(always)]
fn normalise_row<const FUSED: bool>(row: &mut [f32], spec: &LayerNormSpec<'_>) -> [f32; 2] {
    let n = row.len() as f64;
    let mean = (lane_sum(row, |x| x) / n) as f32;
    let var = (lane_sum(row, |x| (x - mean) * (x - mean)) / n) as f32;
    let rstd = 1.0 / (var + spec.eps).sqrt();
    match spec.beta {
        Some(beta) => {
            for ((v, &g), &b) in row.iter_mut().zip(spec.gamma).zip(beta) {
                *v = mul_add::<FUSED>((*v - mean) * rstd, g, b);
            }
        }
        None => {
            for (v, &g) in row.iter_mut().zip(spec.gamma) {
                *v = (*v - mean) * rstd * g;
            }
        }
    }
    [mean, rstd]
}

/// Gradients of a LayerNorm: dx [rows, width], dγ and dβ \[width\].
pub struct LayerNormGrads {
    pub dx: Vec<f32>,
    pub dgamma: Vec<f32>,
    pub dbeta: Vec<f32>,
}

/// The backward pass of [`layer_norm_f32`] given its input `x`, the gradient `g` of its output and the
/// statistics it returned: with x̂ = (x − μ)·r and ĝ = g ∘ γ, dx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ ∘ x̂)),
/// dγ = Σ_rows g ∘ x̂, dβ = Σ_rows g.
pub fn layer_norm_backward_f32(
    x: &[f32],
    g: &[f32],
    stats: &[[f32; 2]],
    spec: LayerNormSpec<'_>,
) -> LayerNormGrads {
    spec.check(x.len());
    let w = spec.width;
    assert_eq!(g.len(), x.len());
    assert_eq!(stats.len() * w, x.len(), "one statistic per row");
    let mut dx = vec![0f32; x.len()];
    let per = spec.rows_per_task();
    let zeros = || (vec![0f32; w], vec![0f32; w]);
    let (dgamma, dbeta) = dx
        .par_chunks_mut(per * w)
        .zip(x.par_chunks(per * w).zip(g.par_chunks(per * w)))
        .zip(stats.par_chunks(per))
        .fold(zeros, |(mut dgamma, mut dbeta), ((dx, (x, g)), st)| {
            for (((dx, x), g), &s) in dx
                .chunks_exact_mut(w)
                .zip(x.chunks_exact(w))
                .zip(g.chunks_exact(w))
                .zip(st)
            {
                #[cfg(target_arch = "x86_64")]
                if has_avx2_fma() {
                    // SAFETY: the CPU has the features the function is compiled for.
                    unsafe { backward_row_avx2(dx, x, g, s, spec.gamma, &mut dgamma, &mut dbeta) };
                    continue;
                }
                backward_row::<false>(dx, x, g, s, spec.gamma, &mut dgamma, &mut dbeta);
            }
            (dgamma, dbeta)
        })
        .reduce(zeros, |(mut ga, mut ba), (gb, bb)| {
            ga.iter_mut().zip(&gb).for_each(|(a, b)| *a += b);
            ba.iter_mut().zip(&bb).for_each(|(a, b)| *a += b);
            (ga, ba)
        });
    LayerNormGrads { dx, dgamma, dbeta }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn backward_row_avx2(
    dx: &mut [f32],
    x: &[f32],
    g: &[f32],
    stat: [f32; 2],
    gamma: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    backward_row::<true>(dx, x, g, stat, gamma, dgamma, dbeta)
}

#[inline(always)]
fn backward_row<const FUSED: bool>(
    dx: &mut [f32],
    x: &[f32],
    g: &[f32],
    [mean, rstd]: [f32; 2],
    gamma: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let n = x.len() as f32;
    // mean(ĝ) and mean(ĝ ∘ x̂), with dγ and dβ on the way.
    let (mut sg, mut sgx) = ([0f32; 8], [0f32; 8]);
    for (i, ((((&xv, &gv), &ga), dga), dbe)) in x
        .iter()
        .zip(g)
        .zip(gamma)
        .zip(dgamma.iter_mut())
        .zip(dbeta.iter_mut())
        .enumerate()
    {
        let xh = (xv - mean) * rstd;
        let gh = gv * ga;
        *dga = mul_add::<FUSED>(gv, xh, *dga);
        *dbe += gv;
        sg[i % 8] += gh;
        sgx[i % 8] = mul_add::<FUSED>(gh, xh, sgx[i % 8]);
    }
    let mg = sg.iter().sum::<f32>() / n;
    let mgx = sgx.iter().sum::<f32>() / n;
    for (((d, &xv), &gv), &ga) in dx.iter_mut().zip(x).zip(g).zip(gamma) {
        let xh = (xv - mean) * rstd;
        *d = rstd * (gv * ga - mg - xh * mgx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::tests::pseudo_normal;

    /// The definition in f64: y, and the gradients of L = Σ y ∘ w for a fixed w.
    fn reference(
        x: &[f32],
        w: &[f32],
        spec: &LayerNormSpec,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let width = spec.width;
        let mut y = vec![0f64; x.len()];
        let mut dx = vec![0f64; x.len()];
        let (mut dg, mut db) = (vec![0f64; width], vec![0f64; width]);
        for ((row, wr), (yr, dxr)) in x
            .chunks(width)
            .zip(w.chunks(width))
            .zip(y.chunks_mut(width).zip(dx.chunks_mut(width)))
        {
            let n = width as f64;
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let r = 1.0 / (var + spec.eps as f64).sqrt();
            let xh: Vec<f64> = row.iter().map(|&v| (v as f64 - mean) * r).collect();
            let gh: Vec<f64> = (0..width)
                .map(|c| wr[c] as f64 * spec.gamma[c] as f64)
                .collect();
            let mg = gh.iter().sum::<f64>() / n;
            let mgx = gh.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / n;
            for c in 0..width {
                let b = spec.beta.map_or(0.0, |b| b[c] as f64);
                yr[c] = xh[c] * spec.gamma[c] as f64 + b;
                dxr[c] = r * (gh[c] - mg - xh[c] * mgx);
                dg[c] += wr[c] as f64 * xh[c];
                db[c] += wr[c] as f64;
            }
        }
        (y, dx, dg, db)
    }

    fn max_diff(a: &[f32], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&a, b)| (a as f64 - b).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn matches_the_definition_and_its_gradients() {
        // Widths below, at and above a vector, rows spanning several tasks, with and without β.
        for (rows, width) in [(3, 5), (7, 8), (2_000, 21), (40, 1_000)] {
            let x = pseudo_normal(rows * width, 1, 3.0);
            let gamma = pseudo_normal(width, 2, 1.0);
            let beta = pseudo_normal(width, 3, 1.0);
            let w = pseudo_normal(rows * width, 4, 1.0);
            for with_beta in [true, false] {
                let spec = LayerNormSpec {
                    width,
                    gamma: &gamma,
                    beta: with_beta.then_some(&beta[..]),
                    eps: 1e-5,
                };
                let (y, dx, dg, db) = reference(&x, &w, &spec);
                let mut out = x.clone();
                let stats = layer_norm_f32(&mut out, spec);
                assert!(
                    max_diff(&out, &y) < 1e-5,
                    "y, {rows}×{width}: {}",
                    max_diff(&out, &y)
                );
                let grads = layer_norm_backward_f32(&x, &w, &stats, spec);
                let scale = |v: &[f64]| v.iter().fold(1f64, |m, x| m.max(x.abs()));
                assert!(
                    max_diff(&grads.dx, &dx) < 1e-5 * scale(&dx),
                    "dx, {rows}×{width}"
                );
                assert!(
                    max_diff(&grads.dgamma, &dg) < 1e-5 * scale(&dg),
                    "dγ, {rows}×{width}"
                );
                assert!(
                    max_diff(&grads.dbeta, &db) < 1e-5 * scale(&db),
                    "dβ, {rows}×{width}"
                );
            }
        }
    }
}
