//! The training-step workload of `codi bench models`: one step of the distiller itself
//! (`codi_train::distill::model::Distillation`): online UNet + adapter forward with gradient, the PF-ODE step
//! from its detached prediction, the EMA target's forward, the CoDi loss, backward, global-norm clip, AdamW
//! and the EMA update. bench/pytorch_bench.py runs the same step on the same weights and inputs.

use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::optim::AdamWConfig;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use burn::train::TrainStep;
use codi_core::loss::{timestep_pairs, CodiLossConfig};
use codi_core::tensor_ops::to_vec;
use codi_core::{NoiseScheduleConfig, PredictionType};
use codi_models::fresh::copy_with_fresh_ids;
use codi_models::{ControlNetModel, UNet2DConditionModel};
use codi_pipelines::DistillMode;
use codi_train::distill::data::DistillBatch;
use codi_train::distill::model::{Distillation, StepSettings};

struct RequireGrad;

impl<B: Backend> ModuleMapper<B> for RequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(|t| t.set_require_grad(true))
    }
}

/// The draw of the shared timestep; the step's (t, s) follow from it on the loss's grid.
const UNIFORM: f32 = 0.5;
pub const LR: f64 = 1e-5;
pub const EMA_DECAY: f64 = 0.999;
pub const WEIGHT_DECAY: f32 = 1e-2;
pub const GRAD_CLIP: f64 = 1.0;

/// `--mode`: codi | pe-codi.
pub fn parse_mode(s: &str) -> Result<DistillMode, String> {
    match s {
        "codi" => Ok(DistillMode::Codi),
        "pe-codi" => Ok(DistillMode::PeCodi),
        other => Err(format!("unknown mode '{other}' (expected codi or pe-codi)")),
    }
}

/// The inputs of the step, on the inner backend so they can also be saved for PyTorch.
pub struct StepInputs<B: Backend> {
    /// Clean latents x: [b, c, h, w]
    pub x: Tensor<B, 4>,
    /// The noise that makes z_t: [b, c, h, w]
    pub noise: Tensor<B, 4>,
    /// Text states: [b, tokens, cross_attention_dim]
    pub text: Tensor<B, 3>,
    /// Condition image: [b, 3, H, W]
    pub cond: Tensor<B, 4>,
}

/// (t, s) of the benchmarked step, one per sample.
pub fn step_timesteps(batch: usize) -> (Vec<i64>, Vec<i64>) {
    timestep_pairs(
        &CodiLossConfig::default(),
        NoiseScheduleConfig::sd15()
            .init()
            .expect("SD schedule")
            .num_train_timesteps(),
        batch,
        &vec![UNIFORM; batch],
    )
    .expect("default loss config fits the SD schedule")
}

/// A distiller around copies of `unet` and `adapter` (fresh parameter ids, so the caller's modules are
/// untouched), with AdamW; `step()` runs one full training step and returns its loss.
pub struct StepBench<AB: AutodiffBackend> {
    model: Option<Distillation<AB>>,
    optim: Box<dyn FnMut(Distillation<AB>, burn::optim::GradientsParams) -> Distillation<AB>>,
    batch: DistillBatch<AB>,
    device: AB::Device,
}

impl<AB: AutodiffBackend> StepBench<AB> {
    pub fn new(
        unet: &UNet2DConditionModel<AB::InnerBackend>,
        adapter: &ControlNetModel<AB::InnerBackend>,
        inputs: &StepInputs<AB::InnerBackend>,
        mode: DistillMode,
    ) -> Self {
        // Inner-backend parameters carry no gradient flag: every one is made trainable here.
        let unet =
            UNet2DConditionModel::<AB>::from_inner(copy_with_fresh_ids(unet)).map(&mut RequireGrad);
        let adapter =
            ControlNetModel::<AB>::from_inner(copy_with_fresh_ids(adapter)).map(&mut RequireGrad);
        let model = Distillation::new(
            unet,
            adapter,
            mode,
            None,
            None,
            NoiseScheduleConfig::sd15().init().expect("SD schedule"),
            StepSettings {
                loss: CodiLossConfig::default(),
                prediction_type: PredictionType::Epsilon,
                ema_decay: EMA_DECAY,
                grad_clip: GRAD_CLIP,
                divergence: Default::default(),
                replica: None,
            },
        );
        let mut optim = AdamWConfig::new()
            .with_weight_decay(WEIGHT_DECAY)
            .with_epsilon(1e-8)
            .init::<AB, Distillation<AB>>();
        let n = inputs.x.dims()[0];
        let batch = DistillBatch {
            x: Tensor::from_inner(inputs.x.clone()),
            cond: Tensor::from_inner(inputs.cond.clone()),
            text: Tensor::from_inner(inputs.text.clone()),
            noise: Tensor::from_inner(inputs.noise.clone()),
            uniform: vec![UNIFORM; n],
            shared_uniform: UNIFORM,
            uncond_text: None,
            guidance_uniform: vec![0.5; n],
        };
        Self {
            device: inputs.x.device(),
            model: Some(model),
            optim: Box::new(move |m, g| m.optimize::<AB, _>(&mut optim, LR, g)),
            batch,
        }
    }

    /// One training step, finished on the device; returns the step's loss.
    pub fn step(&mut self) -> f32 {
        let model = self
            .model
            .take()
            .expect("the model is put back after each step");
        let out = model.step(self.batch.clone());
        let loss = to_vec(out.item.loss.clone())[0];
        self.model = Some((self.optim)(model, out.grads));
        // On a GPU the optimizer's kernels are still queued: the step ends when they have run.
        AB::sync(&self.device).expect("the device finishes the step");
        loss
    }
}
