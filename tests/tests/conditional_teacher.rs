//! The conditional teacher (`loss.objective: "denoising"`): the adapted model trained with the plain denoising
//! loss. Its training step's loss must be that loss, computed here by hand from the same network call.

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use burn::train::TrainStep;
use codi_core::backend::CpuBackend;
use codi_core::loss::{CodiLossConfig, Objective};
use codi_core::tensor_ops::to_vec;
use codi_core::{NoiseScheduleConfig, PredictionType, SeededNoise};
use codi_models::fresh::copy_with_fresh_ids;
use codi_models::ControlNetConfig;
use codi_pipelines::DistillMode;
use codi_train::distill::data::DistillBatch;
use codi_train::distill::model::{Distillation, StepSettings};

type AB = Autodiff<CpuBackend>;

fn normals(r: &mut SeededNoise, shape: [usize; 4]) -> Tensor<AB, 4> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(r.normals(n), shape), &Default::default())
}

#[test]
fn the_conditional_teachers_loss_is_the_plain_denoising_loss() {
    let dev = Default::default();
    let (unet_cfg, _) = codi_tests::tiny_teacher_configs();
    // Burn initialises parameters lazily: materialised here, every clone below holds the same values.
    let unet = copy_with_fresh_ids(&unet_cfg.init::<AB>(&dev));
    let adapter = copy_with_fresh_ids(
        &ControlNetConfig::new(unet_cfg)
            .with_conditioning_channels(3)
            .with_conditioning_embedding_out_channels(vec![8, 8, 16])
            .init_from_unet(&unet, &dev),
    );
    let schedule = NoiseScheduleConfig::sd15().init().unwrap();
    let mut r = SeededNoise::new(11);
    let batch = DistillBatch {
        x: normals(&mut r, [2, 4, 8, 8]),
        cond: normals(&mut r, [2, 3, 32, 32]).abs().clamp_max(1.0),
        text: Tensor::from_data(TensorData::new(r.normals(2 * 5 * 16), [2, 5, 16]), &dev),
        noise: normals(&mut r, [2, 4, 8, 8]),
        uniform: vec![0.25, 0.875],
    };
    for kind in [PredictionType::Epsilon, PredictionType::VPrediction] {
        let settings = StepSettings {
            loss: CodiLossConfig {
                objective: Objective::Denoising,
                ..Default::default()
            },
            prediction_type: kind,
            ema_decay: 0.99,
            grad_clip: 1.0,
            divergence: Default::default(),
        };
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
