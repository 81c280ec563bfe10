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
