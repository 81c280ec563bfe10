//! Image grids for reports and sampling, and PNG writing.

use std::path::Path;

use burn::tensor::{backend::Backend, Tensor};

use crate::error::PipelineError;

/// Tiles images into a grid of `cols` columns with a `pad`-pixel white border and writes it as PNG, or JPEG
/// when `file` ends in `.jpg` / `.jpeg` (through a temporary file). images: [n, 3, h, w] in [0, 1].
pub fn save_grid<B: Backend>(
    images: Tensor<B, 4>,
    cols: usize,
    pad: usize,
    file: &Path,
) -> Result<(), PipelineError> {
    let [n, c, h, w] = images.dims();
    let values = codi_core::tensor_ops::to_vec(images);
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let (gw, gh) = (cols * (w + pad) + pad, rows * (h + pad) + pad);
    let mut rgb = vec![255u8; gw * gh * 3];
    for i in 0..n {
        let (r, col) = (i / cols, i % cols);
        let (x0, y0) = (pad + col * (w + pad), pad + r * (h + pad));
        for y in 0..h {
            for x in 0..w {
                for ch in 0..3 {
                    let src = if c == 1 { 0 } else { ch };
                    let v = values[((i * c + src) * h + y) * w + x];
                    rgb[((y0 + y) * gw + x0 + x) * 3 + ch] =
                        (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
    }
    crate::image_file::write_rgb(file, gw, gh, &rgb)
}

/// Writes 8-bit RGB pixels (row-major, interleaved) as a PNG, through a temporary file and a rename.
pub fn write_png(
    file: &Path,
    width: usize,
    height: usize,
    rgb: &[u8],
) -> Result<(), PipelineError> {
    let err = |reason: String| PipelineError::Data {
        file: file.to_path_buf(),
        reason,
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    let tmp = file.with_extension("png.tmp");
    {
        let f = std::fs::File::create(&tmp).map_err(|e| err(e.to_string()))?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(f), width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| err(e.to_string()))?;
        writer
            .write_image_data(rgb)
            .map_err(|e| err(e.to_string()))?;
    }
    std::fs::rename(&tmp, file).map_err(|e| err(e.to_string()))
}

/// The most pixels an image may have (8192 × 8192): a decoder's buffer is sized from the header before any
/// data is read, so a corrupt header could otherwise ask for gigabytes.
pub const MAX_PIXELS: u64 = 1 << 26;

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    type B = codi_core::backend::CpuBackend;

    #[test]
    fn grid_round_trips_through_png() {
        let dev = Default::default();
        let vals: Vec<f32> = (0..2 * 3 * 4 * 5)
            .map(|i| (i % 256) as f32 / 255.0)
            .collect();
        let t = Tensor::<B, 4>::from_data(TensorData::new(vals.clone(), [2, 3, 4, 5]), &dev);
        let file = std::env::temp_dir().join(format!("codi-grid-{}.png", std::process::id()));
        save_grid(t, 2, 0, &file).unwrap();
        let image = crate::image_file::read_rgb(&file).unwrap();
        assert_eq!(image.dimensions(), (10, 4));
        // Second image, channel 1, row 2, col 3 lands at x = 5 + 3.
        let want = vals[((3 + 1) * 4 + 2) * 5 + 3];
        let got = image.get_pixel(8, 2)[1] as f32 / 255.0;
        assert!((want - got).abs() < 1.0 / 255.0, "{want} vs {got}");
        assert!(crate::image_file::read_rgb(Path::new("/nonexistent.png")).is_err());
        std::fs::remove_file(file).ok();
    }
}
