//! The training step's loss for the objectives and options the paper's baselines and ablations need, each
//! against a computation from the same network calls. The conditional teacher (`loss.objective:
//! "denoising"`) must train the plain denoising loss; consistency distillation from it (CM-II: `init_from` +
//! `loss.step_model: "initial"`) must start from its weights and take the PF-ODE step with the frozen start;
//! classifier-free guidance folded in (`loss.cfg_scale`) must step along the guided ODE; a progressive-
//! distillation round (GD-II) must match two DDIM steps of its frozen start in one.

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use burn::train::TrainStep;
use codi_core::backend::CpuBackend;
use codi_core::loss::{
    codi_loss, pf_ode_step, timestep_pairs, CodiLossConfig, CodiPoints, ConsistencySpace,
    Objective, OdeStepModel, TimestepSharing,
};
use codi_core::progressive::{progressive_loss, progressive_target, ProgressiveConfig};
use codi_core::sampler::guide_per_sample;
use codi_core::tensor_ops::per_sample;
use codi_core::tensor_ops::to_vec;
use codi_core::{NoiseScheduleConfig, Prediction, PredictionType, SeededNoise, TimestepSpacing};
use codi_models::fresh::copy_with_fresh_ids;
use codi_models::{ControlNetConfig, ControlNetModel, UNet2DConditionModel};
use codi_pipelines::{CodiNet, DistillMode, TaskKind};
use codi_train::distill::data::DistillBatch;
use codi_train::distill::model::{Distillation, StepSettings};

type AB = Autodiff<CpuBackend>;

fn normals(r: &mut SeededNoise, shape: [usize; 4]) -> Tensor<AB, 4> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(r.normals(n), shape), &Default::default())
}

/// Burn's CPU backend draws from one process-wide generator: the tests here run one at a time, so each draws
/// its networks from the seeded generator alone.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tiny backbone, an adapter for a 3-channel condition, and SD's schedule, the same in every test (drawn
/// from the seeded generator; call under [`serial`]). Burn initialises parameters lazily: they
/// are materialised here, so every clone holds the same values.
fn tiny_nets() -> (
    UNet2DConditionModel<AB>,
    ControlNetModel<AB>,
    codi_core::NoiseSchedule,
) {
    let dev = Default::default();
    <AB as burn::tensor::backend::Backend>::seed(&dev, 0);
    let (unet_cfg, _) = codi_tests::tiny_teacher_configs();
    let unet = copy_with_fresh_ids(&unet_cfg.init::<AB>(&dev));
    let adapter = copy_with_fresh_ids(
        &ControlNetConfig::new(unet_cfg)
            .with_conditioning_channels(3)
            .with_conditioning_embedding_out_channels(vec![8, 8, 16])
            .init_from_unet(&unet, &dev),
    );
    (unet, adapter, NoiseScheduleConfig::sd15().init().unwrap())
}

/// [`tiny_nets`] and a second backbone of the same shapes, for the online model to differ from the frozen
/// start the step is taken with.
fn nets_and_another_backbone() -> (
    UNet2DConditionModel<AB>,
    ControlNetModel<AB>,
    codi_core::NoiseSchedule,
    UNet2DConditionModel<AB>,
) {
    let (unet, adapter, schedule) = tiny_nets();
    let unet_cfg = codi_tests::tiny_teacher_configs().0;
    let other = copy_with_fresh_ids(&unet_cfg.init::<AB>(&Default::default()));
    (unet, adapter, schedule, other)
}

/// Two random samples (latents, conditions, texts, noise) with the timestep draws `uniform`; no
/// unconditional text.
fn random_batch(seed: u64, uniform: [f32; 2]) -> DistillBatch<AB> {
    let mut r = SeededNoise::new(seed);
    DistillBatch {
        x: normals(&mut r, [2, 4, 8, 8]),
        cond: normals(&mut r, [2, 3, 32, 32]).abs().clamp_max(1.0),
        text: random_text(&mut r),
        noise: normals(&mut r, [2, 4, 8, 8]),
        uniform: uniform.to_vec(),
        shared_uniform: uniform[0],
        uncond_text: None,
        guidance_uniform: vec![0.5, 0.5],
    }
}

fn random_text(r: &mut SeededNoise) -> Tensor<AB, 3> {
    Tensor::from_data(
        TensorData::new(r.normals(2 * 5 * 16), [2, 5, 16]),
        &Default::default(),
    )
}

/// The step's settings around a loss: EMA 0.99, gradient clip 1.
fn settings(loss: CodiLossConfig, prediction_type: PredictionType) -> StepSettings {
    StepSettings {
        loss,
        prediction_type,
        ema_decay: 0.99,
        grad_clip: 1.0,
        divergence: Default::default(),
        replica: None,
    }
}

#[test]
fn the_conditional_teachers_loss_is_the_plain_denoising_loss() {
    let _serial = serial();
    let dev = Default::default();
    let (unet, adapter, schedule) = tiny_nets();
    let batch = random_batch(11, [0.25, 0.875]);
    for kind in [PredictionType::Epsilon, PredictionType::VPrediction] {
        let settings = settings(
            CodiLossConfig {
                objective: Objective::Denoising,
                ..Default::default()
            },
            kind,
        );
        let model = Distillation::new(
            unet.clone(),
            adapter.clone(),
            DistillMode::PeCodi,
            None,
            None,
            schedule.clone(),
            settings,
        );
        let loss = to_vec(TrainStep::step(&model, batch.clone()).item.loss)[0];

        // By hand: t = ⌊u·1000⌋ per sample, z = α x + σ ε, the target ε or v = α ε − σ x.
        let t = [250i64, 875];
        let (alpha, sigma) = schedule.alpha_sigma::<AB>(&t, &dev);
        let (a, s) = (to_vec(alpha), to_vec(sigma));
        let (x, eps) = (to_vec(batch.x.clone()), to_vec(batch.noise.clone()));
        let per = x.len() / 2;
        let z: Vec<f32> = (0..x.len())
            .map(|i| a[i / per] * x[i] + s[i / per] * eps[i])
            .collect();
        let out = to_vec(model.online.forward(
            Tensor::from_data(TensorData::new(z, [2, 4, 8, 8]), &dev),
            Tensor::from_floats([250.0, 875.0], &dev),
            batch.text.clone(),
            batch.cond.clone(),
        ));
        let target = |i: usize| match kind {
            PredictionType::VPrediction => a[i / per] * eps[i] - s[i / per] * x[i],
            _ => eps[i],
        };
        let want = (0..x.len())
            .map(|i| (out[i] - target(i)).powi(2))
            .sum::<f32>()
            / x.len() as f32;
        eprintln!("{kind:?}: step loss {loss}, by hand {want}");
        assert!(
            (loss - want).abs() <= 1e-5 * want.max(1.0),
            "{kind:?}: {loss} vs {want}"
        );
    }
}

/// The CM-II step: online model at (z_t, t); ẑ_s one DDIM step of the frozen start (here the backbone before
/// training, the online backbone replaced by another); the EMA target at (ẑ_s, s); sample-space consistency.
#[test]
fn two_stage_consistency_takes_the_ode_step_with_the_frozen_start() {
    let _serial = serial();
    let dev = Default::default();
    let (unet, adapter, schedule, other_unet) = nets_and_another_backbone();
    let batch = random_batch(5, [0.3, 0.7]);
    let loss_cfg = |step_model| CodiLossConfig {
        consistency: ConsistencySpace::Sample,
        lambda: 0.0,
        timesteps: TimestepSharing::PerSample,
        step_model,
        ..Default::default()
    };
    let step_loss = |step_model| {
        let mut model = Distillation::new(
            unet.clone(),
            adapter.clone(),
            DistillMode::Codi,
            None,
            None,
            schedule.clone(),
            settings(loss_cfg(step_model), PredictionType::Epsilon),
        );
        model.online.unet = other_unet.clone();
        to_vec(TrainStep::step(&model, batch.clone()).item.loss)[0]
    };
    let got = step_loss(OdeStepModel::Initial);

    let cfg = loss_cfg(OdeStepModel::Initial);
    let (t, s) = timestep_pairs(&cfg, 1000, 2, &batch.uniform).unwrap();
    let (a_t, s_t) = schedule.alpha_sigma::<AB>(&t, &dev);
    let (a_s, s_s) = schedule.alpha_sigma::<AB>(&s, &dev);
    let z_t = batch.x.clone() * per_sample::<AB, 4>(a_t.clone())
        + batch.noise.clone() * per_sample::<AB, 4>(s_t.clone());
    let times = |v: &[i64]| {
        Tensor::<AB, 1>::from_floats(
            v.iter().map(|&x| x as f32).collect::<Vec<_>>().as_slice(),
            &dev,
        )
    };
    let start = CodiNet {
        unet: unet.clone(),
        adapter: adapter.clone(),
    };
    let online = CodiNet {
        unet: other_unet.clone(),
        adapter: adapter.clone(),
    };
    let call = |net: &CodiNet<AB>, z: Tensor<AB, 4>, ts: &[i64]| {
        net.forward(z, times(ts), batch.text.clone(), batch.cond.clone())
    };
    let eps = PredictionType::Epsilon;
    let online_pred = Prediction::from_output(
        eps,
        call(&online, z_t.clone(), &t),
        z_t.clone(),
        a_t.clone(),
        s_t.clone(),
    );
    let start_pred =
        Prediction::from_output(eps, call(&start, z_t.clone(), &t), z_t.clone(), a_t, s_t);
    let z_s = pf_ode_step(&start_pred, None, a_s.clone(), s_s.clone());
    // The EMA target starts as a copy of the start.
    let target = Prediction::from_output(eps, call(&start, z_s.clone(), &s), z_s.clone(), a_s, s_s);
    let points = CodiPoints { t, s, z_t, z_s };
    let want =
        to_vec(codi_loss(&cfg, &online_pred, &target, batch.x.clone(), &points, |v| v).total)[0];
    let own_step = step_loss(OdeStepModel::Online);
    eprintln!("CM-II step loss {got}, by hand {want}, with the online model's own step {own_step}");
    assert!(
        (got - want).abs() <= 1e-5 * want.max(1e-3),
        "{got} vs {want}"
    );
    assert!(
        (got - own_step).abs() > 1e-3 * want,
        "the step model made no difference: {got} vs {own_step}"
    );
}

/// A second stage starts from the first's weights: with a learning rate too small to move them, the exported
/// adapter equals the committed super-resolution teacher's; a run of another task is refused by name.
#[test]
fn a_run_started_from_a_conditional_teacher_begins_at_its_weights() {
    let _serial = serial();
    use codi_train::distill::{distill, export::load_distill_config};
    use codi_train::training::{RunOptions, TrainLoopConfig};
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let (teacher_pipe, start) = (
        repo.join("assets/tiny"),
        repo.join("assets/tiny/baselines/sr/teacher-pe"),
    );
    let (_, info) = codi_pipelines::adapter::read_adapter_info(&start).unwrap();
    let mut cfg = load_distill_config(&start, &info).unwrap();
    cfg.loss = CodiLossConfig {
        consistency: ConsistencySpace::Sample,
        lambda: 0.0,
        step_model: OdeStepModel::Initial,
        ..Default::default()
    };
    cfg.init_from = Some(start.clone());
    cfg.export_ema = false;
    cfg.train = TrainLoopConfig::new()
        .with_batch_size(2)
        .with_num_epochs(1)
        .with_steps_per_epoch(2)
        .with_valid_items(2)
        .with_learning_rate(1e-12)
        .with_weight_decay(0.0);
    cfg.data = cfg.data.clone().with_scenes_train(8).with_scenes_test(4);
    let root = codi_tests::TempDir::new("two-stage");
    let fashion = codi_tests::fixture("fashion-mnist-subset");
    let dev = Default::default();
    let out = root.join("out");
    distill::<AB>(
        &cfg,
        &teacher_pipe,
        &fashion,
        &RunOptions::new(root.join("run")),
        &out,
        &dev,
    )
    .unwrap();
    let read = |dir: &std::path::Path| {
        codi_tests::read_safetensors(&dir.join("controlnet/diffusion_pytorch_model.safetensors"))
    };
    let (want, got) = (read(&start), read(&out));
    assert_eq!(want.len(), got.len());
    let worst = want
        .iter()
        .map(|(k, (_, w))| {
            w.iter()
                .zip(&got[k].1)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
        })
        .fold(0.0, f32::max);
    eprintln!(
        "{} adapter tensors, max |start − after 2 steps at lr 1e-12| = {worst:e}",
        want.len()
    );
    assert!(worst <= 1e-6, "{worst}");

    cfg.task = TaskKind::Inpainting;
    let err = distill::<AB>(
        &cfg,
        &teacher_pipe,
        &fashion,
        &RunOptions::new(root.join("run2")),
        &root.join("out2"),
        &dev,
    )
    .err()
    .expect("an sr run cannot start an inpainting run")
    .to_string();
    assert!(err.contains("init_from") && err.contains("\"sr\""), "{err}");
}

/// CoDi with guidance folded in: the online model's own step uses u + w·(c − u) with w = lo + (hi − lo)·draw
/// per sample, the target and the online prediction stay conditional.
#[test]
fn folded_guidance_steps_along_the_guided_ode() {
    let _serial = serial();
    let dev = Default::default();
    let (unet, adapter, schedule) = tiny_nets();
    let batch = DistillBatch {
        uncond_text: Some(random_text(&mut SeededNoise::new(24))),
        guidance_uniform: vec![0.25, 0.5],
        ..random_batch(23, [0.6, 0.6])
    };
    // The consistency term alone: the guidance term does not see the step.
    let loss_cfg = |cfg_scale| CodiLossConfig {
        cfg_scale,
        lambda: 0.0,
        ..Default::default()
    };
    let model = |cfg_scale| {
        Distillation::new(
            unet.clone(),
            adapter.clone(),
            DistillMode::PeCodi,
            None,
            None,
            schedule.clone(),
            settings(loss_cfg(cfg_scale), PredictionType::Epsilon),
        )
    };
    let step_loss =
        |cfg_scale| to_vec(TrainStep::step(&model(cfg_scale), batch.clone()).item.loss)[0];
    let got = step_loss([2.0, 14.0]);

    // w = 2 + 12·draw: 5 and 8.
    let cfg = loss_cfg([2.0, 14.0]);
    let (t, s) = timestep_pairs(&cfg, 1000, 2, &batch.uniform).unwrap();
    let (a_t, s_t) = schedule.alpha_sigma::<AB>(&t, &dev);
    let (a_s, s_s) = schedule.alpha_sigma::<AB>(&s, &dev);
    let z_t = batch.x.clone() * per_sample::<AB, 4>(a_t.clone())
        + batch.noise.clone() * per_sample::<AB, 4>(s_t.clone());
    let times = |v: &[i64]| {
        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Tensor::<AB, 1>::from_data(TensorData::new(v, [2]), &dev)
    };
    let net = model([1.0, 1.0]).online;
    let call = |z: Tensor<AB, 4>, ts: &[i64], text: Tensor<AB, 3>| {
        net.forward(z, times(ts), text, batch.cond.clone())
    };
    let eps = PredictionType::Epsilon;
    let c = call(z_t.clone(), &t, batch.text.clone());
    let u = call(z_t.clone(), &t, batch.uncond_text.clone().unwrap());
    let w = Tensor::<AB, 1>::from_floats([5.0, 8.0], &dev);
    let guided = guide_per_sample(c.clone(), u, w);
    let online = Prediction::from_output(eps, c, z_t.clone(), a_t.clone(), s_t.clone());
    let step = Prediction::from_output(eps, guided, z_t.clone(), a_t, s_t);
    let z_s = pf_ode_step(&step, None, a_s.clone(), s_s.clone());
    let target_out = call(z_s.clone(), &s, batch.text.clone());
    let target = Prediction::from_output(eps, target_out, z_s.clone(), a_s, s_s);
    let points = CodiPoints { t, s, z_t, z_s };
    let want = to_vec(codi_loss(&cfg, &online, &target, batch.x.clone(), &points, |v| v).total)[0];
    let unguided = step_loss([1.0, 1.0]);
    eprintln!("guided step loss {got}, by hand {want}, unguided {unguided}");
    assert!(
        (got - want).abs() <= 1e-5 * want.max(1e-3),
        "{got} vs {want}"
    );
    assert!(
        (got - unguided).abs() > 0.1 * want,
        "guidance made no difference: {got} vs {unguided}"
    );
}

/// A progressive-distillation round (GD-II): the frozen start takes two DDIM steps t → mid → end (one where
/// nothing lies between), the student is pulled to the x̃ whose one step lands there, weighted by
/// max(SNR, 1). Computed sample by sample from the same network calls, on both grids.
#[test]
fn a_progressive_round_matches_two_steps_of_its_start_in_one() {
    let _serial = serial();
    let dev = Default::default();
    let (unet, adapter, schedule, other_unet) = nets_and_another_backbone();
    let batch = random_batch(7, [0.1, 0.9]);
    for spacing in [TimestepSpacing::Trailing, TimestepSpacing::Leading] {
        let cfg = CodiLossConfig {
            objective: Objective::Progressive,
            step_model: OdeStepModel::Initial,
            progressive: ProgressiveConfig {
                student_steps: 4,
                spacing,
                rounds: 1,
            },
            ..Default::default()
        };
        let mut model = Distillation::new(
            unet.clone(),
            adapter.clone(),
            DistillMode::Codi,
            None,
            None,
            schedule.clone(),
            settings(cfg, PredictionType::Epsilon),
        );
        model.online.unet = other_unet.clone();
        let got = to_vec(TrainStep::step(&model, batch.clone()).item.loss)[0];

        let start = CodiNet {
            unet: unet.clone(),
            adapter: adapter.clone(),
        };
        let steps = cfg.progressive.steps(1000, &batch.uniform).unwrap();
        let mut want = 0.0;
        for (i, step) in steps.iter().enumerate() {
            let one = |t: Tensor<AB, 4>| t.narrow(0, i, 1);
            let (text, cond) = (
                batch.text.clone().narrow(0, i, 1),
                batch.cond.clone().narrow(0, i, 1),
            );
            let ab = |t: i64| schedule.alpha_sigma::<AB>(&[t], &dev);
            let predict = |net: &CodiNet<AB>, z: Tensor<AB, 4>, t: i64| {
                let out = net.forward(
                    z.clone(),
                    Tensor::from_floats([t as f32], &dev),
                    text.clone(),
                    cond.clone(),
                );
                let (a, s) = ab(t);
                Prediction::from_output(PredictionType::Epsilon, out, z, a, s)
            };
            let (a_t, s_t) = ab(step.t);
            let z_t = one(batch.x.clone()) * per_sample::<AB, 4>(a_t.clone())
                + one(batch.noise.clone()) * per_sample::<AB, 4>(s_t.clone());
            let mut z = z_t.clone();
            let mut at = step.t;
            for next in step.mid.into_iter().chain([step.end]) {
                let (a, s) = ab(next);
                z = predict(&start, z, at).renoise(a, s);
                at = next;
            }
            let target =
                progressive_target(z_t.clone(), z, (a_t.clone(), s_t.clone()), ab(step.end));
            let student = predict(&model.online, z_t, step.t);
            want += to_vec(progressive_loss(&student, target, a_t, s_t))[0] / steps.len() as f32;
        }
        eprintln!("{spacing:?}: progressive step loss {got}, by hand {want} ({steps:?})");
        assert!(
            (got - want).abs() <= 1e-4 * want.max(1e-3),
            "{spacing:?}: {got} vs {want}"
        );
    }
}
