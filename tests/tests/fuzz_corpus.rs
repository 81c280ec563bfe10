//! Every fuzz target's kept corpus (`fuzz/corpus/<target>`) and its regressions (`fuzz/regressions/<target>`,
//! the inputs that once crashed it) replayed through the target's body: none may panic. The fuzzing itself is
//! `fuzz/run.sh` (libFuzzer through cargo fuzz); this is the part CI runs, in seconds.

use std::path::{Path, PathBuf};

use codi_tests::fuzz::{self, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.retain(|f| f.is_file());
    files.sort();
    files
}

#[test]
fn every_target_has_a_corpus_and_replays_it_without_a_panic() {
    let mut failures = Vec::new();
    for (name, body) in TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty");
        let regressions = inputs(&fuzz_dir().join("regressions").join(name));
        for file in corpus.iter().chain(&regressions) {
            let data = std::fs::read(file).unwrap();
            // A panic is caught here so that one run lists every failing input.
            if std::panic::catch_unwind(|| body(&data)).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "inputs that panic: {failures:#?}");
}

#[test]
fn every_target_is_a_binary_of_the_fuzz_crate() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
        assert!(fuzz_dir().join(format!("fuzz_targets/{name}.rs")).exists());
    }
}

/// Writes the generated seeds (weights, IDX, PNG files made by codi's own writers) and copies the committed
/// model and training configs into `fuzz/corpus/`: `cargo test -p codi-tests --test fuzz_corpus -- --ignored`.
#[test]
#[ignore = "writes fuzz/corpus/: run once when a target is added"]
fn write_seeds() {
    for (name, _) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, bytes) in fuzz::seeds(name) {
            std::fs::write(dir.join(format!("seed-{file}")), bytes).unwrap();
        }
    }
}
