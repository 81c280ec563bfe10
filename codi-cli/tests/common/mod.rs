//! What the command-line tests share: running the `codi` binary from the repository root.
// Each test file compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (where `assets/` and `tests/fixtures/` are).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `codi args…` from the repository root. → (it succeeded, stderr then stdout)
pub fn codi(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_codi"))
        .args(args)
        .current_dir(repo())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the codi binary runs");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

/// The Fashion-MNIST subset the tests train and score on, relative to the repository root.
pub const FASHION_SUBSET: &str = "tests/fixtures/fashion-mnist-subset";

/// `codi eval compare --task sr` of `methods` (`LABEL=DIR,…`) on `samples` test pairs of the subset, in
/// batches of `batch`, into `out`. → (it succeeded, its output)
pub fn compare_sr(methods: &str, samples: usize, batch: usize, out: &Path) -> (bool, String) {
    let (samples, batch) = (samples.to_string(), batch.to_string());
    codi(&[
        "eval",
        "compare",
        "--task",
        "sr",
        "--methods",
        methods,
        "--data",
        FASHION_SUBSET,
        "--samples",
        &samples,
        "--batch",
        &batch,
        "--out",
        out.to_str().expect("a UTF-8 path"),
    ])
}
