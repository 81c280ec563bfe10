//! Branch-free scalar maths written so that loops over slices vectorise.

/// Whether the kernels run their AVX2 + FMA builds (checked once): the CPU has both, and the environment
/// does not set `CODI_PORTABLE_KERNELS` (to anything but `0`), which forces the portable builds, as on a CPU
/// without them, so that those are tested too.
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            !crate::env_flag("CODI_PORTABLE_KERNELS")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// a·b + c, as one fused instruction when `FUSED` (only inside functions compiled with FMA: elsewhere it
/// would be a libm call), else a multiply and an add (Rust never contracts them itself).
#[inline(always)]
pub fn mul_add<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// eˣ for x ≤ 0 (relative error < 2e-7, 0 below −87), branch-free so that it vectorises: x = n·ln2 + r with
/// |r| ≤ ln2/2 (Cody–Waite), eʳ by its degree-6 Taylor polynomial, 2ⁿ through the exponent bits.
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    exp_approx_with::<false>(x)
}

/// [`exp_approx`] with its multiply-adds fused when `FUSED` (half the instructions and half the dependency
/// chain of the polynomial).
#[inline(always)]
pub fn exp_approx_with<const FUSED: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5·2²³ rounds to the nearest integer and leaves it in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    const C: [f32; 6] = [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0];
    let fma = mul_add::<FUSED>;
    let x = x.max(-87.0);
    let t = fma(x, LOG2E, MAGIC);
    let n = t - MAGIC;
    let r = fma(-n, LN2_LO, fma(-n, LN2_HI, x));
    let p = fma(
        C.iter().skip(1).fold(C[0], |acc, &c| fma(acc, r, c)),
        r,
        1.0,
    );
    // Wrapping: an overflow check (debug builds) would stop the loop from vectorising.
    let bits = (t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127)) << 23;
    p * f32::from_bits(bits)
}

/// x·σ(x) = x / (1 + e⁻ˣ), with e^(−|x|) so that the exponential never overflows.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    silu_with::<false>(x)
}

/// [`silu`] on [`exp_approx_with`].
#[inline(always)]
pub fn silu_with<const FUSED: bool>(x: f32) -> f32 {
    x * sigmoid_with::<FUSED>(x)
}

/// σ(x) = 1 / (1 + e⁻ˣ) on [`exp_approx_with`], through e^(−|x|) so that the exponential never overflows.
#[inline(always)]
pub fn sigmoid_with<const FUSED: bool>(x: f32) -> f32 {
    let e = exp_approx_with::<FUSED>(-x.abs());
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

/// x ← x·σ(x) in place, vectorised, in chunks over rayon's threads.
pub fn silu_f32(x: &mut [f32]) {
    use rayon::prelude::*;
    x.par_chunks_mut(1 << 14).for_each(|c| {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { silu_avx2(c) };
        }
        c.iter_mut().for_each(|v| *v = silu(*v));
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_avx2(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = silu_with::<true>(*v));
}

/// g · d(x·σ(x))/dx = g·σ(x)(1 + x(1 − σ(x))) per element, vectorised, in chunks over rayon's threads.
pub fn silu_backward_f32(x: &[f32], g: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    assert_eq!(
        x.len(),
        g.len(),
        "silu_backward_f32: x and g differ in length"
    );
    const CHUNK: usize = 1 << 14;
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
        .for_each(|(d, (x, g))| {
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: the CPU has the features the function is compiled for.
                return unsafe { silu_backward_avx2(d, x, g) };
            }
            silu_backward_rows::<false>(d, x, g)
        });
    dx
}

#[inline(always)]
fn silu_backward_rows<const FUSED: bool>(d: &mut [f32], x: &[f32], g: &[f32]) {
    for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
        let s = sigmoid_with::<FUSED>(x);
        *d = g * s * (1.0 + x * (1.0 - s));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_backward_avx2(d: &mut [f32], x: &[f32], g: &[f32]) {
    silu_backward_rows::<true>(d, x, g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_is_accurate_over_the_softmax_range() {
        for exp in [exp_approx, exp_approx_with::<true>] {
            let mut worst = 0f64;
            for i in 0..=200_000 {
                let x = -87.0 * i as f32 / 200_000.0;
                let rel = ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
                worst = worst.max(rel);
            }
            assert!(worst < 5e-7, "worst relative error {worst}");
        }
        assert_eq!(exp_approx(0.0), 1.0);
        assert_eq!(exp_approx(-200.0), exp_approx(-87.0));
    }

    #[test]
    fn silu_matches_its_definition() {
        for i in -4000..=4000 {
            let x = i as f32 / 100.0;
            let want = x as f64 / (1.0 + (-x as f64).exp());
            let got = silu(x) as f64;
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "silu({x}) = {got}, want {want}"
            );
        }
        let mut xs: Vec<f32> = (0..40_000).map(|i| (i as f32 - 20_000.0) / 500.0).collect();
        let want: Vec<f32> = xs.iter().map(|&x| silu(x)).collect();
        silu_f32(&mut xs);
        for (g, w) in xs.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "silu_f32 {g} vs {w}"
            );
        }
        assert!(silu(-200.0).abs() < 1e-30);
        assert_eq!(silu(200.0), 200.0);
    }

    #[test]
    fn silu_backward_matches_the_derivative() {
        // Against a central difference of the exact SiLU in f64, over both signs and the saturated tails.
        let xs: Vec<f32> = (0..40_001).map(|i| (i as f32 - 20_000.0) / 500.0).collect();
        let g: Vec<f32> = (0..xs.len()).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let dx = silu_backward_f32(&xs, &g);
        let exact = |x: f64| x / (1.0 + (-x).exp());
        for ((&x, &g), &d) in xs.iter().zip(&g).zip(&dx) {
            let h = 1e-4;
            let want = g as f64 * (exact(x as f64 + h) - exact(x as f64 - h)) / (2.0 * h);
            assert!(
                (d as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                "silu'({x})·{g} = {d}, want {want}"
            );
        }
    }
}
