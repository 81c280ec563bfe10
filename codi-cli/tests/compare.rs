//! `codi eval compare` on a tiny run: a conditional teacher distilled for two steps and the committed PE-CoDi
//! super-resolution adapter, scored side by side on four test pairs; every file it promises is written.

mod common;
use common::{codi, compare_sr, repo, FASHION_SUBSET};

#[test]
fn eval_compare_writes_the_table_the_plot_and_the_grid() {
    let dir = std::env::temp_dir().join(format!("codi-compare-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    // The conditional-teacher config, on a small data set, for two optimizer steps.
    let mut cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("configs/distill/teacher-pe-sr.json")).unwrap(),
    )
    .unwrap();
    cfg["data"]["scenes_train"] = 24.into();
    cfg["data"]["scenes_test"] = 8.into();
    cfg["train"]["valid_items"] = 4.into();
    let cfg_file = dir.join("teacher.json");
    std::fs::write(&cfg_file, cfg.to_string()).unwrap();
    let teacher = dir.join("teacher");
    let (ok, log) = codi(&[
        "distill",
        "--task",
        "sr",
        "--config",
        cfg_file.to_str().unwrap(),
        "--data",
        FASHION_SUBSET,
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "2",
        "--run",
        dir.join("run").to_str().unwrap(),
        "--out",
        teacher.to_str().unwrap(),
    ]);
    assert!(ok, "{log}");
    let out = dir.join("compare");
    let methods = format!(
        "Teacher={},PE-CoDi=assets/tiny/adapters/sr",
        teacher.display()
    );
    let (ok, log) = compare_sr(&methods, 4, 2, &out);
    assert!(ok, "{log}");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let rows = results["rows"].as_array().unwrap();
    let got: Vec<(String, String, u64)> = rows
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            (s("method"), s("sampler"), r["steps"].as_u64().unwrap())
        })
        .collect();
    let want: Vec<(String, String, u64)> = [
        ("Teacher", "ddim", 50),
        ("Teacher", "ddim", 20),
        ("Teacher", "ddim", 8),
        ("Teacher", "ddim", 4),
        ("Teacher", "ddim", 2),
        ("Teacher", "ddim", 1),
        ("Teacher", "dpmpp", 4),
        ("Teacher", "dpmpp", 2),
        ("PE-CoDi", "codi", 1),
        ("PE-CoDi", "codi", 2),
        ("PE-CoDi", "codi", 4),
        ("PE-CoDi", "codi", 8),
        ("bicubic", "-", 0),
    ]
    .iter()
    .map(|&(m, s, n)| (m.to_string(), s.to_string(), n))
    .collect();
    assert_eq!(
        got, want,
        "a conditional teacher over DDIM and DPM-Solver++ steps, the adapter with CoDi's"
    );
    for r in rows {
        for key in ["fd", "feature_distance", "psnr", "ssim", "class_agreement"] {
            assert!(r[key].as_f64().unwrap().is_finite(), "{key} of {r}");
        }
    }
    assert_eq!(
        rows[0]["train_steps"], 2,
        "the teacher's budget is reported"
    );
    assert_eq!(
        rows[8]["train_steps"], 900,
        "the committed adapter's budget is reported"
    );
    assert!(rows[0]["ms_per_image"].as_f64().unwrap() > 0.0);
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("| Teacher | ddim | 50 |") && md.contains("| bicubic | - | – |"),
        "{md}"
    );
    let plot = std::fs::read_to_string(out.join("fd-vs-steps.svg")).unwrap();
    assert!(plot.contains("Teacher (dpmpp)") && plot.contains("PE-CoDi (codi)"));
    let grid = std::fs::read_to_string(out.join("grid.svg")).unwrap();
    // Condition, teacher DDIM 50 / DDIM 4 / DPM-Solver++ 4, PE-CoDi 4, bicubic, ground truth: 4 pairs each.
    assert_eq!(grid.matches("<image").count(), 7 * 4);
    assert!(grid.contains("PE-CoDi, codi 4") && grid.contains("ground truth"));
    // A method for another task is refused by name.
    let (ok, log) = codi(&[
        "eval",
        "compare",
        "--methods",
        "a=assets/tiny/adapters/sr,b=assets/tiny/adapters/inpaint",
        "--data",
        FASHION_SUBSET,
        "--samples",
        "2",
        "--out",
        dir.join("bad").to_str().unwrap(),
    ]);
    assert!(
        !ok && log.contains("adapters/inpaint") && log.contains("not sr"),
        "{log}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
