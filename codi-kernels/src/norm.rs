//! GroupNorm, optionally fused with the SiLU that follows it in every ResNet block, in one pass over the
//! data per group and with the groups spread over rayon's threads.

use rayon::prelude::*;

use crate::math::{has_avx2_fma, mul_add, sigmoid_with, silu_with};

/// Sizes and parameters of a GroupNorm over x: [n, channels, spatial].
#[derive(Debug, Clone, Copy)]
pub struct GroupNormSpec<'a> {
    pub channels: usize,
    pub groups: usize,
    /// Product of the dimensions after the channel one.
    pub spatial: usize,
    /// γ and β: \[channels\] each, or None for no affine map.
    pub affine: Option<(&'a [f32], &'a [f32])>,
    pub eps: f32,
    /// Apply x·σ(x) to the result.
    pub silu: bool,
}

/// Normalises `x` ([n, channels, spatial], contiguous) in place; returns each (sample, group)'s mean and
/// 1/√(σ² + ε), [n·groups], which [`group_norm_backward_f32`] takes.
pub fn group_norm_f32(x: &mut [f32], spec: GroupNormSpec<'_>) -> Vec<[f32; 2]> {
    let GroupNormSpec {
        channels,
        groups,
        spatial,
        affine,
        ..
    } = spec;
    assert!(
        groups > 0 && channels % groups == 0,
        "channels must divide into groups"
    );
    let per_group = channels / groups * spatial;
    assert_eq!(
        x.len() % (channels * spatial),
        0,
        "x is not [n, channels, spatial]"
    );
    check_affine(affine, channels);
    x.par_chunks_mut(per_group)
        .enumerate()
        .map(|(i, chunk)| {
            let first_channel = (i % groups) * (channels / groups);
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: the CPU has the features the function is compiled for.
                return unsafe { normalise_group_avx2(chunk, first_channel, &spec) };
            }
            normalise_group::<false>(chunk, first_channel, &spec)
        })
        .collect()
}

fn check_affine(affine: Option<(&[f32], &[f32])>, channels: usize) {
    if let Some((g, b)) = affine {
        assert!(
            g.len() == channels && b.len() == channels,
            "γ and β must have one value per channel"
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn normalise_group_avx2(
    chunk: &mut [f32],
    first_channel: usize,
    spec: &GroupNormSpec<'_>,
) -> [f32; 2] {
    normalise_group::<true>(chunk, first_channel, spec)
}

/// One group: [channels/groups, spatial]. Mean first, then the variance of the centred values (two passes,
/// as stable as PyTorch's).
#[inline(always)]
fn normalise_group<const FUSED: bool>(
    chunk: &mut [f32],
    first_channel: usize,
    spec: &GroupNormSpec<'_>,
) -> [f32; 2] {
    let len = chunk.len() as f64;
    let mean = (lane_sum(chunk, |x| x) / len) as f32;
    let var = (lane_sum(chunk, |x| (x - mean) * (x - mean)) / len) as f32;
    let rstd = 1.0 / (var + spec.eps).sqrt();
    for (k, row) in chunk.chunks_mut(spec.spatial).enumerate() {
        let (gamma, beta) = spec.affine.map_or((1.0, 0.0), |(g, b)| {
            (g[first_channel + k], b[first_channel + k])
        });
        let scale = rstd * gamma;
        let shift = beta - mean * scale;
        let affine = |v: f32| mul_add::<FUSED>(v, scale, shift);
        if spec.silu {
            row.iter_mut()
                .for_each(|v| *v = silu_with::<FUSED>(affine(*v)));
        } else {
            row.iter_mut().for_each(|v| *v = affine(*v));
        }
    }
    [mean, rstd]
}

/// Gradients of a GroupNorm (+ SiLU): dx [n, channels, spatial], dγ and dβ \[channels\] (those of γ = 1,
/// β = 0 without an affine map).
pub struct GroupNormGrads {
    pub dx: Vec<f32>,
    pub dgamma: Vec<f32>,
    pub dbeta: Vec<f32>,
}

/// The backward pass of [`group_norm_f32`] for its input `x`, the gradient `g` of its output and the
/// statistics it returned. The output is recomputed from x, so that only x and the statistics are kept.
pub fn group_norm_backward_f32(
    x: &[f32],
    g: &[f32],
    stats: &[[f32; 2]],
    spec: GroupNormSpec<'_>,
) -> GroupNormGrads {
    let (channels, groups) = (spec.channels, spec.groups);
    let cg = channels / groups;
    let per_group = cg * spec.spatial;
    assert!(groups > 0 && channels % groups == 0);
    assert_eq!(x.len(), g.len());
    assert_eq!(
        x.len(),
        stats.len() * per_group,
        "one statistic per (sample, group)"
    );
    check_affine(spec.affine, channels);
    let mut dx = vec![0f32; x.len()];
    // Per (sample, group): that group's channels' dγ and dβ.
    let parts: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(per_group)
        .zip(x.par_chunks(per_group).zip(g.par_chunks(per_group)))
        .enumerate()
        .map(|(i, (dx, (x, g)))| {
            let first_channel = (i % groups) * cg;
            let stat = stats[i];
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: the CPU has the features the function is compiled for.
                return unsafe { backward_group_avx2(dx, x, g, stat, first_channel, &spec) };
            }
            backward_group::<false>(dx, x, g, stat, first_channel, &spec)
        })
        .collect();
    let (mut dgamma, mut dbeta) = (vec![0f32; channels], vec![0f32; channels]);
    for (i, (pg, pb)) in parts.iter().enumerate() {
        let first = (i % groups) * cg;
        for k in 0..cg {
            dgamma[first + k] += pg[k];
            dbeta[first + k] += pb[k];
        }
    }
    GroupNormGrads { dx, dgamma, dbeta }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn backward_group_avx2(
    dx: &mut [f32],
    x: &[f32],
    g: &[f32],
    stat: [f32; 2],
    first_channel: usize,
    spec: &GroupNormSpec<'_>,
) -> (Vec<f32>, Vec<f32>) {
    backward_group::<true>(dx, x, g, stat, first_channel, spec)
}

/// One group. With ŷ = (x − μ)·r, z = γŷ + β and out = silu(z) (or z): g_z = g·σ(z)(1 + z(1 − σ(z))),
/// dγ = Σ g_z ŷ, dβ = Σ g_z, and with h = γ g_z over the group's M values,
/// dx = r (h − Σh / M − ŷ Σ(h ŷ) / M).
#[inline(always)]
fn backward_group<const FUSED: bool>(
    dx: &mut [f32],
    x: &[f32],
    g: &[f32],
    [mean, rstd]: [f32; 2],
    first_channel: usize,
    spec: &GroupNormSpec<'_>,
) -> (Vec<f32>, Vec<f32>) {
    let fma = mul_add::<FUSED>;
    let cg = x.len() / spec.spatial;
    let (mut dgamma, mut dbeta) = (vec![0f32; cg], vec![0f32; cg]);
    let (mut sum_h, mut sum_hy) = (0f64, 0f64);
    let shift = -mean * rstd;
    let rows = dx
        .chunks_mut(spec.spatial)
        .zip(x.chunks(spec.spatial).zip(g.chunks(spec.spatial)));
    for (k, (dxr, (xr, gr))) in rows.enumerate() {
        let (gamma, beta) = spec.affine.map_or((1.0, 0.0), |(g, b)| {
            (g[first_channel + k], b[first_channel + k])
        });
        // g_z for one value, and ŷ.
        let grad = |xv: f32, gv: f32| {
            let y = fma(xv, rstd, shift);
            let gz = if spec.silu {
                let z = fma(gamma, y, beta);
                let s = sigmoid_with::<FUSED>(z);
                gv * s * fma(z, 1.0 - s, 1.0)
            } else {
                gv
            };
            (y, gz)
        };
        // Σ g_z ŷ and Σ g_z over the row (8 lanes per block of 1024, blocks in f64); h = γ g_z goes into dx
        // for the second pass.
        let (mut gy, mut gs) = (0f64, 0f64);
        for (db, (xb, gb)) in dxr
            .chunks_mut(1024)
            .zip(xr.chunks(1024).zip(gr.chunks(1024)))
        {
            let (mut ly, mut ls) = ([0f32; 8], [0f32; 8]);
            let mut it = db
                .chunks_exact_mut(8)
                .zip(xb.chunks_exact(8).zip(gb.chunks_exact(8)));
            for (d, (xs, gs_)) in &mut it {
                for l in 0..8 {
                    let (y, gz) = grad(xs[l], gs_[l]);
                    ly[l] = fma(gz, y, ly[l]);
                    ls[l] += gz;
                    d[l] = gamma * gz;
                }
            }
            let tail = db.len() / 8 * 8;
            for ((d, &xv), &gv) in db[tail..].iter_mut().zip(&xb[tail..]).zip(&gb[tail..]) {
                let (y, gz) = grad(xv, gv);
                ly[0] = fma(gz, y, ly[0]);
                ls[0] += gz;
                *d = gamma * gz;
            }
            gy += ly.iter().map(|&v| v as f64).sum::<f64>();
            gs += ls.iter().map(|&v| v as f64).sum::<f64>();
        }
        dgamma[k] = gy as f32;
        dbeta[k] = gs as f32;
        sum_h += gamma as f64 * gs;
        sum_hy += gamma as f64 * gy;
    }
    let m = x.len() as f64;
    let (mean_h, mean_hy) = ((sum_h / m) as f32, (sum_hy / m) as f32);
    for (d, &xv) in dx.iter_mut().zip(x) {
        let y = fma(xv, rstd, shift);
        *d = rstd * (*d - fma(y, mean_hy, mean_h));
    }
    (dgamma, dbeta)
}

/// Σ f(x) with 8 f32 lanes per block of 1024 values, blocks summed in f64.
#[inline(always)]
pub(crate) fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    const L: usize = 8;
    let mut total = 0f64;
    for block in xs.chunks(1024) {
        let mut acc = [0f32; L];
        let mut it = block.chunks_exact(L);
        for c in &mut it {
            for i in 0..L {
                acc[i] += f(c[i]);
            }
        }
        let rest: f32 = it.remainder().iter().map(|&x| f(x)).sum();
        total += acc.iter().map(|&a| a as f64).sum::<f64>() + rest as f64;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(
        x: &[f32],
        g: usize,
        s: usize,
        gamma: &[f32],
        beta: &[f32],
        act: bool,
    ) -> Vec<f32> {
        let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
        forward64(&f64s(x), &f64s(gamma), &f64s(beta), g, s, act)
            .into_iter()
            .map(|v| v as f32)
            .collect()
    }

    #[test]
    fn group_norm_and_silu_match_the_definition() {
        let (n, c, g, s) = (3, 12, 4, 37);
        let x: Vec<f32> = (0..n * c * s)
            .map(|i| ((i * 7919 % 1013) as f32 / 101.0 - 4.0) * 1.5 + 3.0)
            .collect();
        let gamma: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 / 10.0).collect();
        let beta: Vec<f32> = (0..c).map(|i| i as f32 / 7.0 - 0.8).collect();
        for act in [false, true] {
            let mut got = x.clone();
            let spec = GroupNormSpec {
                channels: c,
                groups: g,
                spatial: s,
                affine: Some((&gamma, &beta)),
                eps: 1e-5,
                silu: act,
            };
            group_norm_f32(&mut got, spec);
            let want = reference(&x, g, s, &gamma, &beta, act);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-5, "silu {act}: max error {err}");
        }
    }

    /// The forward pass in f64 over [n, c, s], for finite differences.
    fn forward64(
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
        g: usize,
        s: usize,
        act: bool,
    ) -> Vec<f64> {
        let c = gamma.len();
        let cg = c / g;
        let mut out = vec![0f64; x.len()];
        for (gi, (o, v)) in out.chunks_mut(cg * s).zip(x.chunks(cg * s)).enumerate() {
            let m = v.len() as f64;
            let mean = v.iter().sum::<f64>() / m;
            let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / m;
            for (k, (o, a)) in o.iter_mut().zip(v).enumerate() {
                let ch = (gi % g) * cg + k / s;
                let z = (a - mean) / (var + 1e-5).sqrt() * gamma[ch] + beta[ch];
                *o = if act { z / (1.0 + (-z).exp()) } else { z };
            }
        }
        out
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (n, c, g, s) = (2, 6, 3, 1030);
        let x: Vec<f32> = (0..n * c * s)
            .map(|i| ((i * 7919 % 1013) as f32 / 101.0 - 4.0) * 0.7 + 0.5)
            .collect();
        let w: Vec<f32> = (0..x.len())
            .map(|i| ((i * 104_729 % 997) as f32 / 499.0) - 1.0)
            .collect();
        let gamma: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 / 10.0).collect();
        let beta: Vec<f32> = (0..c).map(|i| i as f32 / 7.0 - 0.3).collect();
        let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
        for act in [false, true] {
            let spec = GroupNormSpec {
                channels: c,
                groups: g,
                spatial: s,
                affine: Some((&gamma, &beta)),
                eps: 1e-5,
                silu: act,
            };
            let stats = group_norm_f32(&mut x.clone(), spec);
            let got = group_norm_backward_f32(&x, &w, &stats, spec);
            // L = Σ w·out; central differences in f64.
            let loss = |x: &[f64], gm: &[f64], bt: &[f64]| {
                forward64(x, gm, bt, g, s, act)
                    .iter()
                    .zip(&w)
                    .map(|(o, &w)| o * w as f64)
                    .sum::<f64>()
            };
            let (x64, g64, b64) = (f64s(&x), f64s(&gamma), f64s(&beta));
            let h = 1e-4;
            let fd = |which: usize, i: usize| {
                let mut v = [x64.clone(), g64.clone(), b64.clone()];
                v[which][i] += h;
                let up = loss(&v[0], &v[1], &v[2]);
                v[which][i] -= 2.0 * h;
                (up - loss(&v[0], &v[1], &v[2])) / (2.0 * h)
            };
            for i in [0, 17, 1029, 1030, 4000, x.len() - 1] {
                let (a, b) = (got.dx[i] as f64, fd(0, i));
                assert!(
                    (a - b).abs() < 1e-4 * b.abs().max(1.0),
                    "silu {act} dx[{i}]: {a} vs {b}"
                );
            }
            for i in 0..c {
                let (a, b) = (got.dgamma[i] as f64, fd(1, i));
                assert!(
                    (a - b).abs() < 1e-3 * b.abs().max(1.0),
                    "silu {act} dγ[{i}]: {a} vs {b}"
                );
                let (a, b) = (got.dbeta[i] as f64, fd(2, i));
                assert!(
                    (a - b).abs() < 1e-3 * b.abs().max(1.0),
                    "silu {act} dβ[{i}]: {a} vs {b}"
                );
            }
        }
    }
}
