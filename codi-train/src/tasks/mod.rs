//! The conditional tasks: each turns a dataset item into (condition image, target image, text), the same
//! function in training and evaluation. Conditions are channel-major images in [0, 1].
//! - super-resolution ×4: blur → area downsample → noise → bicubic back to full size (3 channels);
//! - inpainting: random boxes removed; the masked image (holes grey) and the mask (4 channels);
//! - instructed editing: a source image and an instruction with an exact ground-truth edit (3 channels);
//! - depth-to-image: the scene's exact depth map (1 channel), text = the caption.

pub mod edits;
pub mod masks;

pub use codi_pipelines::task::{inpainting_condition, TaskKind};

use burn::config::Config;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::scenes::SceneItem;
use crate::data::ImageItem;
use codi_pipelines::resize::{downsample_area, gaussian_blur, resize_bicubic};

/// The degradation of the super-resolution task.
#[derive(Config, Debug, PartialEq)]
pub struct SrConfig {
    #[config(default = 4)]
    pub factor: usize,
    /// Gaussian blur before downsampling, in high-resolution pixels (0 = none).
    #[config(default = 0.8)]
    pub blur_sigma: f32,
    /// Standard deviation of Gaussian noise added to the low-resolution image ([0, 1] range).
    #[config(default = 0.02)]
    pub noise_std: f32,
    /// JPEG quality (1–100) the noisy low-resolution image is compressed with, as photographs are; absent: none.
    pub jpeg_quality: Option<u8>,
}

/// The holes of the inpainting task: 1 to `max_boxes` axis-aligned boxes with sides in [min_side, max_side]
/// pixels, then free-form brush strokes when `strokes` is present.
#[derive(Config, Debug, PartialEq)]
pub struct InpaintConfig {
    #[config(default = 8)]
    pub min_side: usize,
    #[config(default = 20)]
    pub max_side: usize,
    #[config(default = 2)]
    pub max_boxes: usize,
    pub strokes: Option<StrokesConfig>,
}

/// 0 to `max_count` free-form strokes: random polylines drawn with a round brush up to `max_width` pixels
/// wide, as in the free-form masks of Yu et al. (2019).
#[derive(Config, Debug, PartialEq)]
pub struct StrokesConfig {
    #[config(default = 3)]
    pub max_count: usize,
    #[config(default = 8)]
    pub max_width: usize,
}

impl InpaintConfig {
    /// Holes for images of `resolution` pixels: boxes of ⅛ to ½ of the side and up to 3 strokes ⅒ wide.
    pub fn for_resolution(resolution: usize) -> Self {
        Self::new()
            .with_min_side((resolution / 8).max(1))
            .with_max_side((resolution / 2).max(1))
            .with_strokes(Some(
                StrokesConfig::new().with_max_width((resolution / 10).max(1)),
            ))
    }
}

/// One training or evaluation pair.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPair {
    /// condition_channels × size × size, in [0, 1].
    pub condition: Vec<f32>,
    /// 3 × size × size, in [0, 1].
    pub target: Vec<f32>,
    /// The prompt (caption) or the editing instruction.
    pub text: String,
    pub size: usize,
}

/// A per-item random stream, so a pair depends only on (seed, index).
pub fn item_rng(seed: u64, index: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407))
}

fn normal(rng: &mut impl Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// The low-resolution image of the super-resolution task. → 3 × (size/f) × (size/f)
pub fn degrade(cfg: &SrConfig, image: &[f32], size: usize, rng: &mut impl Rng) -> Vec<f32> {
    let blurred = gaussian_blur(image, 3, size, size, cfg.blur_sigma);
    let mut low = downsample_area(&blurred, 3, size, size, cfg.factor);
    for v in &mut low {
        *v = (*v + cfg.noise_std * normal(rng)).clamp(0.0, 1.0);
    }
    match cfg.jpeg_quality {
        None => low,
        Some(q) => {
            let l = size / cfg.factor;
            codi_pipelines::image_file::jpeg_round_trip(&low, l, l, q)
        }
    }
}

/// Super-resolution: the condition is the degraded image resized back (bicubic) — also the bicubic baseline.
pub fn super_resolution(cfg: &SrConfig, item: &ImageItem, rng: &mut impl Rng) -> TaskPair {
    let s = item.size;
    let low = degrade(cfg, &item.pixels, s, rng);
    let l = s / cfg.factor;
    let up: Vec<f32> = resize_bicubic(&low, 3, l, l, s, s)
        .into_iter()
        .map(|v| v.clamp(0.0, 1.0))
        .collect();
    TaskPair {
        condition: up,
        target: item.pixels.clone(),
        text: item.caption.clone(),
        size: s,
    }
}

/// Inpainting: the mask (1 = missing) of random boxes; the condition is the image with holes set to 0.5,
/// then the mask.
pub fn inpainting(cfg: &InpaintConfig, item: &ImageItem, rng: &mut impl Rng) -> TaskPair {
    let s = item.size;
    let mask = masks::holes(cfg, s, rng);
    TaskPair {
        condition: inpainting_condition(&item.pixels, &mask),
        target: item.pixels.clone(),
        text: item.caption.clone(),
        size: s,
    }
}

/// Instructed editing with instruction `which` of [`crate::text::EDIT_INSTRUCTIONS`].
pub fn edit(item: &ImageItem, which: usize) -> TaskPair {
    let instruction = crate::text::EDIT_INSTRUCTIONS[which % crate::text::EDIT_INSTRUCTIONS.len()];
    TaskPair {
        condition: item.pixels.clone(),
        target: edits::apply(instruction, &item.pixels, item.size),
        text: instruction.to_string(),
        size: item.size,
    }
}

/// A task defined by a program: a function from an image to its condition. The target is the image itself
/// and the prompt its caption, so the adapter learns to generate the image back from the condition.
pub trait CustomTask: Send + Sync {
    /// The task's name: it names the run and goes into the adapter's `codi_adapter.json`.
    fn name(&self) -> &str;
    /// Channels of the condition image.
    fn condition_channels(&self) -> usize;
    /// image: [3, size, size] in [0, 1] → condition: [condition_channels, size, size] in [0, 1]. Draw any
    /// randomness from `rng` only: it is keyed by (seed, epoch, position), which keeps runs reproducible and
    /// resumable step for step.
    fn condition(&self, image: &[f32], size: usize, rng: &mut ChaCha8Rng) -> Vec<f32>;
}

/// The pair of a [`CustomTask`] for one image.
pub fn custom(task: &dyn CustomTask, item: &ImageItem, rng: &mut ChaCha8Rng) -> TaskPair {
    TaskPair {
        condition: task.condition(&item.pixels, item.size, rng),
        target: item.pixels.clone(),
        text: item.caption.clone(),
        size: item.size,
    }
}

/// A pair whose condition is given beside the image: a conditioning image (ControlNet-style tasks, depth from
/// a folder) or the original of an edit (the item is then the edited image, its caption the instruction).
pub fn given(item: &ImageItem, condition: Vec<f32>) -> TaskPair {
    TaskPair {
        condition,
        target: item.pixels.clone(),
        text: item.caption.clone(),
        size: item.size,
    }
}

/// Depth-to-image: the condition is the scene's depth map.
pub fn depth(scene: &SceneItem) -> TaskPair {
    TaskPair {
        condition: scene.depth.clone(),
        target: scene.image.pixels.clone(),
        text: scene.image.caption.clone(),
        size: scene.image.size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::scenes::Scenes;
    use burn::data::dataset::Dataset;

    fn item() -> ImageItem {
        Scenes::test(1).get(0).unwrap().image
    }

    #[test]
    fn super_resolution_condition_is_a_blurry_version_of_the_target() {
        let it = item();
        let pair = super_resolution(&SrConfig::new(), &it, &mut item_rng(0, 0));
        assert_eq!(pair.condition.len(), 3 * 32 * 32);
        let err = codi_core::metrics::psnr(&pair.condition, &pair.target, 1.0);
        assert!(err > 15.0 && err < 40.0, "bicubic PSNR {err}");
        // Deterministic in (seed, index); other indices draw other noise.
        assert_eq!(
            pair,
            super_resolution(&SrConfig::new(), &it, &mut item_rng(0, 0))
        );
        assert_ne!(
            pair,
            super_resolution(&SrConfig::new(), &it, &mut item_rng(0, 1))
        );
    }

    #[test]
    fn inpainting_masks_holes_and_keeps_the_rest() {
        let it = item();
        let pair = inpainting(&InpaintConfig::new(), &it, &mut item_rng(3, 7));
        let s = 32;
        let mask = &pair.condition[3 * s * s..];
        let holes = mask.iter().filter(|&&m| m == 1.0).count();
        assert!(holes >= 64, "{holes}");
        for c in 0..3 {
            for (i, &m) in mask.iter().enumerate() {
                let v = pair.condition[c * s * s + i];
                if m == 1.0 {
                    assert_eq!(v, 0.5);
                } else {
                    assert_eq!(v, it.pixels[c * s * s + i]);
                }
            }
        }
    }

    #[test]
    fn depth_condition_is_one_channel() {
        let scene = Scenes::test(1).get(0).unwrap();
        let pair = depth(&scene);
        assert_eq!(pair.condition.len(), 32 * 32);
        assert_eq!(TaskKind::Depth.condition_channels(), 1);
        assert!(pair.text.ends_with("floor"));
    }
}
