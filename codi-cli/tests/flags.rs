//! Bad flag values end the command with one clear error naming the flag or the problem, never a panic.

mod common;
use common::codi;

#[test]
fn zero_negative_and_impossible_values_are_refused_by_name() {
    let out = std::env::temp_dir().join(format!("codi-flags-{}.png", std::process::id()));
    let out = out.to_str().unwrap();
    let cases: [(&[&str], &str); 12] = [
        (
            &["sample", "--prompt", "a bag", "--steps", "0", "--out", out],
            "--steps",
        ),
        (
            &["sample", "--prompt", "a bag", "--batch", "0", "--out", out],
            "--batch",
        ),
        (
            &["sample", "--prompt", "a bag", "--guidance=-1", "--out", out],
            "--guidance",
        ),
        (
            &["sample", "--prompt", "a bag", "--size", "0", "--out", out],
            "--size",
        ),
        (
            &[
                "sample", "--prompt", "a bag", "--size", "30", "--steps", "1", "--out", out,
            ],
            "a multiple of 8",
        ),
        (
            &[
                "sample",
                "--prompt",
                "a bag",
                "--sampler",
                "codi",
                "--steps",
                "60",
                "--out",
                out,
            ],
            "between 1 and 50",
        ),
        (&["eval", "teacher", "--samples", "1"], "at least 2 samples"),
        (&["distill", "--task", "sr", "--epochs", "0"], "--epochs"),
        (
            &["distill", "--task", "sr", "--log-every=-1"],
            "--log-every",
        ),
        (&["pretrain", "vae", "--batch-size", "0"], "--batch-size"),
        (
            &["distill", "--task", "sr", "--data", "/no/such/photos"],
            "--data /no/such/photos: no such folder",
        ),
        (&["demo", "--pairs", "0"], "--pairs"),
    ];
    for (args, needle) in cases {
        let (ok, text) = codi(args);
        assert!(!ok, "codi {args:?} succeeded:\n{text}");
        assert!(
            !text.contains("panicked"),
            "codi {args:?} panicked:\n{text}"
        );
        assert!(
            text.contains(needle),
            "codi {args:?}: the error does not say {needle:?}:\n{text}"
        );
    }
    assert!(
        !std::path::Path::new(out).exists(),
        "a refused command wrote its output"
    );
}

#[test]
fn a_mask_of_another_size_than_its_image_is_refused() {
    let dir = std::env::temp_dir().join(format!("codi-shapes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("image.png");
    let mask = dir.join("mask.png");
    let grey = |side: usize| vec![128u8; 3 * side * side];
    codi_pipelines::image_io::write_png(&image, 32, 32, &grey(32)).unwrap();
    codi_pipelines::image_io::write_png(&mask, 16, 16, &grey(16)).unwrap();
    let out = dir.join("out.png");
    let (ok, text) = codi(&[
        "sample",
        "--task",
        "inpaint",
        "--input",
        image.to_str().unwrap(),
        "--mask",
        mask.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && !text.contains("panicked"), "{text}");
    assert!(
        text.contains("mask.png: the mask is 16×16 pixels but the image"),
        "{text}"
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).ok();
}
