//! The model being distilled and its training step: the online network (backbone + adapter) with gradient;
//! the EMA target, the optional frozen teacher and the optional guidance VAE without.

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use codi_core::loss::{
    codi_loss, denoising_loss, denoising_timesteps, pf_ode_step, timestep_pairs, CodiLossConfig,
    CodiPoints, GuidanceDistance, Objective, OdeStepModel, StepNoise, TimestepSharing,
};
use codi_core::progressive::{progressive_loss, progressive_target};
use codi_core::sampler::guide_per_sample;
use codi_core::tensor_ops::per_sample;
use codi_core::{NoiseSchedule, Prediction, PredictionType};
use codi_models::{AutoencoderKL, ControlNetModel, UNet2DConditionModel};

use super::data::DistillBatch;
use super::ema::ema_update;
use super::DistillMode;
use crate::training::output::StepOutput;
use codi_models::fresh::copy_with_fresh_ids;
use codi_pipelines::CodiNet;

/// Settings the step needs besides the networks.
#[derive(Debug, Clone)]
pub struct StepSettings {
    pub loss: CodiLossConfig,
    pub prediction_type: PredictionType,
    pub ema_decay: f64,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    /// Where a non-finite gradient is reported (the run's [`crate::training::RunOptions::divergence`]).
    pub divergence: crate::training::divergence::DivergenceWatch,
    /// The data-parallel replica whose gradients are averaged with the others' before clipping.
    pub replica: Option<crate::training::replicas::Replica>,
}

#[derive(Module, Debug)]
pub struct Distillation<B: Backend> {
    pub online: CodiNet<B>,
    /// EMA of the adapter; in PE-CoDi the target shares the frozen backbone.
    pub ema_adapter: ControlNetModel<B>,
    /// EMA of the backbone (CoDi only).
    pub ema_unet: Option<UNet2DConditionModel<B>>,
    /// The frozen pre-trained UNet, when it takes the PF-ODE step.
    pub teacher: Option<UNet2DConditionModel<B>>,
    /// A frozen copy of the adapted model at the start, when it takes the PF-ODE step
    /// ([`OdeStepModel::Initial`]).
    pub initial: Option<CodiNet<B>>,
    /// The frozen VAE, when the guidance distance is measured after decoding.
    pub vae: Option<AutoencoderKL<B>>,
    #[module(skip)]
    pub schedule: NoiseSchedule,
    #[module(skip)]
    pub settings: StepSettings,
}

fn timesteps_tensor<B: Backend>(t: &[i64], device: &B::Device) -> Tensor<B, 1> {
    let v: Vec<f32> = t.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(v, [t.len()]), device)
}

/// A network call (z, t, text, cond) → output.
type NetFn<'a, B> =
    &'a dyn Fn(Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 3>, Tensor<B, 4>) -> Tensor<B, 4>;

/// The loss of one batch. `target_net(z_s, s, text, cond)` is the EMA model's output, `step_net` the output of
/// the model that takes the PF-ODE step when that is not the online model.
fn losses<B: Backend>(
    settings: &StepSettings,
    schedule: &NoiseSchedule,
    online: &CodiNet<B>,
    batch: DistillBatch<B>,
    target_net: NetFn<'_, B>,
    step_net: Option<NetFn<'_, B>>,
    guidance_map: &dyn Fn(Tensor<B, 4>) -> Tensor<B, 4>,
) -> StepOutput<B> {
    let cfg = &settings.loss;
    match cfg.objective {
        Objective::Denoising => return denoising(settings, schedule, online, batch),
        Objective::Progressive => {
            let teacher = step_net.expect("a progressive round's step model is its initial model");
            return progressive(settings, schedule, online, batch, teacher);
        }
        Objective::Consistency => {}
    }
    let pt = settings.prediction_type;
    let n = batch.x.dims()[0];
    let dev = batch.x.device();
    // One timestep per batch is drawn from the whole batch's first item: the same on every replica.
    let draws = match cfg.timesteps {
        TimestepSharing::Shared => std::slice::from_ref(&batch.shared_uniform),
        TimestepSharing::PerSample => &batch.uniform[..],
    };
    let (t, s) = timestep_pairs(cfg, schedule.num_train_timesteps(), n, draws)
        .expect("the config was validated");
    let (a_t, s_t) = schedule.alpha_sigma::<B>(&t, &dev);
    let (a_s, s_s) = schedule.alpha_sigma::<B>(&s, &dev);
    let z_t = batch.x.clone() * per_sample::<B, 4>(a_t.clone())
        + batch.noise.clone() * per_sample::<B, 4>(s_t.clone());
    let (tt, st) = (
        timesteps_tensor::<B>(&t, &dev),
        timesteps_tensor::<B>(&s, &dev),
    );
    let out = online.forward(
        z_t.clone(),
        tt.clone(),
        batch.text.clone(),
        batch.cond.clone(),
    );
    let online_out = out.clone().detach();
    let online_pred = Prediction::from_output(pt, out, z_t.clone(), a_t.clone(), s_t.clone());
    let uncond = batch.uncond_text.clone().filter(|_| cfg.folds_cfg());
    let step_pred = if step_net.is_none() && uncond.is_none() {
        online_pred.clone().detach()
    } else {
        // The step model's output for a text embedding, without gradient.
        let step_out = |text: Tensor<B, 3>| match step_net {
            None => online
                .forward(z_t.clone(), tt.clone(), text, batch.cond.clone())
                .detach(),
            Some(f) => f(z_t.clone(), tt.clone(), text, batch.cond.clone()).detach(),
        };
        let captioned = match step_net {
            None => online_out,
            Some(_) => step_out(batch.text.clone()),
        };
        let o = match uncond {
            Some(u) => {
                let w = cfg.cfg_weights(&batch.guidance_uniform);
                let w = Tensor::from_data(TensorData::new(w, [n]), &dev);
                guide_per_sample(captioned, step_out(u), w)
            }
            None => captioned,
        };
        Prediction::from_output(pt, o, z_t.clone(), a_t.clone(), s_t.clone())
    };
    let true_noise = (cfg.step_noise == StepNoise::True).then(|| batch.noise.clone());
    let z_s = pf_ode_step(&step_pred, true_noise, a_s.clone(), s_s.clone());
    let target_out = target_net(z_s.clone(), st, batch.text, batch.cond).detach();
    let target = Prediction::from_output(pt, target_out, z_s.clone(), a_s, s_s);
    let points = CodiPoints { t, s, z_t, z_s };
    let terms = codi_loss(cfg, &online_pred, &target, batch.x, &points, guidance_map);
    StepOutput::new(
        terms.total,
        vec![terms.consistency.detach(), terms.guidance.detach()],
        n,
    )
}

/// The conditional teacher's loss: the plain denoising loss of the adapted model at t drawn per sample over
/// every training timestep. Its terms: consistency 0 (none), guidance ‖x̂_t − x‖² (reported, not trained).
fn denoising<B: Backend>(
    settings: &StepSettings,
    schedule: &NoiseSchedule,
    online: &CodiNet<B>,
    batch: DistillBatch<B>,
) -> StepOutput<B> {
    let n = batch.x.dims()[0];
    let dev = batch.x.device();
    let t = denoising_timesteps(schedule.num_train_timesteps(), &batch.uniform);
    let (a_t, s_t) = schedule.alpha_sigma::<B>(&t, &dev);
    let z_t = batch.x.clone() * per_sample::<B, 4>(a_t.clone())
        + batch.noise.clone() * per_sample::<B, 4>(s_t.clone());
    let out = online.forward(
        z_t.clone(),
        timesteps_tensor::<B>(&t, &dev),
        batch.text,
        batch.cond,
    );
    let pt = settings.prediction_type;
    let x0 = Prediction::from_output(pt, out.clone().detach(), z_t, a_t.clone(), s_t.clone()).x0;
    let loss = denoising_loss(pt, out, batch.x.clone(), batch.noise, a_t, s_t);
    let guidance = (x0 - batch.x).powi_scalar(2).mean();
    StepOutput::new(loss, vec![guidance.zeros_like(), guidance], n)
}

/// A progressive-distillation round's loss: the teacher (the model the round starts from, guided when the
/// config folds classifier-free guidance in) takes two DDIM steps t → mid → end; the student's x̂_t is pulled
/// towards the x̃ whose one step lands at the same point. Its terms: consistency = that loss (matching the
/// teacher's ODE), guidance ‖x̂_t − x‖² (reported, not trained).
fn progressive<B: Backend>(
    settings: &StepSettings,
    schedule: &NoiseSchedule,
    online: &CodiNet<B>,
    batch: DistillBatch<B>,
    teacher: NetFn<'_, B>,
) -> StepOutput<B> {
    let cfg = &settings.loss;
    let pt = settings.prediction_type;
    let n = batch.x.dims()[0];
    let dev = batch.x.device();
    let steps = cfg
        .progressive
        .steps(schedule.num_train_timesteps(), &batch.uniform)
        .expect("the config was validated");
    let t: Vec<i64> = steps.iter().map(|s| s.t).collect();
    let (a_t, s_t) = schedule.alpha_sigma::<B>(&t, &dev);
    let z_t = batch.x.clone() * per_sample::<B, 4>(a_t.clone())
        + batch.noise.clone() * per_sample::<B, 4>(s_t.clone());
    let uncond = batch.uncond_text.clone().filter(|_| cfg.folds_cfg());
    let weights = uncond.as_ref().map(|_| {
        let w = cfg.cfg_weights(&batch.guidance_uniform);
        Tensor::<B, 1>::from_data(TensorData::new(w, [n]), &dev)
    });
    // The teacher's prediction at (z, ts), guided when configured.
    let teach = |z: Tensor<B, 4>, ts: &[i64]| {
        let tt = timesteps_tensor::<B>(ts, &dev);
        let (a, s) = schedule.alpha_sigma::<B>(ts, &dev);
        let c = teacher(
            z.clone(),
            tt.clone(),
            batch.text.clone(),
            batch.cond.clone(),
        )
        .detach();
        let o = match (&uncond, &weights) {
            (Some(u), Some(w)) => {
                let u = teacher(z.clone(), tt, u.clone(), batch.cond.clone()).detach();
                guide_per_sample(c, u, w.clone())
            }
            _ => c,
        };
        Prediction::from_output(pt, o, z, a, s)
    };
    // Samples without a midpoint take the teacher's one step: their "mid" is their end, and the second step,
    // from a noise level to itself, returns its start (z = α·x̂ + σ·ε̂ holds for every prediction).
    let mid: Vec<i64> = steps.iter().map(|s| s.mid.unwrap_or(s.end)).collect();
    let end: Vec<i64> = steps.iter().map(|s| s.end).collect();
    let (a_m, s_m) = schedule.alpha_sigma::<B>(&mid, &dev);
    let (a_e, s_e) = schedule.alpha_sigma::<B>(&end, &dev);
    let z_mid = teach(z_t.clone(), &t).renoise(a_m, s_m);
    let z_end = teach(z_mid, &mid).renoise(a_e.clone(), s_e.clone());
    let target = progressive_target(z_t.clone(), z_end, (a_t.clone(), s_t.clone()), (a_e, s_e));
    let out = online.forward(
        z_t.clone(),
        timesteps_tensor::<B>(&t, &dev),
        batch.text,
        batch.cond,
    );
    let student = Prediction::from_output(pt, out, z_t, a_t.clone(), s_t.clone());
    let guidance = (student.x0.clone().detach() - batch.x)
        .powi_scalar(2)
        .mean();
    let loss = progressive_loss(&student, target, a_t, s_t);
    StepOutput::new(loss.clone(), vec![loss.detach(), guidance], n)
}

/// (name, higher is better) of [`StepOutput::terms`].
pub const TERMS: [(&str, bool); 2] = [("consistency", false), ("guidance", false)];

impl<B: Backend> Distillation<B> {
    /// The distiller around a backbone and its adapter. PE-CoDi freezes the backbone (the EMA target shares
    /// it); CoDi trains it and keeps an EMA copy. The EMA adapter starts as a copy of the adapter; so does the
    /// frozen initial model when the loss takes its PF-ODE step with it.
    pub fn new(
        unet: UNet2DConditionModel<B>,
        adapter: ControlNetModel<B>,
        mode: DistillMode,
        teacher: Option<UNet2DConditionModel<B>>,
        vae: Option<AutoencoderKL<B>>,
        schedule: NoiseSchedule,
        settings: StepSettings,
    ) -> Self {
        let initial = (settings.loss.step_model == OdeStepModel::Initial).then(|| CodiNet {
            unet: copy_with_fresh_ids(&unet).no_grad(),
            adapter: copy_with_fresh_ids(&adapter).no_grad(),
        });
        let (online_unet, ema_unet) = match mode {
            DistillMode::PeCodi => (unet.no_grad(), None),
            DistillMode::Codi => {
                let ema = copy_with_fresh_ids(&unet).no_grad();
                (unet, Some(ema))
            }
        };
        Self {
            ema_adapter: copy_with_fresh_ids(&adapter).no_grad(),
            online: CodiNet {
                unet: online_unet,
                adapter,
            },
            ema_unet,
            teacher,
            initial,
            vae,
            schedule,
            settings,
        }
    }

    fn guidance_map(&self) -> Box<dyn Fn(Tensor<B, 4>) -> Tensor<B, 4> + '_> {
        match (self.settings.loss.guidance, &self.vae) {
            (GuidanceDistance::Latent, _) | (_, None) => Box::new(|v| v),
            (GuidanceDistance::Decoded, Some(vae)) => {
                Box::new(move |z: Tensor<B, 4>| vae.decode(z.div_scalar(vae.scaling_factor)))
            }
            (GuidanceDistance::Reencoded, Some(vae)) => Box::new(move |z: Tensor<B, 4>| {
                vae.encode(vae.decode(z.div_scalar(vae.scaling_factor)))
                    .mode()
                    .mul_scalar(vae.scaling_factor)
            }),
        }
    }

    /// The EMA target network on this backend.
    pub fn target_net(&self) -> CodiNet<B> {
        CodiNet {
            unet: self
                .ema_unet
                .clone()
                .unwrap_or_else(|| self.online.unet.clone()),
            adapter: self.ema_adapter.clone(),
        }
    }
}

impl<B: AutodiffBackend> TrainStep for Distillation<B> {
    type Input = DistillBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: DistillBatch<B>) -> TrainOutput<StepOutput<B>> {
        // Frozen networks run on the inner backend: no graph is recorded for them.
        let target = self.target_net().valid();
        let teacher = self.teacher.as_ref().map(|u| u.valid());
        let target_fn =
            |z: Tensor<B, 4>, t: Tensor<B, 1>, text: Tensor<B, 3>, cond: Tensor<B, 4>| {
                Tensor::from_inner(target.forward(z.inner(), t.inner(), text.inner(), cond.inner()))
            };
        let teacher_fn = teacher.as_ref().map(|u| {
            move |z: Tensor<B, 4>, t: Tensor<B, 1>, text: Tensor<B, 3>, _cond: Tensor<B, 4>| {
                Tensor::from_inner(u.forward(z.inner(), t.inner(), text.inner()))
            }
        });
        let initial = self.initial.as_ref().map(|n| n.valid());
        let initial_fn = initial.as_ref().map(|n| {
            move |z: Tensor<B, 4>, t: Tensor<B, 1>, text: Tensor<B, 3>, cond: Tensor<B, 4>| {
                Tensor::from_inner(n.forward(z.inner(), t.inner(), text.inner(), cond.inner()))
            }
        });
        let step_net: Option<NetFn<'_, B>> = match self.settings.loss.step_model {
            OdeStepModel::Online => None,
            OdeStepModel::Ema => Some(&target_fn),
            OdeStepModel::Teacher => teacher_fn.as_ref().map(|f| f as &dyn Fn(_, _, _, _) -> _),
            OdeStepModel::Initial => initial_fn.as_ref().map(|f| f as &dyn Fn(_, _, _, _) -> _),
        };
        let map = self.guidance_map();
        let out = losses(
            &self.settings,
            &self.schedule,
            &self.online,
            batch,
            &target_fn,
            step_net,
            map.as_ref(),
        );
        let grads = out.loss.backward();
        TrainOutput::new(self, grads, out)
    }

    fn optimize<BB, O>(self, optim: &mut O, lr: f64, grads: GradientsParams) -> Self
    where
        BB: AutodiffBackend,
        O: Optimizer<Self, BB>,
        Self: AutodiffModule<BB>,
    {
        let decay = self.settings.ema_decay;
        let clip = self.settings.grad_clip;
        // The norm is taken even without clipping: a non-finite gradient must stop the run, not reach the
        // parameters.
        let max_norm = if clip > 0.0 { clip } else { f64::INFINITY };
        let grads = match &self.settings.replica {
            Some(replica) => match replica.mean_gradients::<BB, _>(&self, grads) {
                Ok(mean) => mean,
                Err(e) => {
                    let rank = replica.rank;
                    self.settings.divergence.report_failure(format!(
                        "replica {rank} could not average its gradients with the other replicas ({e}): a \
                         replica or node has stopped or cannot be reached"
                    ));
                    return self;
                }
            },
            None => grads,
        };
        let (grads, norm) = clip_global_norm::<BB, _>(&self, grads, max_norm);
        if !norm.is_finite() {
            self.settings.divergence.report_gradient(format!(
                "gradient norm {norm:.4e} (the parameters were not updated)"
            ));
            return self;
        }
        let mut m = optim.step(lr, self, grads);
        m.ema_adapter = ema_update(m.ema_adapter, &m.online.adapter, decay);
        if let Some(e) = m.ema_unet.take() {
            m.ema_unet = Some(ema_update(e, &m.online.unet, decay));
        }
        m
    }
}

impl<B: Backend> InferenceStep for Distillation<B> {
    type Input = DistillBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: DistillBatch<B>) -> StepOutput<B> {
        let target = self.target_net();
        let target_fn = |z, t, text, cond| target.forward(z, t, text, cond);
        // A progressive round is scored against its teacher; the other objectives' validation loss takes the
        // PF-ODE step with the online model.
        let initial_fn = self.initial.as_ref().map(|n| {
            move |z: Tensor<B, 4>, t: Tensor<B, 1>, text: Tensor<B, 3>, cond: Tensor<B, 4>| {
                n.forward(z, t, text, cond)
            }
        });
        let step_net: Option<NetFn<'_, B>> = match self.settings.loss.objective {
            Objective::Progressive => initial_fn.as_ref().map(|f| f as &dyn Fn(_, _, _, _) -> _),
            _ => None,
        };
        let map = self.guidance_map();
        losses(
            &self.settings,
            &self.schedule,
            &self.online,
            batch,
            &target_fn,
            step_net,
            map.as_ref(),
        )
    }
}

/// Σ‖g‖² over every parameter's gradient, summed on the device (one read back per step, not one per parameter).
struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let sq = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + sq,
                None => sq,
            });
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Scales all gradients so their global ℓ2 norm is at most `max_norm`. → (gradients, norm before clipping)
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    mut grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let mut sq = SquaredNorm::<B> {
        grads: &grads,
        total: None,
    };
    module.visit(&mut sq);
    let norm = sq
        .total
        .map_or(0.0, |t| codi_core::tensor_ops::to_vec(t)[0] as f64)
        .sqrt();
    if norm > max_norm {
        let mut scale = Scale::<B> {
            grads: &mut grads,
            factor: max_norm / (norm + 1e-6),
            _b: Default::default(),
        };
        module.visit(&mut scale);
    }
    (grads, norm)
}
