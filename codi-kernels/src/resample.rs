//! Image resampling for the data loader: an image's square window as channel-major f32, and antialiased
//! triangle (bilinear) resizing with precomputed taps. Built at full optimisation with the other kernels:
//! at the training resolutions they run for every image read.

/// The window (`x0`, `y0`, `cw` × `ch`) of an interleaved 8-bit RGB image `width` pixels wide, as
/// channel-major values in [0, 1], mirrored left–right if `flip`. → 3 × ch × cw
#[allow(clippy::too_many_arguments)]
pub fn planar_window(
    rgb: &[u8],
    width: usize,
    x0: usize,
    y0: usize,
    cw: usize,
    ch: usize,
    flip: bool,
) -> Vec<f32> {
    let plane = cw * ch;
    let mut out = vec![0f32; 3 * plane];
    for y in 0..ch {
        let row = &rgb[((y0 + y) * width + x0) * 3..((y0 + y) * width + x0 + cw) * 3];
        for (x, px) in row.chunks_exact(3).enumerate() {
            let x = if flip { cw - 1 - x } else { x };
            for c in 0..3 {
                out[c * plane + y * cw + x] = px[c] as f32 / 255.0;
            }
        }
    }
    out
}

/// The taps of an antialiased triangle filter from `n` source samples to `m`: for each output sample, its first
/// source sample and normalised weights. The filter widens with the shrink factor, so shrinking averages
/// every source sample (PIL's and torchvision's antialiased bilinear).
fn triangle_taps(n: usize, m: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = n as f64 / m as f64;
    let support = scale.max(1.0);
    (0..m)
        .map(|i| {
            let centre = (i as f64 + 0.5) * scale;
            let lo = ((centre - support).floor().max(0.0)) as usize;
            let hi = ((centre + support).ceil() as usize).min(n);
            let mut w: Vec<f32> = (lo..hi)
                .map(|j| (1.0 - ((j as f64 + 0.5 - centre) / support).abs()).max(0.0) as f32)
                .collect();
            let sum: f32 = w.iter().sum();
            w.iter_mut().for_each(|v| *v /= sum);
            (lo, w)
        })
        .collect()
}

/// Antialiased triangle (bilinear) resampling, separable with precomputed taps. [c, h, w] → [c, nh, nw]
pub fn resize_triangle(
    img: &[f32],
    c: usize,
    h: usize,
    w: usize,
    nh: usize,
    nw: usize,
) -> Vec<f32> {
    let (xs, ys) = (triangle_taps(w, nw), triangle_taps(h, nh));
    let mut rows = vec![0f32; c * h * nw];
    for (src, dst) in img.chunks_exact(w).zip(rows.chunks_exact_mut(nw)) {
        for (d, (lo, wt)) in dst.iter_mut().zip(&xs) {
            *d = src[*lo..*lo + wt.len()]
                .iter()
                .zip(wt)
                .map(|(a, b)| a * b)
                .sum();
        }
    }
    let mut out = vec![0f32; c * nh * nw];
    for ch in 0..c {
        let plane = &rows[ch * h * nw..(ch + 1) * h * nw];
        for (y, (lo, wt)) in ys.iter().enumerate() {
            let dst = &mut out[(ch * nh + y) * nw..(ch * nh + y + 1) * nw];
            for (k, weight) in wt.iter().enumerate() {
                let src = &plane[(lo + k) * nw..(lo + k + 1) * nw];
                dst.iter_mut().zip(src).for_each(|(d, s)| *d += weight * s);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triangle_resampling_keeps_constants_ramps_and_same_size_images() {
        let (h, w) = (12, 18);
        let ramp: Vec<f32> = (0..2 * h * w).map(|i| (i % w) as f32).collect();
        assert_eq!(resize_triangle(&ramp, 2, h, w, h, w), ramp);
        let flat = resize_triangle(&vec![0.25; 2 * h * w], 2, h, w, 5, 7);
        assert!(flat.iter().all(|v| (v - 0.25).abs() < 1e-6));
        // Shrinking a ramp by 2 samples it at the output pixels' centres (away from the edges).
        let half = resize_triangle(&ramp, 2, h, w, h / 2, w / 2);
        for x in 1..w / 2 - 1 {
            let want = 2.0 * x as f32 + 0.5;
            assert!(
                (half[3 * (w / 2) + x] - want).abs() < 1e-4,
                "{x}: {}",
                half[x]
            );
        }
    }

    #[test]
    fn a_window_is_cut_flipped_and_scaled() {
        // 3 × 2 pixels; red = 10·x + y.
        let rgb: Vec<u8> = (0..2)
            .flat_map(|y| (0..3).flat_map(move |x| [10 * x + y, 0, 255]))
            .collect();
        let w = planar_window(&rgb, 3, 1, 0, 2, 2, false);
        assert_eq!(
            &w[..4],
            &[10.0 / 255.0, 20.0 / 255.0, 11.0 / 255.0, 21.0 / 255.0]
        );
        assert_eq!(&w[8..], &[1.0; 4]);
        let f = planar_window(&rgb, 3, 1, 0, 2, 2, true);
        assert_eq!(&f[..2], &[20.0 / 255.0, 10.0 / 255.0]);
    }
}
