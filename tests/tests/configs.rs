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
