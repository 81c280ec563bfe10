//! Images in every common format (PNG, JPEG, WebP, BMP, TIFF, GIF, …) through the `image` crate: read as
//! RGB, cut to a square at a training or sampling resolution, written as PNG or JPEG by extension.

use std::io::Cursor;
use std::path::Path;

use image::{ImageReader, Limits, RgbImage};

use crate::error::PipelineError;
use crate::image_io::MAX_PIXELS;
use crate::resize::resize_triangle;
use codi_kernels::resample::planar_window;

/// File extensions read as images (when a folder is listed).
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif", "ppm",
];

/// Whether a file is named as an image (by [`IMAGE_EXTENSIONS`], any case).
pub fn has_image_extension(file: &Path) -> bool {
    file.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// JPEG quality of written images.
pub const JPEG_QUALITY: u8 = 95;

fn data_error(file: &Path, reason: impl Into<String>) -> PipelineError {
    PipelineError::Data {
        file: file.to_path_buf(),
        reason: reason.into(),
    }
}

fn limits() -> Limits {
    let mut l = Limits::default();
    l.max_alloc = Some(4 * MAX_PIXELS);
    l
}

/// The width and height in a file's header (nothing decoded): a quick check that a file is an image.
pub fn probe(file: &Path) -> Result<(u32, u32), PipelineError> {
    let reader = ImageReader::open(file)
        .map_err(|e| data_error(file, e.to_string()))?
        .with_guessed_format()
        .map_err(|e| data_error(file, e.to_string()))?;
    if reader.format().is_none() {
        return Err(data_error(file, "not an image in a format codi reads"));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| data_error(file, format!("not a readable image: {e}")))?;
    check_size(file, w, h)?;
    Ok((w, h))
}

fn check_size(file: &Path, w: u32, h: u32) -> Result<(), PipelineError> {
    if w == 0 || h == 0 || w as u64 * h as u64 > MAX_PIXELS {
        return Err(data_error(
            file,
            format!(
                "an image of {w}×{h} pixels: codi reads images of 1 to {} megapixels",
                MAX_PIXELS >> 20
            ),
        ));
    }
    Ok(())
}

/// Decodes an image file of any supported format (by content, not extension) as 8-bit RGB.
pub fn read_rgb(file: &Path) -> Result<RgbImage, PipelineError> {
    let mut reader = ImageReader::open(file)
        .map_err(|e| data_error(file, e.to_string()))?
        .with_guessed_format()
        .map_err(|e| data_error(file, e.to_string()))?;
    if reader.format().is_none() {
        return Err(data_error(file, "not an image in a format codi reads"));
    }
    reader.limits(limits());
    let image = reader
        .decode()
        .map_err(|e| data_error(file, format!("not a readable image: {e}")))?;
    check_size(file, image.width(), image.height())?;
    Ok(image.to_rgb8())
}

/// A square part of an image, as fractions of its width and height, so that images of different sizes
/// (an image and its conditioning image) are cut at the same place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Left edge, as a fraction of the width.
    pub x: f64,
    /// Top edge, as a fraction of the height.
    pub y: f64,
    /// Width, as a fraction of the width.
    pub w: f64,
    /// Height, as a fraction of the height.
    pub h: f64,
}

impl Window {
    /// The largest centred square of a `width` × `height` image (what resizing the shorter side to the
    /// resolution and centre-cropping keeps).
    pub fn centre(width: u32, height: u32) -> Self {
        Self::at(width, height, 0.5, 0.5)
    }

    /// The largest square, placed at `u`, `v` ∈ [0, 1] along the free room in x and y (0.5, 0.5: centred).
    pub fn at(width: u32, height: u32, u: f64, v: f64) -> Self {
        let side = width.min(height) as f64;
        let (w, h) = (side / width as f64, side / height as f64);
        Self {
            x: (1.0 - w) * u.clamp(0.0, 1.0),
            y: (1.0 - h) * v.clamp(0.0, 1.0),
            w,
            h,
        }
    }

    /// The whole image (squashed to a square when it is not one).
    pub fn whole() -> Self {
        Self {
            x: 0.0,
            y: 0.0,
            w: 1.0,
            h: 1.0,
        }
    }
}

/// The `window` of `image` resized to `size` × `size` ([`resize_triangle`]: bilinear when enlarging, an
/// area-weighted average when shrinking), mirrored left–right if `flip`.
/// → RGB in [0, 1], channel-major: 3 × size × size
pub fn square(image: &RgbImage, window: Window, size: usize, flip: bool) -> Vec<f32> {
    let (iw, ih) = (image.width() as f64, image.height() as f64);
    let x0 = (window.x * iw).round() as u32;
    let y0 = (window.y * ih).round() as u32;
    let cw = ((window.w * iw).round() as u32).clamp(1, image.width() - x0.min(image.width() - 1));
    let ch = ((window.h * ih).round() as u32).clamp(1, image.height() - y0.min(image.height() - 1));
    let (cw, ch) = (cw as usize, ch as usize);
    let width = image.width() as usize;
    let cut = planar_window(
        image.as_raw(),
        width,
        x0 as usize,
        y0 as usize,
        cw,
        ch,
        flip,
    );
    if (cw, ch) == (size, size) {
        return cut;
    }
    resize_triangle(&cut, 3, ch, cw, size, size)
        .into_iter()
        .map(|v| v.clamp(0.0, 1.0))
        .collect()
}

/// Channel-major pixels in [0, 1] (3 or 1 channels) → interleaved 8-bit RGB.
pub fn to_rgb8(pixels: &[f32], channels: usize, height: usize, width: usize) -> Vec<u8> {
    let plane = height * width;
    let mut rgb = vec![0u8; 3 * plane];
    for i in 0..plane {
        for c in 0..3 {
            let src = if channels == 1 { 0 } else { c };
            rgb[3 * i + c] = (pixels[src * plane + i].clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    rgb
}

/// Writes 8-bit RGB pixels (interleaved) as PNG, or as JPEG when the name ends in `.jpg` / `.jpeg`, through a
/// temporary file and a rename.
pub fn write_rgb(
    file: &Path,
    width: usize,
    height: usize,
    rgb: &[u8],
) -> Result<(), PipelineError> {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => crate::image_io::write_png(file, width, height, rgb),
        Some("jpg" | "jpeg") => {
            let bytes =
                encode_jpeg(rgb, width, height, JPEG_QUALITY).map_err(|e| data_error(file, e))?;
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| data_error(file, e.to_string()))?;
            }
            let tmp = file.with_extension("jpg.tmp");
            std::fs::write(&tmp, bytes).map_err(|e| data_error(file, e.to_string()))?;
            std::fs::rename(&tmp, file).map_err(|e| data_error(file, e.to_string()))
        }
        _ => Err(data_error(
            file,
            "codi writes images as .png, .jpg or .jpeg: name the output with one of these",
        )),
    }
}

fn encode_jpeg(rgb: &[u8], width: usize, height: usize, quality: u8) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality.clamp(1, 100))
        .encode(
            rgb,
            width as u32,
            height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Compresses channel-major RGB in [0, 1] as a JPEG of `quality` (1–100) and decodes it again: the blocking
/// and ringing of a real photograph's compression, for degradations.
pub fn jpeg_round_trip(pixels: &[f32], height: usize, width: usize, quality: u8) -> Vec<f32> {
    let rgb = to_rgb8(pixels, 3, height, width);
    let bytes = encode_jpeg(&rgb, width, height, quality).expect("encoding RGB8 in memory");
    let decoded = image::load(Cursor::new(bytes), image::ImageFormat::Jpeg)
        .expect("decoding a JPEG just encoded")
        .to_rgb8();
    let plane = height * width;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in decoded.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = px[c] as f32 / 255.0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 7])
        })
    }

    #[test]
    fn centre_and_placed_windows_cut_the_largest_square() {
        let c = Window::centre(200, 100);
        assert_eq!((c.x, c.y, c.w, c.h), (0.25, 0.0, 0.5, 1.0));
        let left = Window::at(200, 100, 0.0, 0.7);
        assert_eq!((left.x, left.y), (0.0, 0.0));
        let img = gradient(200, 100);
        let px = square(&img, c, 100, false);
        // Same size as the cut: no resampling; red = x, which starts at 50.
        assert_eq!(px[0], 50.0 / 255.0);
        assert_eq!(px[99], 149.0 / 255.0);
        let flipped = square(&img, c, 100, true);
        assert_eq!(flipped[0], 149.0 / 255.0);
        // Shrinking averages: the 50 px wide square halved keeps the mean red.
        let half = square(&img, c, 50, false);
        let mean: f32 = half[..2500].iter().sum::<f32>() / 2500.0;
        assert!((mean * 255.0 - 99.5).abs() < 0.6, "{}", mean * 255.0);
    }

    #[test]
    fn png_and_jpeg_round_trip_and_other_names_are_refused() {
        let dir = std::env::temp_dir().join(format!("codi-image-file-{}", std::process::id()));
        let rgb: Vec<u8> = gradient(24, 16).into_raw();
        for name in ["a.png", "a.jpg", "a.JPEG"] {
            let f = dir.join(name);
            write_rgb(&f, 24, 16, &rgb).unwrap();
            assert_eq!(probe(&f).unwrap(), (24, 16));
            let back = read_rgb(&f).unwrap();
            let err = back
                .as_raw()
                .iter()
                .zip(&rgb)
                .map(|(a, b)| (*a as i32 - *b as i32).abs())
                .max()
                .unwrap();
            assert!(
                err <= if name.ends_with("png") { 0 } else { 12 },
                "{name}: {err}"
            );
        }
        let e = write_rgb(&dir.join("a.gif"), 24, 16, &rgb).unwrap_err();
        assert!(e.to_string().contains(".png, .jpg or .jpeg"), "{e}");
        std::fs::write(dir.join("text.png"), b"not an image").unwrap();
        let e = read_rgb(&dir.join("text.png")).unwrap_err().to_string();
        assert!(
            e.contains("text.png") && e.contains("not a readable image"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn jpeg_round_trip_loses_detail_by_quality() {
        let s = 32;
        let px: Vec<f32> = (0..3 * s * s)
            .map(|i| ((i * 7919) % 256) as f32 / 255.0)
            .collect();
        let err = |q| {
            let back = jpeg_round_trip(&px, s, s, q);
            back.iter()
                .zip(&px)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f32>()
        };
        assert!(err(10) > err(90), "{} vs {}", err(10), err(90));
    }
}
