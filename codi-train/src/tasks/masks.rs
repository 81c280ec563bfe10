//! Inpainting masks (1 = missing): axis-aligned boxes, then free-form brush strokes.

use rand::Rng;

use super::InpaintConfig;

/// The holes of one inpainting pair on an `s` × `s` image. → s·s values in {0, 1}
pub fn holes(cfg: &InpaintConfig, s: usize, rng: &mut impl Rng) -> Vec<f32> {
    let mut mask = vec![0f32; s * s];
    let hi = cfg.max_side.min(s).max(1);
    let lo = cfg.min_side.clamp(1, hi);
    let boxes = rng.random_range(1..=cfg.max_boxes.max(1));
    for _ in 0..boxes {
        let bh = rng.random_range(lo..=hi);
        let bw = rng.random_range(lo..=hi);
        let y0 = rng.random_range(0..=s - bh);
        let x0 = rng.random_range(0..=s - bw);
        for y in y0..y0 + bh {
            for x in x0..x0 + bw {
                mask[y * s + x] = 1.0;
            }
        }
    }
    // Drawn only when strokes are on, so box-only masks stay those of earlier runs.
    if let Some(strokes) = &cfg.strokes {
        for _ in 0..rng.random_range(0..=strokes.max_count) {
            stroke(&mut mask, s, strokes.max_width.max(1), rng);
        }
    }
    mask
}

/// A random polyline of 3 to 8 segments drawn with a round brush.
fn stroke(mask: &mut [f32], s: usize, max_width: usize, rng: &mut impl Rng) {
    let sf = s as f32;
    let radius = rng.random_range(1..=max_width) as f32 / 2.0;
    let mut x = rng.random_range(0.0..sf);
    let mut y = rng.random_range(0.0..sf);
    let mut angle = rng.random_range(0.0..std::f32::consts::TAU);
    for _ in 0..rng.random_range(3..=8) {
        angle += rng.random_range(-1.2f32..1.2);
        let length = rng.random_range(0.05..0.25) * sf;
        let (nx, ny) = (
            (x + length * angle.cos()).clamp(0.0, sf - 1.0),
            (y + length * angle.sin()).clamp(0.0, sf - 1.0),
        );
        segment(mask, s, (x, y), (nx, ny), radius);
        (x, y) = (nx, ny);
    }
}

/// Marks every pixel within `radius` of the segment a–b.
fn segment(mask: &mut [f32], s: usize, a: (f32, f32), b: (f32, f32), radius: f32) {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = (dx * dx + dy * dy).max(1e-6);
    let lo = |v: f32| ((v - radius).floor().max(0.0)) as usize;
    let hi = |v: f32| ((v + radius).ceil() as usize).min(s - 1);
    for py in lo(a.1.min(b.1))..=hi(a.1.max(b.1)) {
        for px in lo(a.0.min(b.0))..=hi(a.0.max(b.0)) {
            let (qx, qy) = (px as f32 - a.0, py as f32 - a.1);
            let t = ((qx * dx + qy * dy) / len2).clamp(0.0, 1.0);
            let (ex, ey) = (qx - t * dx, qy - t * dy);
            if ex * ex + ey * ey <= radius * radius {
                mask[py * s + px] = 1.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::item_rng;

    #[test]
    fn strokes_add_thin_free_form_holes_to_the_boxes() {
        let boxes = InpaintConfig::new()
            .with_max_boxes(1)
            .with_min_side(4)
            .with_max_side(4);
        let with_strokes = boxes.clone().with_strokes(Some(
            crate::tasks::StrokesConfig::new()
                .with_max_count(4)
                .with_max_width(3),
        ));
        let s = 64;
        let (mut more, mut boxes_only) = (0, 0);
        for i in 0..20 {
            let plain = holes(&boxes, s, &mut item_rng(5, i));
            let free = holes(&with_strokes, s, &mut item_rng(5, i));
            assert_eq!(plain.iter().sum::<f32>(), 16.0, "one 4×4 box");
            // The boxes come first from the same stream: every box pixel stays a hole.
            assert!(plain.iter().zip(&free).all(|(p, f)| *f >= *p));
            let extra = free.iter().sum::<f32>() - 16.0;
            if extra > 0.0 {
                more += 1;
                assert!(extra < (s * s / 2) as f32, "a stroke 3 px wide: {extra}");
            } else {
                boxes_only += 1;
            }
        }
        assert!(
            more >= 10 && boxes_only >= 1,
            "{more} with strokes, {boxes_only} without"
        );
    }

    #[test]
    fn config_for_a_resolution_scales_the_holes() {
        let c = InpaintConfig::for_resolution(512);
        let width = c.strokes.as_ref().unwrap().max_width;
        assert_eq!((c.min_side, c.max_side, width), (64, 256, 51));
        let mask = holes(&c, 512, &mut item_rng(1, 2));
        let covered = mask.iter().sum::<f32>() / (512.0 * 512.0);
        assert!(covered > 0.01 && covered < 0.9, "{covered}");
    }
}
