//! Evaluation metrics: the Fréchet distance between feature distributions (FD, the FID formula on any
//! feature extractor), PSNR and SSIM.

/// Mean and covariance of a set of feature vectors, accumulated in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    /// Length of each feature vector.
    pub dim: usize,
    /// Number of feature vectors accumulated.
    pub n: usize,
    /// Mean feature vector, length `dim`.
    pub mean: Vec<f64>,
    /// Row-major dim × dim, unbiased (n − 1).
    pub cov: Vec<f64>,
}

impl FeatureStats {
    /// features: n × dim, row-major.
    pub fn from_features(features: &[f32], dim: usize) -> Self {
        assert!(dim > 0 && features.len().is_multiple_of(dim));
        let n = features.len() / dim;
        let mut mean = vec![0f64; dim];
        for row in features.chunks(dim) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += x as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
        let mut cov = vec![0f64; dim * dim];
        let mut centred = vec![0f64; dim];
        for row in features.chunks(dim) {
            for ((c, &x), m) in centred.iter_mut().zip(row).zip(&mean) {
                *c = x as f64 - m;
            }
            for i in 0..dim {
                let ci = centred[i];
                for j in i..dim {
                    cov[i * dim + j] += ci * centred[j];
                }
            }
        }
        let denom = (n.max(2) - 1) as f64;
        for i in 0..dim {
            for j in i..dim {
                let v = cov[i * dim + j] / denom;
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        Self { dim, n, mean, cov }
    }
}

/// Eigen-decomposition of a symmetric matrix (cyclic Jacobi). → (eigenvalues, eigenvectors as columns)
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        let scale: f64 = (0..n)
            .map(|i| a[i * n + i].powi(2))
            .sum::<f64>()
            .max(1e-300);
        if off <= 1e-26 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0f64; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            if aik == 0.0 {
                continue;
            }
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    c
}

/// FD = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½). The trace of the root is computed as Σ √λ of the symmetric
/// matrix Σ₁^½ Σ₂ Σ₁^½, which has the same eigenvalues as Σ₁ Σ₂.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> f64 {
    assert_eq!(a.dim, b.dim, "feature dimensions differ");
    let n = a.dim;
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let (lam, vecs) = symmetric_eigen(&a.cov, n);
    // Σ₁^½ = V diag(√λ) Vᵀ
    let mut root = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            root[i * n + j] = (0..n)
                .map(|k| vecs[i * n + k] * lam[k].max(0.0).sqrt() * vecs[j * n + k])
                .sum();
        }
    }
    let m = matmul(&matmul(&root, &b.cov, n), &root, n);
    // Symmetrise against rounding before the eigen-solve.
    let m: Vec<f64> = (0..n * n)
        .map(|k| 0.5 * (m[k] + m[(k % n) * n + k / n]))
        .collect();
    let (mu, _) = symmetric_eigen(&m, n);
    let tr_root: f64 = mu.iter().map(|&x| x.max(0.0).sqrt()).sum();
    let tr = |s: &FeatureStats| (0..n).map(|i| s.cov[i * n + i]).sum::<f64>();
    (mean_term + tr(a) + tr(b) - 2.0 * tr_root).max(0.0)
}

/// PSNR in dB of `x` against `reference`, both with values in [0, `range`].
pub fn psnr(x: &[f32], reference: &[f32], range: f64) -> f64 {
    assert_eq!(x.len(), reference.len());
    let mse = x
        .iter()
        .zip(reference)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum::<f64>()
        / x.len().max(1) as f64;
    10.0 * (range * range / mse.max(1e-20)).log10()
}

/// SSIM (Wang et al. 2004: 11×11 Gaussian window, σ = 1.5, K₁ = 0.01, K₂ = 0.03) of two [c, h, w] images with
/// values in [0, `range`], averaged over channels and over the window positions that fit in the image (the
/// window shrinks to the image for images smaller than 11 pixels).
pub fn ssim(x: &[f32], y: &[f32], c: usize, h: usize, w: usize, range: f64) -> f64 {
    assert_eq!(x.len(), c * h * w);
    assert_eq!(y.len(), x.len());
    let k = 11.min(h).min(w);
    let r = (k / 2) as isize;
    let g: Vec<f64> = (-r..=r)
        .take(k)
        .map(|i| (-((i * i) as f64) / (2.0 * 1.5 * 1.5)).exp())
        .collect();
    let gs: f64 = g.iter().sum();
    let g: Vec<f64> = g.iter().map(|v| v / gs).collect();
    let (c1, c2) = ((0.01 * range).powi(2), (0.03 * range).powi(2));
    let mut total = 0.0;
    let mut count = 0usize;
    for ch in 0..c {
        let at = |img: &[f32], yy: usize, xx: usize| img[(ch * h + yy) * w + xx] as f64;
        for y0 in 0..=h - k {
            for x0 in 0..=w - k {
                let (mut mx, mut my, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for (dy, gy) in g.iter().enumerate() {
                    for (dx, gx) in g.iter().enumerate() {
                        let wgt = gy * gx;
                        let (a, b) = (at(x, y0 + dy, x0 + dx), at(y, y0 + dy, x0 + dx));
                        mx += wgt * a;
                        my += wgt * b;
                        sxx += wgt * a * a;
                        syy += wgt * b * b;
                        sxy += wgt * a * b;
                    }
                }
                let (vx, vy, cov) = (sxx - mx * mx, syy - my * my, sxy - mx * my);
                total += ((2.0 * mx * my + c1) * (2.0 * cov + c2))
                    / ((mx * mx + my * my + c1) * (vx + vy + c2));
                count += 1;
            }
        }
    }
    total / count.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::SeededNoise;

    fn stats(mean: Vec<f64>, cov: Vec<f64>) -> FeatureStats {
        FeatureStats {
            dim: mean.len(),
            n: 0,
            mean,
            cov,
        }
    }

    #[test]
    fn eigen_reconstructs_a_symmetric_matrix() {
        let n = 6;
        let mut r = SeededNoise::new(3);
        let x = r.normals(n * n);
        let a: Vec<f64> = (0..n * n)
            .map(|k| (x[k] + x[(k % n) * n + k / n]) as f64)
            .collect();
        let (l, v) = symmetric_eigen(&a, n);
        for i in 0..n {
            for j in 0..n {
                let rec: f64 = (0..n).map(|k| v[i * n + k] * l[k] * v[j * n + k]).sum();
                assert!((rec - a[i * n + j]).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn fd_matches_the_closed_form_for_commuting_covariances() {
        // Diagonal covariances: FD = ‖Δμ‖² + Σ (σ₁ − σ₂)².
        let a = stats(
            vec![0.0, 1.0, 2.0],
            vec![4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 9.0],
        );
        let b = stats(
            vec![1.0, 1.0, 0.0],
            vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 4.0],
        );
        let want = (1.0 + 0.0 + 4.0) + (1.0 + 0.0 + 1.0);
        assert!((frechet_distance(&a, &b) - want).abs() < 1e-9);
        assert!(frechet_distance(&a, &a).abs() < 1e-9);
        // Symmetric in its arguments, also for non-diagonal covariances.
        let c = stats(
            vec![0.0, 0.0, 0.0],
            vec![2.0, 0.5, 0.1, 0.5, 1.0, 0.2, 0.1, 0.2, 3.0],
        );
        assert!((frechet_distance(&a, &c) - frechet_distance(&c, &a)).abs() < 1e-8);
    }

    #[test]
    fn fd_of_samples_from_one_distribution_is_small_and_grows_with_a_shift() {
        let mut r = SeededNoise::new(7);
        let d = 4;
        let x = r.normals(4000 * d);
        let y = r.normals(4000 * d);
        let shifted: Vec<f32> = y.iter().map(|v| v + 1.0).collect();
        let (sx, sy, ss) = (
            FeatureStats::from_features(&x, d),
            FeatureStats::from_features(&y, d),
            FeatureStats::from_features(&shifted, d),
        );
        assert_eq!(sx.n, 4000);
        let same = frechet_distance(&sx, &sy);
        let moved = frechet_distance(&sx, &ss);
        assert!(same < 0.02, "{same}");
        assert!((moved - 4.0).abs() < 0.2, "{moved}");
    }

    #[test]
    fn ssim_is_one_for_equal_images_and_falls_with_noise() {
        let mut r = SeededNoise::new(2);
        let img: Vec<f32> = r.uniform(3 * 32 * 32);
        assert!((ssim(&img, &img, 3, 32, 32, 1.0) - 1.0).abs() < 1e-9);
        let noisy: Vec<f32> = img
            .iter()
            .zip(r.normals(img.len()))
            .map(|(a, n)| a + 0.05 * n)
            .collect();
        let very: Vec<f32> = img
            .iter()
            .zip(r.normals(img.len()))
            .map(|(a, n)| a + 0.3 * n)
            .collect();
        let (s1, s2) = (
            ssim(&img, &noisy, 3, 32, 32, 1.0),
            ssim(&img, &very, 3, 32, 32, 1.0),
        );
        assert!(s1 < 1.0 && s2 < s1 && s2 > -1.0, "{s1} {s2}");
        // A constant offset keeps structure but lowers the luminance term a little.
        let shifted: Vec<f32> = img.iter().map(|v| v + 0.1).collect();
        let s3 = ssim(&img, &shifted, 3, 32, 32, 1.0);
        assert!(s3 > 0.9 && s3 < 1.0, "{s3}");
    }

    #[test]
    fn psnr_of_a_known_error() {
        let a = vec![0.5f32; 100];
        let b = vec![0.6f32; 100];
        assert!((psnr(&a, &b, 1.0) - 20.0).abs() < 1e-4);
    }
}
