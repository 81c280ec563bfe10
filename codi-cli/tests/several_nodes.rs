//! Data-parallel distillation across processes: two `codi distill` processes on the loopback address, one
//! replica each with half of every batch, joined through burn-collective's global orchestrator, export the
//! adapter that one process with the whole batch exports; killing one ends the other with an error within
//! its `--peer-timeout`, not a hang.

mod common;
use common::repo;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A scratch folder with the PE-CoDi super-resolution config on a small data set.
fn setup(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("codi-nodes-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("configs/distill/pe-codi-sr.json")).unwrap(),
    )
    .unwrap();
    cfg["data"]["scenes_train"] = 24.into();
    cfg["data"]["scenes_test"] = 8.into();
    cfg["train"]["valid_items"] = 4.into();
    let file = dir.join("config.json");
    std::fs::write(&file, cfg.to_string()).unwrap();
    (dir, file)
}

/// A port p with p + 1 and p + 2 free too (the orchestrator and the two nodes' tensor services).
fn free_ports() -> u16 {
    (0..50)
        .find_map(|_| {
            let first = TcpListener::bind("127.0.0.1:0").ok()?;
            let p = first.local_addr().ok()?.port();
            let rest: Option<Vec<_>> = (1..=2)
                .map(|i| TcpListener::bind(("127.0.0.1", p.checked_add(i)?)).ok())
                .collect();
            rest.map(|_| p)
        })
        .expect("three consecutive free ports")
}

/// Starts `codi distill` on the config with `extra` flags; stdout and stderr go to `<log>.out` / `.err`.
fn start(config: &Path, run: &Path, out: &Path, extra: &[String], log: &Path) -> Child {
    let fashion = repo().join("tests/fixtures/fashion-mnist-subset");
    Command::new(env!("CARGO_BIN_EXE_codi"))
        .args(["distill", "--task", "sr", "--config"])
        .arg(config)
        .arg("--data")
        .arg(fashion)
        .arg("--run")
        .arg(run)
        .arg("--out")
        .arg(out)
        .args(extra)
        .current_dir(repo())
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::from(
            File::create(log.with_extension("out")).unwrap(),
        ))
        .stderr(Stdio::from(
            File::create(log.with_extension("err")).unwrap(),
        ))
        .spawn()
        .expect("the codi binary runs")
}

fn flags(pairs: &[(&str, String)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| [format!("--{k}"), v.clone()])
        .collect()
}

fn node_flags(port: u16, rank: usize, extra: &[(&str, String)]) -> Vec<String> {
    let mut f = vec![
        ("nodes", "2".to_string()),
        ("node-rank", rank.to_string()),
        ("coordinator", format!("127.0.0.1:{port}")),
    ];
    f.extend(extra.iter().cloned());
    flags(&f)
}

fn logs(log: &Path) -> String {
    ["err", "out"]
        .iter()
        .map(|e| std::fs::read_to_string(log.with_extension(e)).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every tensor of an exported adapter, by name.
fn adapter(out: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(out.join("controlnet/diffusion_pytorch_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let values = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, values)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn two_processes_train_like_one_with_the_whole_batch() {
    let (dir, config) = setup("equal");
    let steps = [("epochs", "1".to_string()), ("steps-per-epoch", "3".into())];
    let mut one = flags(&steps);
    one.extend(flags(&[("batch-size", "8".into())]));
    let log = dir.join("one");
    let single = start(
        &config,
        &dir.join("run-one"),
        &dir.join("out-one"),
        &one,
        &log,
    )
    .wait_with_output()
    .unwrap();
    assert!(single.status.success(), "{}", logs(&log));

    let port = free_ports();
    let mut per_node = steps.to_vec();
    per_node.extend([
        ("batch-size", "4".to_string()),
        ("peer-timeout", "120".into()),
    ]);
    let nodes: Vec<(Child, PathBuf)> = (0..2)
        .map(|rank| {
            let log = dir.join(format!("node{rank}"));
            let child = start(
                &config,
                &dir.join("run-two"),
                &dir.join("out-two"),
                &node_flags(port, rank, &per_node),
                &log,
            );
            (child, log)
        })
        .collect();
    for (child, log) in nodes {
        let status = child.wait_with_output().unwrap().status;
        assert!(status.success(), "{}", logs(&log));
    }

    // Relative to the adapter's largest weight, as the in-process test measures (tests/tests/replicas.rs).
    let (a, b) = (adapter(&dir.join("out-one")), adapter(&dir.join("out-two")));
    assert_eq!(a.len(), b.len());
    let scale = a
        .iter()
        .flat_map(|(_, x)| x.iter())
        .fold(0f32, |m, v| m.max(v.abs()));
    let (mut worst, mut at) = (0f32, String::new());
    for ((name, x), (other, y)) in a.iter().zip(&b) {
        assert_eq!(name, other);
        let diff = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        if diff > worst {
            (worst, at) = (diff, name.clone());
        }
    }
    println!(
        "two nodes against one device: max |diff| {worst:.2e} ({at}), {:.2e} of the largest weight",
        worst / scale
    );
    assert!(worst / scale < 1e-4, "{at}: {:.2e}", worst / scale);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn killing_one_node_ends_the_other_with_an_error() {
    let (dir, config) = setup("kill");
    let port = free_ports();
    let timeout = 5.0;
    let extra = [
        ("epochs", "1".to_string()),
        ("steps-per-epoch", "100000".into()),
        ("batch-size", "2".into()),
        ("log-every", "0.1".into()),
        ("peer-timeout", format!("{timeout}")),
    ];
    let mut nodes: Vec<(Child, PathBuf)> = (0..2)
        .map(|rank| {
            let log = dir.join(format!("node{rank}"));
            let run = dir.join("run");
            let child = start(
                &config,
                &run,
                &dir.join("out"),
                &node_flags(port, rank, &extra),
                &log,
            );
            (child, log)
        })
        .collect();
    // Both train (node 0 prints its progress), then node 1 is killed.
    let started = Instant::now();
    while !logs(&nodes[0].1).contains("step ") {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no training step: {}",
            logs(&nodes[0].1)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    nodes[1].0.kill().unwrap();
    nodes[1].0.wait().unwrap();
    let killed = Instant::now();
    let (survivor, log) = &mut nodes[0];
    let status = loop {
        if let Some(status) = survivor.try_wait().unwrap() {
            break status;
        }
        if killed.elapsed() > Duration::from_secs_f64(timeout + 30.0) {
            survivor.kill().ok();
            panic!(
                "node 0 still runs 30 s past its peer timeout: {}",
                logs(log)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = logs(log);
    println!(
        "node 0 ended {:.1} s after node 1 was killed ({status})",
        killed.elapsed().as_secs_f64()
    );
    assert!(!status.success(), "{text}");
    // Either burn-collective reports the lost peer, or the watchdog ends the wait.
    assert!(
        text.contains("replica 0 could not average its gradients")
            || text.contains("error: replica 0"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
