//! The `codi schedule` command end to end.

use std::process::Command;

fn codi(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_codi"))
        .args(args)
        .output()
        .expect("codi runs")
}

#[test]
fn codi_grid_as_json() {
    let out = codi(&["schedule", "--sampler", "codi", "--steps", "4", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["timesteps"], serde_json::json!([980, 720, 460, 200]));
    let plan = v["plan"].as_array().unwrap();
    assert_eq!(plan.len(), 4);
    // α² + σ² = 1 at every step, and the last step ends on the clean sample.
    for s in plan {
        let (a, sg) = (s["alpha"].as_f64().unwrap(), s["sigma"].as_f64().unwrap());
        assert!((a * a + sg * sg - 1.0).abs() < 1e-9);
    }
    assert!(plan[3]["t_next"].is_null());
}

#[test]
fn every_sampler_prints_a_table() {
    for sampler in ["ddim", "dpmpp", "codi", "lcm"] {
        let out = codi(&["schedule", "--sampler", sampler, "--steps", "8"]);
        assert!(
            out.status.success(),
            "{sampler}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().count(), 2 + 8, "{sampler}:\n{text}");
    }
}

#[test]
fn bad_flags_are_clear_errors() {
    let out = codi(&["schedule", "--sampler", "euler"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown sampler 'euler'"), "{err}");
    let out = codi(&["schedule", "--sampler", "codi", "--steps", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("number of sampling steps"));
    let out = codi(&["--device", "tpu", "schedule"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown device 'tpu'"));
}

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

#[test]
fn inspect_reports_class_parameters_and_loading() {
    let cases = [
        (
            "diffusers-small/models/unet2d_condition",
            "UNet2DConditionModel",
            203_204,
        ),
        (
            "diffusers-small/models/controlnet",
            "ControlNetModel",
            114_632,
        ),
        ("diffusers-small/models/vae", "AutoencoderKL", 167_959),
        ("diffusers-small/models/unet2d", "UNet2DModel", 177_427),
        ("clip-tiny", "CLIPTextModel", 0),
    ];
    for (dir, class, params) in cases {
        let out = codi(&["inspect", fixtures().join(dir).to_str().unwrap(), "--json"]);
        assert!(
            out.status.success(),
            "{dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["class"], class);
        if params > 0 {
            assert_eq!(v["parameters"], params, "{dir}");
        }
        assert!(v["load_error"].is_null());
    }
    // A folder whose weights do not match says so and exits non-zero.
    let dir = std::env::temp_dir().join(format!("codi-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures().join("diffusers-small/models/vae/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("diffusers-small/models/unet2d/diffusion_pytorch_model.safetensors"),
        dir.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let out = codi(&["inspect", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("DO NOT LOAD") && text.contains("missing keys"),
        "{text}"
    );
    let out = codi(&["inspect", "/no/such/dir"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/dir/config.json"));
    std::fs::remove_dir_all(&dir).ok();
}

/// The committed embedded default loads and samples, and its evaluation runs (on the test subset).
#[test]
fn the_embedded_default_samples_and_evaluates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = root.join("assets/tiny");
    let tmp = std::env::temp_dir().join(format!("codi-cli-sample-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let grid = tmp.join("grid.png");
    let out = codi(&[
        "sample",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a sneaker",
        "--prompt",
        "a red sphere on a grey floor",
        "--steps",
        "2",
        "--batch",
        "2",
        "--out",
        grid.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(grid.exists());
    let report = tmp.join("eval.json");
    let out = codi(&[
        "eval",
        "teacher",
        "--model",
        model.to_str().unwrap(),
        "--classifier",
        root.join("assets/tiny/classifier").to_str().unwrap(),
        "--data",
        root.join("tests/fixtures/fashion-mnist-subset")
            .to_str()
            .unwrap(),
        "--samples",
        "10",
        "--batch",
        "10",
        "--steps",
        "8",
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    // One sample per class: the agreement is the mean of the per-class ones, and at 8 DDIM steps the
    // teacher draws what the text asks for (it reads 1.0 here; a teacher that ignores the text, 0.1).
    let agreement = v["class_agreement"].as_f64().unwrap();
    let per_class: Vec<f64> = v["per_class_agreement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .collect();
    let mean = per_class.iter().sum::<f64>() / per_class.len() as f64;
    assert!((agreement - mean).abs() < 1e-9, "{agreement} vs {mean}");
    assert!(agreement >= 0.8, "class agreement {agreement} at 8 steps");
    let fd = v["fd"].as_f64().unwrap();
    assert!(fd.is_finite() && fd > 0.0, "FD {fd}");
    // A missing pipeline is a clear error naming the folder.
    let out = codi(&[
        "sample",
        "--model",
        "/nonexistent/pipe",
        "--prompt",
        "a bag",
        "--out",
        grid.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pipe"));
    std::fs::remove_dir_all(&tmp).ok();
}

/// `codi demo` runs every committed adapter on the bundled images without any dataset: a grid per adapter, a
/// summary naming each, and super-resolution at 4 steps more similar (SSIM) to the truth than its bicubic input.
#[test]
fn the_demo_runs_every_committed_adapter() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = root.join("assets/tiny");
    let tmp = std::env::temp_dir().join(format!("codi-cli-demo-{}", std::process::id()));
    let out = codi(&[
        "demo",
        "--model",
        model.to_str().unwrap(),
        "--out",
        tmp.to_str().unwrap(),
        "--pairs",
        "4",
        "--step-counts",
        "1,4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.join("summary.json")).unwrap()).unwrap();
    let adapters = v["adapters"].as_array().unwrap();
    let names: Vec<&str> = adapters
        .iter()
        .map(|a| a["adapter"].as_str().unwrap())
        .collect();
    for want in [
        "adapters/depth",
        "adapters/edit",
        "adapters/inpaint",
        "adapters/sr",
        "codi-sr",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for a in adapters {
        assert!(std::path::Path::new(a["grid"].as_str().unwrap()).exists());
        assert_eq!(a["scores"].as_array().unwrap().len(), 2);
        if a["task"] == "sr" {
            // Sharper than its input: 4-step SSIM 0.57 (PE-CoDi) / 0.66 (CoDi) vs 0.48 on 1,000 test pairs.
            let four = a["scores"][1]["ssim"].as_f64().unwrap();
            let bicubic = a["bicubic"]["ssim"].as_f64().unwrap();
            assert!(
                four > bicubic + 0.03,
                "{}: 4-step SSIM {four} vs bicubic {bicubic}",
                a["adapter"]
            );
        }
    }
    // A folder without adapters is a clear error naming it.
    let out = codi(&[
        "demo",
        "--model",
        tmp.to_str().unwrap(),
        "--out",
        tmp.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no distilled adapters"));
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn curves_of_a_folder_that_is_not_a_run_is_a_clear_error() {
    let out = codi(&[
        "curves",
        "--run",
        "/nonexistent/run",
        "--out",
        "/tmp/never.svg",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/run") && err.contains("not a burn-train run"),
        "{err}"
    );
}
