//! GroupNorm, optionally fused with the SiLU that follows it in every ResNet block, in one pass over the
//! data per group and with the groups spread over rayon's threads.

use rayon::prelude::*;

use crate::math::{has_avx2_fma, mul_add, silu_with};

/// Sizes and parameters of a GroupNorm over x: [n, channels, spatial].
#[derive(Debug, Clone, Copy)]
pub struct GroupNormSpec<'a> {
    pub channels: usize,
    pub groups: usize,
    /// Product of the dimensions after the channel one.
    pub spatial: usize,
    /// γ and β: [channels] each, or None for no affine map.
    pub affine: Option<(&'a [f32], &'a [f32])>,
    pub eps: f32,
    /// Apply x·σ(x) to the result.
    pub silu: bool,
}

/// Normalises `x` ([n, channels, spatial], contiguous) in place.
pub fn group_norm_f32(x: &mut [f32], spec: GroupNormSpec<'_>) {
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
    if let Some((g, b)) = affine {
        assert!(
            g.len() == channels && b.len() == channels,
            "γ and β must have one value per channel"
        );
    }
    x.par_chunks_mut(per_group)
        .enumerate()
        .for_each(|(i, chunk)| {
            let first_channel = (i % groups) * (channels / groups);
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: the CPU has the features the function is compiled for.
                return unsafe { normalise_group_avx2(chunk, first_channel, &spec) };
            }
            normalise_group::<false>(chunk, first_channel, &spec)
        });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn normalise_group_avx2(chunk: &mut [f32], first_channel: usize, spec: &GroupNormSpec<'_>) {
    normalise_group::<true>(chunk, first_channel, spec)
}

/// One group: [channels/groups, spatial]. Mean first, then the variance of the centred values (two passes,
/// as stable as PyTorch's).
#[inline(always)]
fn normalise_group<const FUSED: bool>(
    chunk: &mut [f32],
    first_channel: usize,
    spec: &GroupNormSpec<'_>,
) {
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
}

/// Σ f(x) with 8 f32 lanes per block of 1024 values, blocks summed in f64.
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f64 {
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
        c: usize,
        g: usize,
        s: usize,
        gamma: &[f32],
        beta: &[f32],
        act: bool,
    ) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        let cg = c / g;
        for (ni, sample) in x.chunks(c * s).enumerate() {
            for gi in 0..g {
                let vals = &sample[gi * cg * s..(gi + 1) * cg * s];
                let mean = vals.iter().map(|&v| v as f64).sum::<f64>() / vals.len() as f64;
                let var = vals.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>()
                    / vals.len() as f64;
                for k in 0..cg * s {
                    let ch = gi * cg + k / s;
                    let y = (vals[k] as f64 - mean) / (var + 1e-5).sqrt() * gamma[ch] as f64
                        + beta[ch] as f64;
                    let y = if act { y / (1.0 + (-y).exp()) } else { y };
                    out[ni * c * s + gi * cg * s + k] = y as f32;
                }
            }
        }
        out
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
            let want = reference(&x, c, g, s, &gamma, &beta, act);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-5, "silu {act}: max error {err}");
        }
    }
}
