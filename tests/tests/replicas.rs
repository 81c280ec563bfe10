//! Data-parallel distillation through burn's collective: two replicas (threads on the CPU backend), each with
//! half of every batch, train the same adapter as one device with the whole batch; the first replica alone
//! writes checkpoints, and a two-replica run resumed from one matches the uninterrupted run step for step.

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use codi_core::backend::CpuBackend;
use codi_pipelines::TaskKind;
use codi_tests::{fixture, param_values, quick_loop, tiny_data, tiny_pipeline, TempDir};
use codi_train::distill::{distill, DistillConfig, DistillMode, Distilled};
use codi_train::training::checkpoint::complete_epochs;
use codi_train::training::replicas::{Replica, Topology};
use codi_train::training::RunOptions;

type B = Autodiff<CpuBackend>;
type Inner = CpuBackend;

fn config(batch: usize, epochs: usize) -> DistillConfig {
    let mut train = quick_loop(epochs);
    train.batch_size = batch;
    train.steps_per_epoch = 3;
    DistillConfig::new(
        TaskKind::SuperResolution,
        DistillMode::PeCodi,
        train,
        tiny_data(),
    )
    .with_conditioning_embedding_out_channels(vec![8, 8, 16])
    .with_ema_decay(0.9)
}

fn run_options(dir: &Path, resume: bool) -> RunOptions {
    let mut r = RunOptions::new(dir);
    r.resume = resume;
    r
}

/// `replicas` threads, one replica each, training `config` in `dir`. → each replica's result, by rank
fn replicated(
    replicas: usize,
    config: &DistillConfig,
    pipe: &Path,
    dir: &Path,
    resume: bool,
    out: &Path,
) -> Vec<Distilled<Inner>> {
    let topology = Topology {
        devices: replicas,
        ..Topology::single()
    };
    let fashion = fixture("fashion-mnist-subset");
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..replicas)
            .map(|local| {
                let mut run = run_options(dir, resume);
                run.replica = Some(Replica::new(&topology, local));
                let fashion = &fashion;
                scope.spawn(move || {
                    distill::<B>(config, pipe, fashion, &run, out, &Default::default()).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// max |a − b| / max |a|
fn relative_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

fn mpk_files(dir: &PathBuf) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "mpk"))
        })
        .count()
}

#[test]
fn two_replicas_train_like_one_device_with_the_doubled_batch_and_resume_alike() {
    let root = TempDir::new("replicas");
    let pipe = tiny_pipeline(&root);
    let fashion = fixture("fashion-mnist-subset");

    let one = distill::<B>(
        &config(8, 2),
        &pipe,
        &fashion,
        &run_options(&root.join("one"), false),
        &root.join("out-one"),
        &Default::default(),
    )
    .unwrap();
    let two = replicated(
        2,
        &config(4, 2),
        &pipe,
        &root.join("two"),
        false,
        &root.join("out-two"),
    );

    assert_eq!(two[0].report.history.steps, 6);
    let adapter = param_values(&one.model.online.adapter);
    for (rank, replica) in two.iter().enumerate() {
        let diff = relative_difference(&adapter, &param_values(&replica.model.online.adapter));
        println!("replica {rank}: adapter max |diff| / max |value| = {diff:.2e}");
        assert!(diff < 1e-4, "replica {rank}: {diff:.2e}");
        let ema = relative_difference(
            &param_values(&one.model.ema_adapter),
            &param_values(&replica.model.ema_adapter),
        );
        assert!(ema < 1e-4, "replica {rank} EMA: {ema:.2e}");
    }
    assert_eq!(
        param_values(&two[0].model.online.adapter),
        param_values(&two[1].model.online.adapter),
        "the replicas drifted apart"
    );
    // The first replica exports, validates and checkpoints; the second writes no checkpoint.
    assert!(two[0].info.is_some() && two[1].info.is_none());
    assert!(root.join("out-two/controlnet").is_dir());
    assert!(!two[0].report.history.valid.is_empty());
    assert_eq!(complete_epochs(&root.join("two/checkpoint")), vec![1, 2]);
    assert_eq!(mpk_files(&root.join("two/replicas/1/checkpoint")), 0);

    // Stopped after epoch 1, resumed to 2: the uninterrupted two-replica run, bit for bit.
    let cut = root.join("cut");
    replicated(2, &config(4, 1), &pipe, &cut, false, &root.join("out-cut"));
    let resumed = replicated(2, &config(4, 2), &pipe, &cut, true, &root.join("out-cut"));
    for replica in &resumed {
        assert_eq!(replica.report.start_epoch, 2);
        assert_eq!(
            param_values(&replica.model.online.adapter),
            param_values(&two[0].model.online.adapter),
            "resumed replica differs"
        );
    }
}
