//! Guided distillation's progressive rounds through the command line: one `codi distill` runs two rounds (8
//! then 4 DDIM steps) from the committed super-resolution teacher, each from the one before, records the
//! budget of every stage, skips finished rounds on `--resume`, and `codi eval compare` samples the student
//! with DDIM on its grid. A progressive config without its frozen start, or with more rounds than the
//! schedule allows, is refused by key.

mod common;
use common::{codi, compare_sr, repo, FASHION_SUBSET};
use serde_json::Value;
use std::path::Path;

fn read_json(file: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
}

#[test]
fn progressive_rounds_chain_record_their_budget_and_resume() {
    let dir = std::env::temp_dir().join(format!("codi-progressive-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = read_json(&repo().join("configs/distill/gd2-pe-sr.json"));
    cfg["data"]["scenes_train"] = 24.into();
    cfg["data"]["scenes_test"] = 8.into();
    cfg["train"]["valid_items"] = 4.into();
    cfg["loss"]["progressive"]["rounds"] = 2.into();
    let cfg_file = dir.join("gd2.json");
    std::fs::write(&cfg_file, cfg.to_string()).unwrap();
    let (run, out) = (dir.join("run"), dir.join("out"));
    let distill = |extra: &[&str]| {
        let mut args = vec![
            "distill",
            "--task",
            "sr",
            "--config",
            cfg_file.to_str().unwrap(),
            "--data",
            FASHION_SUBSET,
            "--steps-per-epoch",
            "2",
            "--batch-size",
            "2",
            "--run",
            run.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        codi(&args)
    };
    let (ok, log) = distill(&[]);
    assert!(ok, "{log}");
    assert!(
        log.contains(
            "round 1/2: a student of 8 DDIM steps from assets/tiny/baselines/sr/teacher-pe"
        ) && log.contains("round 2/2: a student of 4 DDIM steps"),
        "{log}"
    );
    let first = run.join("round-8").join("out");
    let first_record = read_json(&first.join("distill.json"));
    let last_record = read_json(&out.join("distill.json"));
    // The committed teacher's 900 steps, then 2 per round.
    assert_eq!(first_record["budget"]["train_steps"], 902);
    assert_eq!(last_record["budget"]["train_steps"], 904);
    assert_eq!(
        last_record["config"]["init_from"].as_str(),
        first.to_str(),
        "the last round starts from the first's output"
    );
    let progressive = &last_record["config"]["loss"]["progressive"];
    assert_eq!(
        (&progressive["student_steps"], &progressive["rounds"]),
        (&Value::from(4), &Value::from(1))
    );
    let info = read_json(&out.join("codi_adapter.json"));
    assert_eq!(info["loss"]["objective"], "progressive");

    // Finished rounds are not trained again.
    let (ok, log) = distill(&["--resume"]);
    assert!(ok, "{log}");
    assert_eq!(log.matches("finished in").count(), 2, "{log}");

    // The student is scored with DDIM on its grid at its steps, with both stages' budget.
    let compare = dir.join("compare");
    let methods = format!("GD-II={}", out.display());
    let (ok, log) = compare_sr(&methods, 2, 2, &compare);
    assert!(ok, "{log}");
    let rows = read_json(&compare.join("results.json"))["rows"].clone();
    assert_eq!(rows[0]["sampler"], "ddim-trailing");
    assert_eq!(rows[0]["steps"], 4);
    assert_eq!(rows[0]["train_steps"], 904);

    // Without its frozen start a progressive round has no teacher: refused by key.
    cfg["loss"]["step_model"] = "online".into();
    std::fs::write(&cfg_file, cfg.to_string()).unwrap();
    let (ok, log) = distill(&[]);
    assert!(!ok && log.contains("loss.step_model"), "{log}");

    // Rounds whose first student would take more steps than half the schedule: refused before any trains.
    cfg["loss"]["step_model"] = "initial".into();
    cfg["loss"]["progressive"]["rounds"] = 10.into();
    std::fs::write(&cfg_file, cfg.to_string()).unwrap();
    let (ok, log) = distill(&[]);
    assert!(
        !ok && log.contains("gd2.json: loss.progressive does not fit the 1000 training timesteps")
            && log.contains("progressive rounds")
            && log.contains("= 2048")
            && !log.contains("round 1/"),
        "{log}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
