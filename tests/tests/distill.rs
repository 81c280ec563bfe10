//! End-to-end distillation on a tiny pipeline pretrained here: the adapted model equals the backbone at step 0,
//! a few CoDi steps reduce the loss, PE-CoDi leaves every backbone weight bit-identical and its adapter refuses
//! another backbone, and a run resumed from a checkpoint matches the uninterrupted run step for step.

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use codi_core::backend::CpuBackend;
use codi_models::{UNet2DConditionModel, UNet2DConditionModelConfig};
use codi_pipelines::TaskKind;
use codi_tests::{fixture, param_values, quick_loop, tiny_data, tiny_pipeline};
use codi_train::distill::{distill, DistillConfig, DistillMode};
use codi_train::training::RunOptions;

type B = Autodiff<CpuBackend>;

/// Burn's CPU backend seeds one process-wide generator: tests that compare runs bit for bit must not draw from it
/// at the same time as another test.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("codi-distill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(dir: &Path, resume: bool) -> RunOptions {
    let mut r = RunOptions::new(dir);
    r.resume = resume;
    r
}

/// What the end-to-end tests start from: the lock that serialises them, a fresh folder, a tiny pipeline in
/// it, and the Fashion-MNIST subset. → (lock, folder, pipeline, data)
fn setup(
    name: &str,
) -> (
    std::sync::MutexGuard<'static, ()>,
    PathBuf,
    PathBuf,
    PathBuf,
) {
    let lock = serial();
    let root = tmp(name);
    let pipe = tiny_pipeline(&root);
    (lock, root, pipe, fixture("fashion-mnist-subset"))
}

fn config(task: TaskKind, mode: DistillMode, epochs: usize) -> DistillConfig {
    DistillConfig::new(task, mode, quick_loop(epochs), tiny_data())
        .with_conditioning_embedding_out_channels(vec![8, 8, 16])
}

#[test]
fn pe_codi_trains_only_the_adapter_and_resumes_step_for_step() {
    let (_serial, root, pipe, fashion) = setup("pe");
    let dev = Default::default();
    let backbone = param_values(
        &UNet2DConditionModel::<CpuBackend>::from_diffusers_dir(&pipe.join("unet"), &dev).unwrap(),
    );

    // Uninterrupted: 3 epochs.
    let full = distill::<B>(
        &config(TaskKind::SuperResolution, DistillMode::PeCodi, 3),
        &pipe,
        &fashion,
        &run(&root.join("full"), false),
        &root.join("out-full"),
        &dev,
    )
    .unwrap();
    assert_eq!(full.report.history.steps, 12);
    assert_eq!(
        param_values(&full.model.online.unet),
        backbone,
        "PE-CoDi changed the backbone"
    );
    let loss = |r: &codi_train::training::FitReport, e: usize| {
        r.history.valid.iter().find(|x| x.0 == e).unwrap().1["Loss"]
    };
    assert!(
        loss(&full.report, 3) < loss(&full.report, 1),
        "{:?}",
        full.report.history.valid
    );
    let adapter = param_values(&full.model.online.adapter);

    // Interrupted after epoch 1, then resumed to 3: the same adapter, bit for bit.
    let cut = root.join("cut");
    distill::<B>(
        &config(TaskKind::SuperResolution, DistillMode::PeCodi, 1),
        &pipe,
        &fashion,
        &run(&cut, false),
        &root.join("out-cut"),
        &dev,
    )
    .unwrap();
    let resumed = distill::<B>(
        &config(TaskKind::SuperResolution, DistillMode::PeCodi, 3),
        &pipe,
        &fashion,
        &run(&cut, true),
        &root.join("out-cut"),
        &dev,
    )
    .unwrap();
    assert_eq!(resumed.report.start_epoch, 2);
    // Retention across the resume: the same checkpoints as the uninterrupted run's (the last two and the
    // best by validation loss), not the resumed run's plus every one from before it.
    let epochs =
        |run: &Path| codi_train::training::checkpoint::complete_epochs(&run.join("checkpoint"));
    assert_eq!(epochs(&cut), epochs(&root.join("full")));
    assert_eq!(
        param_values(&resumed.model.online.adapter),
        adapter,
        "resumed run differs"
    );
    assert_eq!(
        param_values(&resumed.model.ema_adapter),
        param_values(&full.model.ema_adapter)
    );
    assert_eq!(loss(&resumed.report, 3), loss(&full.report, 3));
    // The per-batch metric logs (what `codi curves` draws): every epoch under its own number, identical to
    // the uninterrupted run's — burn-train alone would write the resumed epoch 2 into epoch-1.
    for split in ["train", "valid"] {
        for e in 1..=3 {
            let log = |run: &Path| {
                std::fs::read_to_string(run.join(split).join(format!("epoch-{e}/Loss.log")))
                    .unwrap_or_default()
            };
            let want = log(&root.join("full"));
            assert!(!want.is_empty(), "{split} epoch {e}: no log");
            assert_eq!(
                log(&cut),
                want,
                "{split} epoch {e}: the resumed run's log differs"
            );
        }
    }

    // The adapter loads on its backbone and is refused on another.
    assert!(codi_pipelines::adapter::load_adapter::<CpuBackend>(
        &root.join("out-full"),
        &pipe.join("unet"),
        &dev
    )
    .is_ok());
    let other = root.join("other-unet");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(pipe.join("unet/config.json"), other.join("config.json")).unwrap();
    let mut bytes = std::fs::read(pipe.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(other.join("diffusion_pytorch_model.safetensors"), bytes).unwrap();
    let err =
        codi_pipelines::adapter::load_adapter::<CpuBackend>(&root.join("out-full"), &other, &dev)
            .expect_err("a different backbone is refused")
            .to_string();
    assert!(
        err.contains("codi_adapter.json") && err.contains("hash"),
        "{err}"
    );
    // The same weights saved again (new file bytes: burn's writer orders its header anew each time, and the
    // writer now sorts it) are the same backbone.
    let resaved = root.join("resaved-unet");
    let unet =
        UNet2DConditionModel::<CpuBackend>::from_diffusers_dir(&pipe.join("unet"), &dev).unwrap();
    let unet_cfg = codi_models::diffusers_json::read_json(&pipe.join("unet/config.json")).unwrap();
    codi_models::io::save_diffusers_dir(&unet, &unet_cfg, &resaved).unwrap();
    codi_pipelines::adapter::load_adapter::<CpuBackend>(&root.join("out-full"), &resaved, &dev)
        .expect("a re-saved backbone is the same backbone");

    // The distilled model samples at 1, 2 and 4 steps from a condition.
    let pipe_c = codi_pipelines::ConditionalPipeline::<CpuBackend>::load(
        &pipe,
        &root.join("out-full"),
        &dev,
    )
    .unwrap();
    let cond =
        Tensor::<CpuBackend, 4>::random([2, 3, 32, 32], burn::tensor::Distribution::Default, &dev);
    for steps in [1, 2, 4] {
        let img = pipe_c
            .generate(
                cond.clone(),
                &["a sneaker", "a bag"],
                &pipe_c.codi_sampler(steps),
                1.0,
                &mut codi_core::SeededNoise::new(0),
                &dev,
                |_, _| {},
            )
            .unwrap();
        assert_eq!(img.dims(), [2, 3, 32, 32]);
    }
    // Conditions the adapter cannot take are errors that say why, not panics inside the network.
    let refused = |cond: Tensor<CpuBackend, 4>, texts: &[&str]| {
        pipe_c
            .generate(
                cond,
                texts,
                &pipe_c.codi_sampler(1),
                1.0,
                &mut codi_core::SeededNoise::new(0),
                &dev,
                |_, _| {},
            )
            .unwrap_err()
            .to_string()
    };
    let grey = |shape: [usize; 4]| Tensor::<CpuBackend, 4>::full(shape, 0.5, &dev);
    let two = ["a sneaker", "a bag"];
    let e = refused(grey([2, 1, 32, 32]), &two);
    assert!(e.contains("1 channels given, the adapter takes 3"), "{e}");
    let e = refused(grey([2, 3, 32, 16]), &two);
    assert!(e.contains("32×16"), "{e}");
    let e = refused(grey([2, 3, 32, 32]), &two[..1]);
    assert!(e.contains("2 conditions but 1 prompts"), "{e}");
    let e = refused(grey([2, 3, 12, 12]), &two);
    assert!(e.contains("a multiple of"), "{e}");

    // Scoring against the ground truth: PSNR, SSIM and FD per step count, and the bicubic baseline.
    let maker = codi_train::distill::data::PairMaker::Builtin {
        task: TaskKind::SuperResolution,
        sr: codi_train::tasks::SrConfig::new(),
        inpaint: codi_train::tasks::InpaintConfig::new(),
    };
    let source = codi_train::distill::task_source(
        &maker,
        &tiny_data(),
        None,
        &fashion,
        codi_train::data::fashion_mnist::Split::Test,
    )
    .unwrap();
    let pairs = codi_train::distill::data::eval_pairs(source, maker, 1, 6).unwrap();
    let classifier = codi_models::classifier::ClassifierConfig::new(13)
        .with_block_out_channels(vec![8, 16])
        .init::<CpuBackend>(&dev);
    let (report, grid) = codi_train::evaluate::evaluate_task(
        &pipe_c,
        Some(&classifier),
        &pairs,
        &[1, 4],
        None,
        1.0,
        0,
        4,
        2,
        &dev,
    )
    .unwrap();
    assert_eq!(report.scores.len(), 2);
    // A model this briefly trained scores about 8 dB: the bounds catch a metric that compares an image with
    // itself (∞ dB, SSIM 1) or mixes the [0, 1] and [0, 255] ranges (negative dB).
    for s in &report.scores {
        assert!(s.psnr > 5.0 && s.psnr < 60.0, "{} dB", s.psnr);
        assert!(s.ssim > -1.0 && s.ssim < 0.99, "SSIM {}", s.ssim);
        assert!(
            s.fd.is_some_and(|fd| fd.is_finite() && fd > 0.0),
            "FD {:?}",
            s.fd
        );
    }
    // 1 and 4 steps are different samplers: their scores differ.
    assert_ne!(report.scores[0].psnr, report.scores[1].psnr);
    let bicubic = report
        .bicubic
        .expect("super-resolution has a bicubic baseline");
    assert!(bicubic.psnr > 10.0, "{}", bicubic.psnr);
    assert_eq!(grid.dims(), [2 * 4, 3, 32, 32]);
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn the_adapted_model_equals_the_backbone_at_step_zero() {
    let _serial = serial();
    use codi_models::{ControlNetConfig, FusionKind};
    use codi_pipelines::CodiNet;
    let root = tmp("zero");
    let pipe = tiny_pipeline(&root);
    let dev = Default::default();
    let unet =
        UNet2DConditionModel::<CpuBackend>::from_diffusers_dir(&pipe.join("unet"), &dev).unwrap();
    let file = pipe.join("unet/config.json");
    let cfg = UNet2DConditionModelConfig::from_diffusers(
        &codi_models::diffusers_json::read_json(&file).unwrap(),
        &file,
    )
    .unwrap();
    let z = Tensor::<CpuBackend, 4>::random(
        [2, 4, 8, 8],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let t = Tensor::<CpuBackend, 1>::from_floats([500.0, 20.0], &dev);
    let text = Tensor::<CpuBackend, 3>::random(
        [2, 16, 16],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let want = unet.forward(z.clone(), t.clone(), text.clone());
    for (fusion, channels) in [
        (FusionKind::Mix, 3),
        (FusionKind::Add, 4),
        (FusionKind::Mix, 1),
    ] {
        let adapter = ControlNetConfig::new(cfg.clone())
            .with_conditioning_channels(channels)
            .with_conditioning_embedding_out_channels(vec![8, 8, 16])
            .with_fusion(fusion)
            .init_from_unet(&unet, &dev);
        let net = CodiNet {
            unet: unet.clone(),
            adapter,
        };
        let cond = Tensor::<CpuBackend, 4>::random(
            [2, channels, 32, 32],
            burn::tensor::Distribution::Default,
            &dev,
        );
        let got = net.forward(z.clone(), t.clone(), text.clone(), cond);
        assert_eq!(
            codi_core::tensor_ops::max_abs_diff(want.clone(), got),
            0.0,
            "{fusion:?}"
        );
    }
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn codi_trains_backbone_and_adapter_for_every_task() {
    let (_serial, root, pipe, fashion) = setup("codi");
    let dev = Default::default();
    let backbone = param_values(
        &UNet2DConditionModel::<CpuBackend>::from_diffusers_dir(&pipe.join("unet"), &dev).unwrap(),
    );
    for task in TaskKind::EMBEDDED {
        let mode = if task == TaskKind::Inpainting {
            DistillMode::Codi
        } else {
            DistillMode::PeCodi
        };
        let out = root.join(format!("out-{}", task.name()));
        let d = distill::<B>(
            &config(task, mode, 1),
            &pipe,
            &fashion,
            &run(&root.join(task.name()), false),
            &out,
            &dev,
        )
        .unwrap();
        assert_eq!(d.report.history.steps, 4, "{task:?}");
        assert!(
            out.join("controlnet/config.json").exists() && out.join("codi_adapter.json").exists()
        );
        if mode == DistillMode::Codi {
            assert_ne!(
                param_values(&d.model.online.unet),
                backbone,
                "CoDi should train the backbone"
            );
            assert!(out.join("unet/config.json").exists());
        }
    }
    std::fs::remove_dir_all(&root).ok();
}

/// A task defined outside codi: the condition is the image in grey (one channel).
struct Colorize;

impl codi_train::tasks::CustomTask for Colorize {
    fn name(&self) -> &str {
        "colorize"
    }
    fn condition_channels(&self) -> usize {
        1
    }
    fn condition(
        &self,
        image: &[f32],
        size: usize,
        _rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Vec<f32> {
        let plane = size * size;
        (0..plane)
            .map(|i| 0.299 * image[i] + 0.587 * image[plane + i] + 0.114 * image[2 * plane + i])
            .collect()
    }
}

#[test]
fn a_custom_task_distils_its_loss_falls_and_its_adapter_samples() {
    let (_serial, root, pipe, fashion) = setup("custom");
    let dev = Default::default();
    let maker = codi_train::distill::data::PairMaker::Custom(std::sync::Arc::new(Colorize));
    let out = root.join("out");
    let done = codi_train::distill::distill_with::<B>(
        &config(TaskKind::SuperResolution, DistillMode::PeCodi, 3),
        maker,
        &pipe,
        &fashion,
        &run(&root.join("run"), false),
        &out,
        &dev,
    )
    .unwrap();
    let valid = &done.report.history.valid;
    let loss = |e: usize| valid.iter().find(|x| x.0 == e).unwrap().1["Loss"];
    assert!(loss(3) < loss(1), "{valid:?}");
    assert_eq!(done.info.as_ref().unwrap().task, "colorize");
    assert_eq!(done.info.as_ref().unwrap().condition_channels, 1);

    let cp = codi_pipelines::ConditionalPipeline::<CpuBackend>::load(&pipe, &out, &dev).unwrap();
    let err = cp.info.task_kind().unwrap_err().to_string();
    assert!(err.contains("colorize"), "{err}");
    let cond = Tensor::<CpuBackend, 4>::full([2, 1, 32, 32], 0.5, &dev);
    let img = cp
        .generate(
            cond,
            &["a sneaker", "a bag"],
            &cp.codi_sampler(2),
            1.0,
            &mut codi_core::SeededNoise::new(3),
            &dev,
            |_, _| {},
        )
        .unwrap();
    assert_eq!(img.dims(), [2, 3, 32, 32]);
    assert!(codi_core::tensor_ops::to_vec(img)
        .iter()
        .all(|v| v.is_finite()));
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn a_run_folder_in_use_is_refused_and_free_again_after_the_run() {
    let (_serial, root, pipe, fashion) = setup("lock");
    let dev = Default::default();
    let dir = root.join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let held = codi_train::training::lock::RunLock::acquire(&dir).unwrap();
    let cfg = config(TaskKind::SuperResolution, DistillMode::PeCodi, 1);
    let err = distill::<B>(
        &cfg,
        &pipe,
        &fashion,
        &run(&dir, false),
        &root.join("out"),
        &dev,
    )
    .err()
    .expect("a second run in a folder in use must be refused")
    .to_string();
    assert!(err.contains("in use by process"), "{err}");
    assert!(
        !dir.join("checkpoint").exists(),
        "the refused run wrote checkpoints"
    );
    drop(held);
    distill::<B>(
        &cfg,
        &pipe,
        &fashion,
        &run(&dir, false),
        &root.join("out"),
        &dev,
    )
    .unwrap();
    assert!(
        !dir.join("codi.lock").exists(),
        "the finished run left its lock"
    );
    std::fs::remove_dir_all(&root).ok();
}

/// Rewrites every float tensor of a safetensors file as NaN.
fn poison(file: &Path) {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let nan: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
            let n = t.data().len() / 4;
            let data = f32::NAN.to_le_bytes().repeat(n);
            (name, data, t.shape().to_vec(), t.dtype())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = nan
        .iter()
        .map(|(n, d, s, t)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*t, s.clone(), d).unwrap(),
            )
        })
        .collect();
    std::fs::write(file, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn a_nan_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint() {
    let (_serial, root, pipe, fashion) = setup("nan");
    let dev = Default::default();
    let (dir, out) = (root.join("run"), root.join("out"));
    let cfg = |epochs| config(TaskKind::SuperResolution, DistillMode::PeCodi, epochs);
    distill::<B>(&cfg(1), &pipe, &fashion, &run(&dir, false), &out, &dev).unwrap();
    let adapter_file = out.join("controlnet/diffusion_pytorch_model.safetensors");
    let exported = std::fs::read(&adapter_file).unwrap();

    // A VAE of NaNs: the batcher's latents, and so the loss, are NaN from the first step of epoch 2.
    let vae = pipe.join("vae/diffusion_pytorch_model.safetensors");
    let good_vae = std::fs::read(&vae).unwrap();
    poison(&vae);
    let err = distill::<B>(&cfg(2), &pipe, &fashion, &run(&dir, true), &out, &dev)
        .err()
        .expect("a NaN loss must stop the run with an error")
        .to_string();
    assert!(
        err.contains("training diverged at epoch 2, iteration 1") && err.contains("consistency"),
        "{err}"
    );
    assert!(err.contains("last good checkpoint (epoch 1)"), "{err}");
    let checkpoints = dir.join("checkpoint");
    assert_eq!(
        codi_train::training::checkpoint::latest_epoch(&checkpoints),
        Some(1),
        "the diverged epoch was checkpointed"
    );
    assert_eq!(
        std::fs::read(&adapter_file).unwrap(),
        exported,
        "the diverged run overwrote the export"
    );

    // The kept checkpoint resumes once the cause is gone.
    std::fs::write(&vae, good_vae).unwrap();
    let done = distill::<B>(&cfg(2), &pipe, &fashion, &run(&dir, true), &out, &dev).unwrap();
    assert_eq!(done.report.start_epoch, 2);
    std::fs::remove_dir_all(&root).ok();
}

/// A tmpfs of `mb` MiB at `dir`, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, mb: usize) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cannot mount a tmpfs at {} (this test needs root)",
            dir.display()
        );
        Self(dir.to_path_buf())
    }

    fn free_bytes(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().nth(1).unwrap().trim().parse().unwrap()
    }

    /// Fills the disk until `left` bytes are free.
    fn fill_to(&self, left: u64) {
        let ballast = self.free_bytes().saturating_sub(left);
        let status = std::process::Command::new("fallocate")
            .args(["-l", &ballast.to_string()])
            .arg(self.0.join("ballast"))
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn empty(&self) {
        std::fs::remove_file(self.0.join("ballast")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[test]
#[ignore = "needs root: mounts a small tmpfs (.ci/run runs it)"]
fn a_full_disk_while_checkpointing_or_exporting_keeps_the_previous_files() {
    let (_serial, root, pipe, fashion) = setup("full-disk");
    let dev = Default::default();
    let disk = SmallDisk::mount(&root.join("disk"), 64);
    let (dir, out) = (disk.0.join("run"), disk.0.join("out"));
    let cfg = |epochs| config(TaskKind::SuperResolution, DistillMode::PeCodi, epochs);
    distill::<B>(&cfg(1), &pipe, &fashion, &run(&dir, false), &out, &dev).unwrap();
    let ckpt = dir.join("checkpoint");
    let (model1, optim1) = (ckpt.join("model-1.mpk"), ckpt.join("optim-1.mpk"));
    let checkpoint_bytes = std::fs::read(&model1).unwrap();
    let adapter = out.join("controlnet/diffusion_pytorch_model.safetensors");
    let export_bytes = std::fs::read(&adapter).unwrap();

    // Less room than the next checkpoint needs: the run stops with an error, epoch 1's checkpoint and the
    // export stay as they were, and no partial file is left.
    disk.fill_to(file_size(&model1) / 2);
    let err = distill::<B>(&cfg(2), &pipe, &fashion, &run(&dir, true), &out, &dev)
        .err()
        .expect("a full disk must end the run with an error")
        .to_string();
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("checkpoint of epoch 1 is intact"), "{err}");
    assert_eq!(
        codi_train::training::checkpoint::latest_epoch(&ckpt),
        Some(1)
    );
    assert_eq!(std::fs::read(&model1).unwrap(), checkpoint_bytes);
    assert_eq!(std::fs::read(&adapter).unwrap(), export_bytes);
    let partial: Vec<_> = std::fs::read_dir(&ckpt)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".partial"))
        .collect();
    assert!(
        partial.is_empty(),
        "partial checkpoint files left: {partial:?}"
    );

    // Room for the checkpoint but not for the export: the earlier export survives intact.
    disk.empty();
    let room = file_size(&model1) + file_size(&optim1) + (64 << 10);
    disk.fill_to(room + file_size(&adapter) / 2);
    let err = distill::<B>(&cfg(2), &pipe, &fashion, &run(&dir, true), &out, &dev)
        .err()
        .expect("a full disk while exporting must be an error")
        .to_string();
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(
        codi_train::training::checkpoint::latest_epoch(&ckpt),
        Some(2)
    );
    assert_eq!(
        std::fs::read(&adapter).unwrap(),
        export_bytes,
        "the earlier export was damaged"
    );
    drop(disk);
    std::fs::remove_dir_all(&root).ok();
}
