//! Figures of a comparison, drawn with plotters' SVG backend: a quality-vs-steps plot and an image grid with
//! labelled columns (cells scaled up so 32-pixel images can be seen).

use std::path::Path;

use plotters::prelude::*;

use crate::error::PipelineError;

/// One line of [`steps_plot`]: a label and (sampling steps, value) points.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend's name of the line.
    pub label: String,
    /// (sampling steps, value), in drawing order.
    pub points: Vec<(usize, f64)>,
}

fn data_err(file: &Path, reason: impl ToString) -> PipelineError {
    PipelineError::Data {
        file: file.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Draws through a temporary file and renames it, so a failure leaves no half-written figure.
fn draw_svg(
    file: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<(), PipelineError> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| data_err(file, e))?;
    }
    let tmp = file.with_extension("svg.tmp");
    {
        let root = SVGBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| data_err(file, e))?;
        draw(root.clone()).map_err(|e| data_err(file, e))?;
        root.present().map_err(|e| data_err(file, e))?;
    }
    std::fs::rename(&tmp, file).map_err(|e| data_err(file, e))
}

/// Line colours that stay apart on white (the Tableau 10 palette).
const LINE_COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A positive value (FD) against the number of sampling steps, both axes log-scaled, one line with markers per series; `floor`
/// draws a dashed horizontal reference (a step-free baseline such as bicubic upsampling).
pub fn steps_plot(
    file: &Path,
    title: &str,
    y_label: &str,
    series: &[Series],
    floor: Option<(&str, f64)>,
) -> Result<(), PipelineError> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let max_steps = all().map(|p| p.0).max().unwrap_or(1).max(2) as f64;
    let values = all().map(|p| p.1).chain(floor.map(|f| f.1));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return Err(data_err(file, "nothing finite to plot"));
    }
    if lo <= 0.0 {
        return Err(data_err(
            file,
            "the values are drawn on a log scale and must be positive",
        ));
    }
    draw_svg(file, (820, 520), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (0.8f64..max_steps * 1.25).log_scale(),
                (lo * 0.8..hi * 1.25).log_scale(),
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("sampling steps")
            .y_desc(y_label)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, s) in series.iter().enumerate() {
            let colour = LINE_COLOURS[i % LINE_COLOURS.len()].to_rgba();
            let pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (x as f64, y)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(s.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, colour.filled())))
                .map_err(|e| e.to_string())?;
        }
        if let Some((label, v)) = floor {
            let dashes =
                DashedLineSeries::new(vec![(0.8, v), (max_steps * 1.25, v)], 6, 4, BLACK.into());
            chart
                .draw_series(dashes)
                .map_err(|e| e.to_string())?
                .label(label)
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())
    })
}

/// A grid of RGB images, `columns[c][r]` the image of row r in column c (each 3 × size × size in [0, 1]),
/// each column headed by its label, every cell scaled up `scale` times (nearest neighbour).
pub fn labelled_grid(
    file: &Path,
    columns: &[(String, Vec<Vec<f32>>)],
    size: usize,
    scale: usize,
) -> Result<(), PipelineError> {
    let rows = columns.iter().map(|c| c.1.len()).max().unwrap_or(0);
    let cell = (size * scale) as i32;
    // Labels wider than a cell wrap at spaces (about 7 pixels per character at this size).
    let labels: Vec<Vec<String>> = columns
        .iter()
        .map(|c| split_label(&c.0, (cell / 7).max(8) as usize))
        .collect();
    let lines = labels.iter().map(Vec::len).max().unwrap_or(1) as i32;
    let (gap, head) = (8i32, 12 + 16 * lines);
    let width = columns.len() as i32 * (cell + gap) + gap;
    let height = head + rows as i32 * (cell + gap) + gap;
    draw_svg(file, (width as u32, height as u32), |root| {
        for (c, ((_, images), lines)) in columns.iter().zip(&labels).enumerate() {
            let x = gap + c as i32 * (cell + gap);
            for (k, line) in lines.iter().enumerate() {
                let style = ("sans-serif", 13).into_font().color(&BLACK);
                root.draw(&Text::new(line.clone(), (x, 6 + 16 * k as i32), style))
                    .map_err(|e| e.to_string())?;
            }
            for (r, image) in images.iter().enumerate() {
                let y = head + r as i32 * (cell + gap);
                let pixels = upscale_rgb8(image, size, scale);
                let side = (size * scale) as u32;
                let element = BitMapElement::with_owned_buffer((x, y), (side, side), pixels)
                    .ok_or("an image of the wrong size")?;
                root.draw(&element).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    })
}

/// Planar 3 × size × size in [0, 1] → interleaved 8-bit RGB, each pixel repeated `scale` × `scale` times.
fn upscale_rgb8(image: &[f32], size: usize, scale: usize) -> Vec<u8> {
    let side = size * scale;
    let plane = size * size;
    let mut out = vec![0u8; side * side * 3];
    for y in 0..side {
        for x in 0..side {
            let src = (y / scale) * size + x / scale;
            for ch in 0..3 {
                let v = image.get(ch * plane + src).copied().unwrap_or(0.0);
                out[(y * side + x) * 3 + ch] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
    out
}

/// Splits a label into lines of at most `width` characters at spaces (a longer word keeps its own line).
fn split_label(label: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in label.split(' ').filter(|w| !w.is_empty()) {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_and_a_grid_are_written_and_name_what_they_show() {
        let dir = std::env::temp_dir().join(format!("codi-figures-{}", std::process::id()));
        let plot = dir.join("fd.svg");
        let series = vec![
            Series {
                label: "teacher (DDIM)".into(),
                points: vec![(4, 9.0), (8, 6.0), (50, 3.0)],
            },
            Series {
                label: "CoDi".into(),
                points: vec![(1, 5.0), (4, 3.5)],
            },
        ];
        steps_plot(&plot, "FD by steps", "FD", &series, Some(("bicubic", 12.0))).unwrap();
        let svg = std::fs::read_to_string(&plot).unwrap();
        for text in ["teacher (DDIM)", "CoDi", "bicubic", "sampling steps"] {
            assert!(svg.contains(text), "{text} is in the plot");
        }
        let grid = dir.join("grid.svg");
        let grey = vec![0.5f32; 3 * 4 * 4];
        let columns = vec![
            ("condition".to_string(), vec![grey.clone(), grey.clone()]),
            ("CoDi, 4 steps".to_string(), vec![grey.clone(), grey]),
        ];
        labelled_grid(&grid, &columns, 4, 32).unwrap();
        let svg = std::fs::read_to_string(&grid).unwrap();
        assert!(svg.contains("CoDi, 4 steps") && svg.contains("condition"));
        assert_eq!(
            svg.matches("<image").count(),
            4,
            "one embedded image per cell"
        );
        assert!(steps_plot(&dir.join("empty.svg"), "t", "y", &[], None).is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn long_labels_wrap_at_a_space() {
        assert_eq!(split_label("short", 10), vec!["short"]);
        assert_eq!(
            split_label("Teacher, frozen backbone (LDM + ControlNet), ddim 50", 18),
            vec![
                "Teacher, frozen",
                "backbone (LDM +",
                "ControlNet), ddim",
                "50"
            ]
        );
    }
}
