//! The editing instructions' exact edits on [3, s, s] images in [0, 1].

use codi_pipelines::resize::{downsample_area, resize_bicubic};

fn map_pixels(
    img: &[f32],
    s: usize,
    from: impl Fn(usize, usize) -> Option<(usize, usize)>,
    fill: [f32; 3],
) -> Vec<f32> {
    let mut out = vec![0f32; 3 * s * s];
    for c in 0..3 {
        for y in 0..s {
            for x in 0..s {
                out[(c * s + y) * s + x] = match from(y, x) {
                    Some((sy, sx)) => img[(c * s + sy) * s + sx],
                    None => fill[c],
                };
            }
        }
    }
    out
}

/// The mean colour of the border pixels: what a shift or zoom-out reveals.
fn border_colour(img: &[f32], s: usize) -> [f32; 3] {
    let mut sum = [0f32; 3];
    let mut n = 0;
    for y in 0..s {
        for x in 0..s {
            if y == 0 || x == 0 || y == s - 1 || x == s - 1 {
                for (c, v) in sum.iter_mut().enumerate() {
                    *v += img[(c * s + y) * s + x];
                }
                n += 1;
            }
        }
    }
    sum.map(|v| v / n as f32)
}

/// Applies one of [`crate::text::EDIT_INSTRUCTIONS`]. Panics on an unknown instruction (a programming error:
/// instructions come from that list).
pub fn apply(instruction: &str, img: &[f32], s: usize) -> Vec<f32> {
    let fill = border_colour(img, s);
    let shift = s / 8;
    match instruction {
        "flip it horizontally" => map_pixels(img, s, |y, x| Some((y, s - 1 - x)), fill),
        "flip it vertically" => map_pixels(img, s, |y, x| Some((s - 1 - y, x)), fill),
        "make it darker" => img.iter().map(|v| v * 0.5).collect(),
        "make it brighter" => img.iter().map(|v| 1.0 - (1.0 - v) * 0.5).collect(),
        "invert the colours" => img.iter().map(|v| 1.0 - v).collect(),
        "move it left" => map_pixels(
            img,
            s,
            |y, x| (x + shift < s).then_some((y, x + shift)),
            fill,
        ),
        "move it right" => map_pixels(img, s, |y, x| x.checked_sub(shift).map(|sx| (y, sx)), fill),
        "zoom in" => {
            let (h, q) = (s / 2, s / 4);
            // The centre half, upsampled ×2 (bicubic).
            let centre: Vec<f32> = (0..3)
                .flat_map(|c| (0..h).flat_map(move |y| (0..h).map(move |x| (c, y, x))))
                .map(|(c, y, x)| img[(c * s + y + q) * s + x + q])
                .collect();
            let up = resize_bicubic(&centre, 3, h, h, s, s);
            up.into_iter().map(|v| v.clamp(0.0, 1.0)).collect()
        }
        "zoom out" => {
            let small = downsample_area(img, 3, s, s, 2);
            let (h, q) = (s / 2, s / 4);
            let mut out = vec![0f32; 3 * s * s];
            for c in 0..3 {
                for y in 0..s {
                    for x in 0..s {
                        let inside = (q..q + h).contains(&y) && (q..q + h).contains(&x);
                        out[(c * s + y) * s + x] = if inside {
                            small[(c * h + y - q) * h + x - q]
                        } else {
                            fill[c]
                        };
                    }
                }
            }
            out
        }
        "rotate it a quarter turn" => map_pixels(img, s, |y, x| Some((x, s - 1 - y)), fill),
        other => panic!("unknown edit instruction {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::EDIT_INSTRUCTIONS;

    fn ramp(s: usize) -> Vec<f32> {
        (0..3 * s * s)
            .map(|i| ((i * 37) % 101) as f32 / 100.0)
            .collect()
    }

    #[test]
    fn every_instruction_has_an_edit_that_changes_the_image() {
        let s = 16;
        let img = ramp(s);
        for ins in EDIT_INSTRUCTIONS {
            let out = apply(ins, &img, s);
            assert_eq!(out.len(), img.len(), "{ins}");
            assert!(out.iter().all(|v| (0.0..=1.0).contains(v)), "{ins}");
            assert_ne!(out, img, "{ins}");
        }
    }

    #[test]
    fn involutions_and_inverses_hold() {
        let s = 16;
        let img = ramp(s);
        for ins in [
            "flip it horizontally",
            "flip it vertically",
            "invert the colours",
        ] {
            let twice = apply(ins, &apply(ins, &img, s), s);
            let err = twice
                .iter()
                .zip(&img)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-6, "{ins}");
        }
        let mut r = img.clone();
        for _ in 0..4 {
            r = apply("rotate it a quarter turn", &r, s);
        }
        assert_eq!(r, img);
        // Moving left shifts content by s/8 pixels.
        let left = apply("move it left", &img, s);
        assert_eq!(left[3], img[3 + s / 8]);
    }
}
