//! End-to-end pretraining on the committed Fashion-MNIST subset and a few procedural scenes: each model trains
//! a few steps through burn-train, its loss falls, a run killed after its first epoch resumes from that
//! epoch's checkpoint, and the saved pipeline samples.

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use codi_core::backend::CpuBackend;
use codi_core::{Sampler, SamplerKind, SeededNoise};
use codi_models::classifier::ClassifierConfig;
use codi_models::AutoencoderKLConfig;
use codi_pipelines::TextToImage;
use codi_tests::fixture;
use codi_train::data::mixed::{DataConfig, NUM_LABELS};
use codi_train::pretrain::classifier::{pretrain_classifier, ClassifierPretrainConfig};
use codi_train::pretrain::teacher::{pretrain_teacher, TeacherPretrainConfig};
use codi_train::pretrain::vae::{pretrain_vae, VaePretrainConfig};
use codi_train::training::{FitReport, RunOptions, TrainLoopConfig};

type B = Autodiff<CpuBackend>;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("codi-pretrain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn data() -> DataConfig {
    DataConfig::new().with_scenes_train(24).with_scenes_test(8)
}

fn quick_loop(epochs: usize, lr: f64) -> TrainLoopConfig {
    TrainLoopConfig::new()
        .with_batch_size(8)
        .with_num_epochs(epochs)
        .with_steps_per_epoch(6)
        .with_valid_items(24)
        .with_learning_rate(lr)
}

fn run(dir: &Path, resume: bool) -> RunOptions {
    let mut r = RunOptions::new(dir);
    r.resume = resume;
    r
}

fn valid_loss(report: &FitReport, epoch: usize) -> f64 {
    report
        .history
        .valid
        .iter()
        .find(|(e, _)| *e == epoch)
        .unwrap_or_else(|| panic!("no validation for epoch {epoch}: {:?}", report.history))
        .1["Loss"]
}

fn vae_config(epochs: usize) -> VaePretrainConfig {
    VaePretrainConfig::new(
        AutoencoderKLConfig::new(vec![8, 16, 16]).with_norm_num_groups(4),
        quick_loop(epochs, 3e-3),
        data(),
    )
}

#[test]
fn vae_loss_falls_and_a_killed_run_resumes_from_its_checkpoint() {
    let root = tmp("vae");
    let fashion = fixture("fashion-mnist-subset");
    let dev = Default::default();
    let (report, fit) = pretrain_vae::<B>(
        &vae_config(3),
        &fashion,
        &run(&root.join("run"), false),
        &root.join("vae"),
        &dev,
    )
    .unwrap();
    assert_eq!(fit.start_epoch, 1);
    assert_eq!(fit.history.steps, 18);
    let (first, last) = (valid_loss(&fit, 1), valid_loss(&fit, 3));
    assert!(
        last < first,
        "validation loss did not fall: {first} → {last}"
    );
    assert!(report.psnr_fashion_mnist.is_some() && report.psnr_scenes.is_some());
    assert!(report.scaling_factor.is_finite() && report.scaling_factor > 0.0);
    // The saved VAE loads by its config.json, scaling factor included.
    let vae = codi_models::AutoencoderKL::<CpuBackend>::from_diffusers_dir(&root.join("vae"), &dev)
        .unwrap();
    assert!((vae.scaling_factor - report.scaling_factor).abs() < 1e-9);

    // A run stopped after its first epoch (a kill between checkpoints) resumes at epoch 2 from epoch 1's
    // checkpoint when asked for 3 epochs.
    let (_, partial) = pretrain_vae::<B>(
        &vae_config(1),
        &fashion,
        &run(&root.join("run2"), false),
        &root.join("vae2"),
        &dev,
    )
    .unwrap();
    assert_eq!(partial.history.steps, 6);
    let first = valid_loss(&partial, 1);
    let (_, resumed) = pretrain_vae::<B>(
        &vae_config(3),
        &fashion,
        &run(&root.join("run2"), true),
        &root.join("vae2"),
        &dev,
    )
    .unwrap();
    assert_eq!(resumed.start_epoch, 2);
    assert_eq!(resumed.history.steps, 12, "epochs 2 and 3 only");
    assert_eq!(resumed.history.train.first().map(|e| e.0), Some(2));
    assert!(
        valid_loss(&resumed, 2) < first,
        "the resumed run did not start from the checkpoint's weights"
    );
    // Resuming a finished run trains nothing and exports its last checkpoint.
    let (_, again) = pretrain_vae::<B>(
        &vae_config(3),
        &fashion,
        &run(&root.join("run"), true),
        &root.join("vae"),
        &dev,
    )
    .unwrap();
    assert_eq!((again.start_epoch, again.history.steps), (4, 0));

    // Continuing decoder-only moves the decoder and leaves the encoder (the latent space) bit-identical.
    let before =
        codi_models::AutoencoderKL::<CpuBackend>::from_diffusers_dir(&root.join("vae"), &dev)
            .unwrap();
    let mut decoder_only = vae_config(4);
    decoder_only.decoder_only = true;
    let (report2, _) = pretrain_vae::<B>(
        &decoder_only,
        &fashion,
        &run(&root.join("run"), true),
        &root.join("vae"),
        &dev,
    )
    .unwrap();
    let after =
        codi_models::AutoencoderKL::<CpuBackend>::from_diffusers_dir(&root.join("vae"), &dev)
            .unwrap();
    let flat = |m: &codi_models::vae::Encoder<CpuBackend>| {
        codi_core::tensor_ops::to_vec(m.conv_in.weight.val())
    };
    assert_eq!(flat(&before.encoder), flat(&after.encoder));
    assert_ne!(
        codi_core::tensor_ops::to_vec(before.decoder.conv_out.weight.val()),
        codi_core::tensor_ops::to_vec(after.decoder.conv_out.weight.val())
    );
    assert!((report2.scaling_factor - before.scaling_factor).abs() < 1e-9);
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn classifier_loss_falls() {
    let root = tmp("classifier");
    let config = ClassifierPretrainConfig::new(
        ClassifierConfig::new(NUM_LABELS).with_block_out_channels(vec![8, 16]),
        quick_loop(3, 3e-3),
        data(),
    );
    let (report, fit) = pretrain_classifier::<B>(
        &config,
        &fixture("fashion-mnist-subset"),
        &run(&root.join("run"), false),
        &root.join("classifier"),
        &Default::default(),
    )
    .unwrap();
    let (first, last) = (valid_loss(&fit, 1), valid_loss(&fit, 3));
    assert!(
        last < first,
        "validation loss did not fall: {first} → {last}"
    );
    assert_eq!(report.n_fashion_mnist, 100);
    assert!(codi_models::classifier::Classifier::<CpuBackend>::from_dir(
        &root.join("classifier"),
        &Default::default()
    )
    .is_ok());
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn teacher_trains_on_vae_latents_and_its_pipeline_samples() {
    let root = tmp("teacher");
    let fashion = fixture("fashion-mnist-subset");
    let dev = Default::default();
    pretrain_vae::<B>(
        &vae_config(1),
        &fashion,
        &run(&root.join("vae-run"), false),
        &root.join("pipe/vae"),
        &dev,
    )
    .unwrap();
    let (unet, text) = codi_tests::tiny_teacher_configs();
    let config = TeacherPretrainConfig::new(unet, text, quick_loop(3, 3e-3), data());
    let fit = pretrain_teacher::<B>(
        &config,
        &fashion,
        &root.join("pipe/vae"),
        &run(&root.join("run"), false),
        &root.join("pipe"),
        &dev,
    )
    .unwrap();
    let train_loss = |e: usize| fit.history.train.iter().find(|x| x.0 == e).unwrap().1["Loss"];
    assert!(train_loss(3) < train_loss(1), "{:?}", fit.history.train);

    // A vocabulary that does not match the text encoder is refused with the file named.
    let mut bad = config.clone();
    bad.text_encoder.vocab_size += 1;
    let err = pretrain_teacher::<B>(
        &bad,
        &fashion,
        &root.join("pipe/vae"),
        &run(&root.join("bad"), false),
        &root.join("pipe"),
        &dev,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("vocab_size"),
        "{err}"
    );

    let pipe = TextToImage::<CpuBackend>::load(&root.join("pipe"), &dev).unwrap();
    let sampler = Sampler::new(SamplerKind::ddim(), 2);
    let images = pipe
        .generate(
            &["a sneaker", "a red box on a grey floor"],
            &sampler,
            3.0,
            32,
            &mut SeededNoise::new(0),
            &dev,
            |_, _| {},
        )
        .unwrap();
    assert_eq!(images.dims(), [2, 3, 32, 32]);
    let v = codi_core::tensor_ops::to_vec(images);
    assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
    std::fs::remove_dir_all(&root).ok();
}
