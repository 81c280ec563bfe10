//! Training curves from burn-train's metric logs (`<run>/train/epoch-N/<metric>.log`: one `value,count` line
//! per batch; `<run>/valid/epoch-N/<metric>.log` likewise), drawn as an SVG: one panel per metric, one colour
//! per run, the per-batch values smoothed by a moving average, validation means as dots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::PipelineError;

/// One run's values of one metric.
#[derive(Debug, Clone, Default)]
pub struct Curve {
    /// (optimizer step, value) per training batch.
    pub train: Vec<(f64, f64)>,
    /// (step at the end of the epoch, count-weighted mean) per validation.
    pub valid: Vec<(f64, f64)>,
}

fn epochs(dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            Some((name.strip_prefix("epoch-")?.parse().ok()?, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// `value,count` lines. → (value, count) per line
fn read_log(file: &Path) -> Result<Vec<(f64, f64)>, PipelineError> {
    let text = std::fs::read_to_string(file).map_err(|e| PipelineError::Data {
        file: file.to_path_buf(),
        reason: e.to_string(),
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let mut it = l.split(',');
            let parse = |s: Option<&str>| s.and_then(|s| s.trim().parse::<f64>().ok());
            match (parse(it.next()), parse(it.next())) {
                (Some(v), Some(n)) => Ok((v, n)),
                _ => Err(PipelineError::Data {
                    file: file.to_path_buf(),
                    reason: format!("line {}: expected `value,count`, found {l:?}", i + 1),
                }),
            }
        })
        .collect()
}

/// Reads one metric of a run folder.
pub fn read_curve(run: &Path, metric: &str) -> Result<Curve, PipelineError> {
    let mut curve = Curve::default();
    let train = epochs(&run.join("train"));
    if train.is_empty() {
        return Err(PipelineError::Data {
            file: run.join("train"),
            reason: "no epoch-N folders: not a burn-train run folder".into(),
        });
    }
    // A missing epoch folder (a lost log) leaves a gap of one typical epoch, so later steps keep their place.
    let mut per_epoch = Vec::new();
    for (e, dir) in &train {
        let file = dir.join(format!("{metric}.log"));
        if file.exists() {
            per_epoch.push((*e, read_log(&file)?));
        }
    }
    let typical = per_epoch.iter().map(|(_, r)| r.len()).max().unwrap_or(0) as f64;
    let mut step = 0.0;
    let mut last_epoch = 0;
    let mut epoch_end = std::collections::HashMap::new();
    for (e, rows) in per_epoch {
        step += e.saturating_sub(last_epoch + 1) as f64 * typical;
        last_epoch = e;
        for (v, _) in rows {
            step += 1.0;
            curve.train.push((step, v));
        }
        epoch_end.insert(e, step);
    }
    if curve.train.is_empty() {
        return Err(PipelineError::Data {
            file: run.join("train"),
            reason: format!("no {metric}.log in any epoch"),
        });
    }
    for (e, dir) in epochs(&run.join("valid")) {
        let file = dir.join(format!("{metric}.log"));
        let (Some(&at), true) = (epoch_end.get(&e), file.exists()) else {
            continue;
        };
        let rows = read_log(&file)?;
        let n: f64 = rows.iter().map(|r| r.1).sum();
        if n > 0.0 {
            curve
                .valid
                .push((at, rows.iter().map(|r| r.0 * r.1).sum::<f64>() / n));
        }
    }
    Ok(curve)
}

/// Centred moving average over `window` points (shrinking at the ends).
pub fn smooth(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let h = window / 2;
    (0..points.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(h), (i + h + 1).min(points.len()));
            let m = points[a..b].iter().map(|p| p.1).sum::<f64>() / (b - a) as f64;
            (points[i].0, m)
        })
        .collect()
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// An SVG with one panel per metric (log-scale y), each holding every run's smoothed training curve and its
/// validation means. `curves[m][r]` is metric `m` of run `r`.
pub fn render_svg(
    metrics: &[String],
    runs: &[String],
    curves: &[Vec<Curve>],
    window: usize,
) -> String {
    let (pw, ph, ml, mt, mb) = (460.0, 300.0, 62.0, 28.0, 40.0);
    let width = metrics.len() as f64 * (pw + ml) + 20.0;
    let height = ph + mt + mb + 18.0 * runs.len() as f64 + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (m, name) in metrics.iter().enumerate() {
        let x0 = 10.0 + m as f64 * (pw + ml) + ml;
        let smoothed: Vec<Vec<(f64, f64)>> =
            curves[m].iter().map(|c| smooth(&c.train, window)).collect();
        let all = smoothed
            .iter()
            .flatten()
            .chain(curves[m].iter().flat_map(|c| c.valid.iter()))
            .filter(|p| p.1 > 0.0);
        let (mut xmax, mut lo, mut hi) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for p in all {
            xmax = xmax.max(p.0);
            lo = lo.min(p.1.log10());
            hi = hi.max(p.1.log10());
        }
        if !lo.is_finite() {
            (lo, hi) = (-1.0, 0.0);
        }
        let (lo, hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
        let px = |x: f64| x0 + x / xmax * pw;
        let py = |y: f64| mt + (hi - y.max(1e-30).log10()) / (hi - lo) * ph;
        let _ = writeln!(
            s,
            r#"<rect x="{x0}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{name} (train: moving average of {window} batches; dots: validation)</text>"#,
            x0 + pw / 2.0,
            mt - 10.0
        );
        // Gridlines at 1, 2 and 5 × 10^e.
        let decades = (hi - lo) as i32;
        for d in 0..=decades {
            let e = lo as i32 + d;
            for m in [1.0, 2.0, 5.0] {
                let v = m * 10f64.powi(e);
                if v.log10() > hi + 1e-9 {
                    break;
                }
                let y = py(v);
                let _ = writeln!(
                    s,
                    r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{m}e{e}</text>"##,
                    x0 + pw,
                    x0 - 6.0,
                    y + 4.0
                );
            }
        }
        for k in 0..=4 {
            let x = xmax * k as f64 / 4.0;
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{:.0}</text>"#,
                px(x),
                mt + ph + 16.0,
                x
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">optimizer step</text>"#,
            x0 + pw / 2.0,
            mt + ph + 32.0
        );
        for (r, line) in smoothed.iter().enumerate() {
            let colour = COLOURS[r % COLOURS.len()];
            let pts: Vec<String> = line
                .iter()
                .filter(|p| p.1 > 0.0)
                .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                pts.join(" ")
            );
            for p in curves[m][r].valid.iter().filter(|p| p.1 > 0.0) {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{colour}" stroke="black"/>"#,
                    px(p.0),
                    py(p.1)
                );
            }
        }
    }
    for (r, name) in runs.iter().enumerate() {
        let y = mt + ph + mb + 14.0 + 18.0 * r as f64;
        let colour = COLOURS[r % COLOURS.len()];
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="14" height="10" fill="{colour}"/><text x="{}" y="{y}">{}</text>"#,
            10.0 + ml,
            y - 9.0,
            10.0 + ml + 20.0,
            xml_escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_burn_train_logs_in_step_order_and_weights_validation_by_count() {
        let dir = std::env::temp_dir().join(format!("codi-curves-{}", std::process::id()));
        for (split, epoch, text) in [
            ("train", 1, "1.0,8\n0.5,8\n"),
            ("train", 2, "0.25,8\n"),
            ("valid", 1, "0.4,3\n0.8,1\n"),
        ] {
            let d = dir.join(split).join(format!("epoch-{epoch}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("guidance.log"), text).unwrap();
        }
        let c = read_curve(&dir, "guidance").unwrap();
        assert_eq!(c.train, vec![(1.0, 1.0), (2.0, 0.5), (3.0, 0.25)]);
        assert_eq!(c.valid.len(), 1);
        assert_eq!(c.valid[0].0, 2.0);
        assert!((c.valid[0].1 - 0.5).abs() < 1e-12);
        assert!(read_curve(&dir, "missing").is_err());
        std::fs::write(dir.join("train/epoch-2/guidance.log"), "oops\n").unwrap();
        let e = read_curve(&dir, "guidance").unwrap_err().to_string();
        assert!(e.contains("epoch-2") && e.contains("line 1"), "{e}");
        let svg = render_svg(&["guidance".into()], &["run".into()], &[vec![c]], 2);
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_missing_epoch_leaves_a_gap_of_one_epoch() {
        let dir = std::env::temp_dir().join(format!("codi-curves-gap-{}", std::process::id()));
        for (split, epoch, text) in [
            ("train", 1, "1.0,8\n0.5,8\n"),
            ("train", 3, "0.25,8\n0.2,8\n"),
            ("valid", 3, "0.3,1\n"),
        ] {
            let d = dir.join(split).join(format!("epoch-{epoch}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("guidance.log"), text).unwrap();
        }
        let c = read_curve(&dir, "guidance").unwrap();
        let steps: Vec<f64> = c.train.iter().map(|p| p.0).collect();
        assert_eq!(steps, vec![1.0, 2.0, 5.0, 6.0]);
        assert_eq!(c.valid, vec![(6.0, 0.3)]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn moving_average_keeps_steps_and_shrinks_at_the_ends() {
        let p = vec![(1.0, 0.0), (2.0, 3.0), (3.0, 6.0)];
        assert_eq!(smooth(&p, 3), vec![(1.0, 1.5), (2.0, 3.0), (3.0, 4.5)]);
    }
}
