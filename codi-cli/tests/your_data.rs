//! A Stable Diffusion pipeline folder as diffusers saves it (tests/fixtures/sd-tiny) distilled on an image
//! folder (tests/fixtures/image-folder) with `codi distill`, then sampled with `codi sample`: the commands of
//! the book's tutorial "Distil your own Stable Diffusion model".

use std::path::{Path, PathBuf};

mod common;
use common::{codi, repo};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("codi-your-data-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `codi distill` of the tiny SD pipeline on the image folder: a few steps of batch 4 at 16 px.
fn distill(task: &str, data: &Path, dir: &Path, extra: &[&str]) -> (bool, String) {
    let (run, out) = (dir.join("run"), dir.join("adapter"));
    let mut args = vec![
        "distill",
        "--teacher",
        "tests/fixtures/sd-tiny",
        "--data",
        data.to_str().unwrap(),
        "--task",
        task,
        "--resolution",
        "16",
        "--epochs",
        "2",
        "--steps-per-epoch",
        "3",
        "--batch-size",
        "4",
        "--num-workers",
        "2",
        "--run",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    codi(&args)
}

#[test]
fn an_sd_pipeline_distils_on_an_image_folder_and_samples() {
    for (task, condition) in [
        ("sr", "images/003.jpg"),
        ("controlnet", "conditions/003.png"),
        ("edit", "images/002.webp"),
    ] {
        let dir = scratch(task);
        let (ok, log) = distill(task, Path::new("tests/fixtures/image-folder"), &dir, &[]);
        assert!(ok, "{task}: {log}");
        let adapter = dir.join("adapter");
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(adapter.join("distill.json")).unwrap()).unwrap();
        assert_eq!(summary["optimizer_steps_this_run"], 6, "{task}");
        assert_eq!(summary["config"]["folder"]["resolution"], 16);
        // The VAE of the tiny pipeline downsamples by 2: the condition embedding has 2 levels.
        assert_eq!(
            summary["config"]["conditioning_embedding_out_channels"],
            serde_json::json!([16, 32])
        );
        let grid = dir.join("grid.jpg");
        let input = repo().join("tests/fixtures/image-folder").join(condition);
        let mut args = vec![
            "sample",
            "--model",
            "tests/fixtures/sd-tiny",
            "--adapter",
            adapter.to_str().unwrap(),
            "--task",
            task,
            "--input",
            input.to_str().unwrap(),
            "--size",
            "16",
            "--batch",
            "2",
            "--out",
            grid.to_str().unwrap(),
            "--prompt",
            "a red circle on a green background",
        ];
        if task == "edit" {
            args.extend(["--instruction", "make it darker"]);
        }
        let (ok, log) = codi(&args);
        assert!(ok, "{task}: {log}");
        let written = image::open(&grid).unwrap();
        // One row: the condition, then 2 samples, 16 px each with a 1 px border.
        assert_eq!(
            (written.width(), written.height()),
            (3 * 17 + 1, 18),
            "{task}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn an_image_that_cannot_be_decoded_stops_the_run_by_name_or_is_skipped() {
    let dir = scratch("corrupt");
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    let fixture = repo().join("tests/fixtures/image-folder");
    let mut rows = Vec::new();
    for i in 0..4 {
        let name = format!("images/{i:03}.png");
        let image = image::open(fixture.join(format!("captions/{i:03}.png"))).unwrap();
        image.save(data.join(&name)).unwrap();
        rows.push(format!(r#"{{"file_name": "{name}", "text": "a shape"}}"#));
    }
    // The header reads (the folder opens), the pixel data is cut short.
    let whole = std::fs::read(data.join("images/002.png")).unwrap();
    std::fs::write(data.join("images/002.png"), &whole[..whole.len() / 2]).unwrap();
    std::fs::write(data.join("metadata.jsonl"), rows.join("\n")).unwrap();

    let (ok, log) = distill("sr", &data, &dir, &[]);
    assert!(!ok, "{log}");
    assert!(
        log.contains("002.png")
            && log.contains("not a readable image")
            && log.contains("skip_bad_images"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(!dir.join("adapter").exists(), "nothing exported");

    let (ok, log) = distill("sr", &data, &dir, &["--skip-bad-images"]);
    assert!(ok, "{log}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("adapter/distill.json")).unwrap()).unwrap();
    assert!(summary["skipped_images"].as_u64().unwrap() > 0, "{summary}");
    std::fs::remove_dir_all(&dir).ok();
}
