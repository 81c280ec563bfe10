//! What the example programs share: where the embedded default lies and how they read their few flags
//! (`--name value`). The programs themselves are `sample.rs`, `custom_task.rs` and `two_backends.rs` beside
//! this folder; the book's chapter "Extending codi" walks through them.

use std::path::PathBuf;

/// The embedded default pipeline (`assets/tiny` of the repository), or `--model DIR`.
pub fn model_dir() -> PathBuf {
    flag("model").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the examples folder lies in the repository")
            .join("assets/tiny")
    })
}

/// Where an example writes its files: `--out DIR`, else `target/examples/<name>` of the repository.
pub fn out_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = flag("out").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the examples folder lies in the repository")
            .join("target/examples")
            .join(name)
    });
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot create the folder: {e}", dir.display()))?;
    Ok(dir)
}

/// The value after `--name` on the command line, if given.
pub fn flag(name: &str) -> Option<String> {
    let key = format!("--{name}");
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| *a == key)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A numeric flag with a default; a value that does not parse is an error naming the flag.
pub fn number<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match flag(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("--{name} {v:?}: not a number")),
    }
}
