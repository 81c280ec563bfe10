//! Image resampling on channel-major [c, h, w] f32 images: area downsampling, separable Gaussian blur and
//! bicubic interpolation (Keys, a = −0.5, edges clamped — the kernel of PIL/OpenCV's bicubic).

/// Area (box) downsampling by an integer factor. [c, h, w] → [c, h/f, w/f]
pub fn downsample_area(img: &[f32], c: usize, h: usize, w: usize, f: usize) -> Vec<f32> {
    let (nh, nw) = (h / f, w / f);
    let mut out = vec![0f32; c * nh * nw];
    let norm = 1.0 / (f * f) as f32;
    for ch in 0..c {
        for y in 0..nh {
            for x in 0..nw {
                let mut s = 0f32;
                for dy in 0..f {
                    for dx in 0..f {
                        s += img[(ch * h + y * f + dy) * w + x * f + dx];
                    }
                }
                out[(ch * nh + y) * nw + x] = s * norm;
            }
        }
    }
    out
}

/// Separable Gaussian blur with standard deviation `sigma` pixels (radius 3σ, edges clamped).
pub fn gaussian_blur(img: &[f32], c: usize, h: usize, w: usize, sigma: f32) -> Vec<f32> {
    if sigma <= 0.0 {
        return img.to_vec();
    }
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|v| v / sum).collect();
    let pass = |src: &[f32], horizontal: bool| {
        let mut dst = vec![0f32; src.len()];
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let mut s = 0f32;
                    for (j, kv) in k.iter().enumerate() {
                        let o = j as isize - r;
                        let (yy, xx) = if horizontal {
                            (y as isize, (x as isize + o).clamp(0, w as isize - 1))
                        } else {
                            ((y as isize + o).clamp(0, h as isize - 1), x as isize)
                        };
                        s += kv * src[(ch * h + yy as usize) * w + xx as usize];
                    }
                    dst[(ch * h + y) * w + x] = s;
                }
            }
        }
        dst
    };
    pass(&pass(img, true), false)
}

fn cubic(x: f32) -> f32 {
    let a = -0.5f32;
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// Bicubic resize with half-pixel centres. [c, h, w] → [c, nh, nw]
pub fn resize_bicubic(img: &[f32], c: usize, h: usize, w: usize, nh: usize, nw: usize) -> Vec<f32> {
    let weights = |n_in: usize, n_out: usize| -> Vec<[(usize, f32); 4]> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|o| {
                let src = (o as f32 + 0.5) * scale - 0.5;
                let base = src.floor();
                let mut taps = [(0usize, 0f32); 4];
                for (k, tap) in taps.iter_mut().enumerate() {
                    let i = base as isize - 1 + k as isize;
                    *tap = (
                        i.clamp(0, n_in as isize - 1) as usize,
                        cubic(src - i as f32),
                    );
                }
                taps
            })
            .collect()
    };
    let (wy, wx) = (weights(h, nh), weights(w, nw));
    let mut tmp = vec![0f32; c * h * nw];
    for ch in 0..c {
        for y in 0..h {
            for (x, taps) in wx.iter().enumerate() {
                tmp[(ch * h + y) * nw + x] = taps
                    .iter()
                    .map(|&(i, wt)| wt * img[(ch * h + y) * w + i])
                    .sum();
            }
        }
    }
    let mut out = vec![0f32; c * nh * nw];
    for ch in 0..c {
        for (y, taps) in wy.iter().enumerate() {
            for x in 0..nw {
                out[(ch * nh + y) * nw + x] = taps
                    .iter()
                    .map(|&(i, wt)| wt * tmp[(ch * h + i) * nw + x])
                    .sum();
            }
        }
    }
    out
}

pub use codi_kernels::resample::resize_triangle;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_images_stay_constant() {
        let img = vec![0.3f32; 3 * 8 * 8];
        for v in resize_bicubic(&img, 3, 8, 8, 32, 32)
            .into_iter()
            .chain(gaussian_blur(&img, 3, 8, 8, 1.5))
        {
            assert!((v - 0.3).abs() < 1e-5);
        }
        assert!(downsample_area(&img, 3, 8, 8, 4)
            .iter()
            .all(|v| (v - 0.3).abs() < 1e-6));
    }

    #[test]
    fn bicubic_reproduces_linear_ramps_inside_and_round_trips_area_means() {
        // A horizontal ramp is reproduced exactly away from the clamped edges.
        let (h, w) = (4, 8);
        let img: Vec<f32> = (0..h * w).map(|i| (i % w) as f32).collect();
        let up = resize_bicubic(&img, 1, h, w, 2 * h, 2 * w);
        for x in 4..2 * w - 4 {
            let want = (x as f32 + 0.5) / 2.0 - 0.5;
            assert!(
                (up[3 * 2 * w + x] - want).abs() < 1e-4,
                "x={x}: {} vs {want}",
                up[3 * 2 * w + x]
            );
        }
        // Downsampling by area after 2× bicubic upsampling returns close to the original.
        let down = downsample_area(&up, 1, 2 * h, 2 * w, 2);
        let err = down
            .iter()
            .zip(&img)
            .skip(w)
            .take(w * 2)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 0.1, "{err}");
    }
}
