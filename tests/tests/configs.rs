//! Every config the repository ships loads with the key check on, and a misspelled key is an error that
//! names the file, the key and the key that was meant.

use std::path::{Path, PathBuf};

use codi_pipelines::adapter::read_adapter_info;
use codi_train::distill::export::load_distill_config;
use codi_train::distill::DistillConfig;
use codi_train::pretrain::classifier::ClassifierPretrainConfig;
use codi_train::pretrain::teacher::TeacherPretrainConfig;
use codi_train::pretrain::vae::VaePretrainConfig;
use codi_train::training::load_config;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_shipped_config_loads_with_no_unknown_key() {
    let distill = json_files(&repo().join("configs/distill"));
    assert!(distill.len() >= 5);
    for f in &distill {
        load_config::<DistillConfig>(f).unwrap_or_else(|e| panic!("{e}"));
    }
    let pretrain = repo().join("configs/pretrain");
    load_config::<VaePretrainConfig>(&pretrain.join("vae.json")).unwrap();
    load_config::<TeacherPretrainConfig>(&pretrain.join("teacher.json")).unwrap();
    load_config::<ClassifierPretrainConfig>(&pretrain.join("classifier.json")).unwrap();
    // The method lists of `codi eval compare` (book: "Reproducing the paper").
    let compare = json_files(&repo().join("configs/compare"));
    assert!(!compare.is_empty());
    for f in &compare {
        codi_train::compare::MethodSpec::parse_list(f.to_str().unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    // The distillation configs saved beside the committed adapters.
    let tiny = repo().join("assets/tiny");
    for dir in [
        "adapters/sr",
        "adapters/inpaint",
        "adapters/edit",
        "adapters/depth",
        "codi-sr",
    ] {
        let dir = tiny.join(dir);
        let (_, info) = read_adapter_info(&dir).unwrap();
        load_distill_config(&dir, &info).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn a_misspelled_key_is_an_error_naming_the_file_the_key_and_the_near_one() {
    let src = repo().join("configs/distill/pe-codi-sr.json");
    let text = std::fs::read_to_string(&src).unwrap();
    let bad = std::env::temp_dir().join(format!("codi-config-typo-{}.json", std::process::id()));
    let load_with = |from: &str, to: &str| {
        assert!(text.contains(from), "the test edits {from}");
        std::fs::write(&bad, text.replacen(from, to, 1)).unwrap();
        load_config::<DistillConfig>(&bad).unwrap_err().to_string()
    };
    // A misspelled key: serde reports the field as missing; the error points at the misspelling.
    let err = load_with("\"ema_decay\"", "\"ema_decy\"");
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(
        err.contains("missing field `ema_decay`") && err.contains("the file has `ema_decy`"),
        "{err}"
    );
    let err = load_with("\"learning_rate\"", "\"learning_rat\"");
    assert!(err.contains("train.learning_rat"), "{err}");
    // A key the config does not have, beside the right one (serde alone would ignore it).
    let err = load_with("\"seed\"", "\"colour\": 3, \"seed\"");
    assert!(err.contains("unknown key `train.colour`"), "{err}");
    let err = load_with("\"ema_decay\"", "\"ema_decai\": 0.5, \"ema_decay\"");
    assert!(
        err.contains("unknown key `ema_decai` (did you mean `ema_decay`?)"),
        "{err}"
    );
    std::fs::remove_file(&bad).ok();
}

#[test]
fn values_outside_a_configs_bounds_are_errors_naming_the_file_and_every_key() {
    let edit = |src: &str, edits: &[(&str, &str)], name: &str| {
        let mut text = std::fs::read_to_string(repo().join(src)).unwrap();
        for (from, to) in edits {
            assert!(text.contains(from), "the test edits {from}");
            text = text.replacen(from, to, 1);
        }
        let file =
            std::env::temp_dir().join(format!("codi-bounds-{name}-{}.json", std::process::id()));
        std::fs::write(&file, text).unwrap();
        file
    };
    let file = edit(
        "configs/distill/pe-codi-sr.json",
        &[
            ("\"batch_size\": 32", "\"batch_size\": 0"),
            ("\"ema_decay\": 0.99", "\"ema_decay\": 1.5"),
            ("\"intervals\": 50", "\"intervals\": 1"),
        ],
        "distill",
    );
    let err = load_config::<DistillConfig>(&file).unwrap_err().to_string();
    assert!(err.contains(&file.display().to_string()), "{err}");
    for key in [
        "`train.batch_size` = 0",
        "`ema_decay` = 1.5",
        "`loss.intervals` = 1",
    ] {
        assert!(err.contains(key), "{key}: {err}");
    }
    // A model no machine could hold, and one no network can be built as: refused before anything is built.
    let file = edit(
        "configs/pretrain/teacher.json",
        &[
            (
                "\"block_out_channels\": [\n      48,",
                "\"block_out_channels\": [\n      4800000,",
            ),
            ("\"norm_num_groups\": 16", "\"norm_num_groups\": 0"),
        ],
        "teacher",
    );
    let err = load_config::<TeacherPretrainConfig>(&file)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "`unet`: `block_out_channels` = [4800000, 96]: every entry must be in 1..=65536"
        ),
        "{err}"
    );
    assert!(err.contains("`norm_num_groups` = 0 must divide"), "{err}");
    std::fs::remove_file(&file).ok();
}
