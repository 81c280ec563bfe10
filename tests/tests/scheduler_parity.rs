//! codi-core's schedules and samplers against diffusers' DDIMScheduler and LCMScheduler
//! (fixtures/diffusers-small/schedulers, made with diffusers 0.42.1).

use burn::backend::Flex;
use burn::tensor::TensorData;
use codi_core::sampler::{ddim_step, lcm_step, Sampler, SamplerKind};
use codi_core::tensor_ops::max_abs_diff;
use codi_core::{
    BoundaryScalings, ExplicitNoise, NoiseScheduleConfig, PredictionType, SeededNoise,
    TimestepSpacing,
};
use codi_tests::{fixture, read_safetensors, tensor};
use serde_json::Value;

type B = Flex;

fn cases() -> Vec<Value> {
    let path = fixture("diffusers-small/schedulers/schedulers.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn sampler_for(case: &Value) -> (Sampler, PredictionType) {
    let cfg = &case["config"];
    let steps = case["num_inference_steps"].as_u64().unwrap() as usize;
    let pred: PredictionType = cfg["prediction_type"].as_str().unwrap().parse().unwrap();
    let kind = match case["scheduler"].as_str().unwrap() {
        "DDIMScheduler" => SamplerKind::Ddim {
            eta: 0.0,
            spacing: cfg["timestep_spacing"]
                .as_str()
                .unwrap()
                .parse::<TimestepSpacing>()
                .unwrap(),
            steps_offset: cfg["steps_offset"].as_u64().unwrap() as usize,
            set_alpha_to_one: cfg["set_alpha_to_one"].as_bool().unwrap(),
        },
        "LCMScheduler" => SamplerKind::Lcm {
            original_steps: cfg["original_inference_steps"].as_u64().unwrap() as usize,
            boundary: BoundaryScalings {
                timestep_scaling: cfg["timestep_scaling"].as_f64().unwrap(),
                ..Default::default()
            },
        },
        other => panic!("unknown scheduler {other}"),
    };
    (Sampler::new(kind, steps), pred)
}

#[test]
fn alphas_cumprod_match() {
    let t = read_safetensors(&fixture(
        "diffusers-small/schedulers/schedulers.safetensors",
    ));
    let s = NoiseScheduleConfig::sd15().init().unwrap();
    let (_, ab) = &t["alphas_cumprod"];
    let (_, betas) = &t["betas"];
    let worst_ab = ab
        .iter()
        .zip(s.alphas_cumprod())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let worst_b = betas
        .iter()
        .zip(s.betas())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // Computed the way PyTorch does (fused linspace, f64-accumulated cumprod): equal to the last bit.
    assert_eq!(worst_b, 0.0, "betas differ by {worst_b}");
    assert_eq!(worst_ab, 0.0, "alphas_cumprod differ by {worst_ab}");
}

#[test]
fn timesteps_and_alphas_match_every_case() {
    let s = NoiseScheduleConfig::sd15().init().unwrap();
    for case in cases() {
        let tag = case["tag"].as_str().unwrap();
        let (sampler, _) = sampler_for(&case);
        let plan = sampler.plan(&s).unwrap();
        let ts: Vec<i64> = plan.iter().map(|p| p.t).collect();
        let expected: Vec<i64> = case["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(ts, expected, "{tag}: timesteps");
        for (p, step) in plan.iter().zip(case["steps"].as_array().unwrap()) {
            let a = step["alpha_prod_t"].as_f64().unwrap();
            assert!(
                (p.alpha * p.alpha - a).abs() < 1e-6,
                "{tag} step {}: ᾱ_t",
                p.index
            );
            // diffusers' LCM keeps t on its last step (no noise is added there); codi returns x̂ instead.
            if step["noise_added"].as_bool() != Some(false) {
                let ap = step["alpha_prod_t_prev"].as_f64().unwrap();
                assert!(
                    (p.alpha_next * p.alpha_next - ap).abs() < 1e-6,
                    "{tag} step {}: ᾱ_prev",
                    p.index
                );
            }
            if let Some(c_skip) = step["c_skip"].as_f64() {
                let (cs, co) = BoundaryScalings::default().at(p.t as f64);
                assert!(
                    (cs - c_skip).abs() < 1e-12
                        && (co - step["c_out"].as_f64().unwrap()).abs() < 1e-12
                );
            }
        }
    }
}

#[test]
fn every_step_matches_given_the_stored_model_output() {
    let s = NoiseScheduleConfig::sd15().init().unwrap();
    let t = read_safetensors(&fixture(
        "diffusers-small/schedulers/schedulers.safetensors",
    ));
    let device = Default::default();
    let mut checked = 0;
    for case in cases() {
        let tag = case["tag"].as_str().unwrap();
        let (sampler, pred) = sampler_for(&case);
        let plan = sampler.plan(&s).unwrap();
        let get = |name: String| tensor::<B, 4>(&t, &format!("{tag}/{name}"), &device);
        for (i, step) in plan.iter().enumerate() {
            let z = get(format!("sample_in_{i}"));
            let out = get(format!("model_output_{i}"));
            let last = i + 1 == plan.len();
            let (x0, prev, x0_name) = match sampler.kind {
                SamplerKind::Ddim { .. } => {
                    let r = ddim_step(pred, out, z, step, 0.0, &mut SeededNoise::new(0));
                    (r.pred_original, r.prev_sample, "pred_original")
                }
                SamplerKind::Lcm { boundary, .. } => {
                    let noise = if last {
                        vec![]
                    } else {
                        let (shape, v) = &t[&format!("{tag}/noise_{i}")];
                        vec![TensorData::new(v.clone(), shape.clone())]
                    };
                    let (d, p) = lcm_step(
                        pred,
                        out,
                        z,
                        step,
                        &boundary,
                        last,
                        &mut ExplicitNoise::new(noise),
                    );
                    (d, p, "denoised")
                }
                _ => unreachable!(),
            };
            let e0 = max_abs_diff(x0, get(format!("{x0_name}_{i}")));
            let e1 = max_abs_diff(prev, get(format!("prev_sample_{i}")));
            assert!(e0 <= 1e-5, "{tag} step {i}: {x0_name} differs by {e0}");
            assert!(e1 <= 1e-5, "{tag} step {i}: prev_sample differs by {e1}");
            checked += 1;
        }
    }
    // 16 DDIM and 8 LCM cases of 1, 2, 4 and 8 steps.
    assert_eq!(checked, 6 * (1 + 2 + 4 + 8), "every step of every case");
}

#[test]
fn ddim_eta_one_matches_with_the_stored_noise() {
    let s = NoiseScheduleConfig::sd15().init().unwrap();
    let t = read_safetensors(&fixture(
        "diffusers-small/schedulers/schedulers.safetensors",
    ));
    let device = Default::default();
    let mut checked = 0;
    for case in cases().iter().filter(|c| c["scheduler"] == "DDIMScheduler") {
        let tag = case["tag"].as_str().unwrap();
        let (sampler, pred) = sampler_for(case);
        let step = sampler.plan(&s).unwrap()[0];
        let (shape, v) = &t[&format!("{tag}/eta1_variance_noise_0")];
        let mut noise = ExplicitNoise::new(vec![TensorData::new(v.clone(), shape.clone())]);
        let z = tensor::<B, 4>(&t, &format!("{tag}/sample_in_0"), &device);
        let out = tensor::<B, 4>(&t, &format!("{tag}/model_output_0"), &device);
        let r = ddim_step(pred, out, z, &step, 1.0, &mut noise);
        let e = max_abs_diff(
            r.prev_sample,
            tensor::<B, 4>(&t, &format!("{tag}/eta1_prev_sample_0"), &device),
        );
        assert!(e <= 1e-5, "{tag}: η = 1 prev_sample differs by {e}");
        let std = case["steps"][0]["eta1_std_dev_t"].as_f64().unwrap();
        let (ab, abp) = (step.alpha * step.alpha, step.alpha_next * step.alpha_next);
        let ours = ((1.0 - abp) / (1.0 - ab) * (1.0 - ab / abp)).sqrt();
        assert!(
            (ours - std).abs() < 1e-6,
            "{tag}: std_dev_t {ours} vs {std}"
        );
        checked += 1;
    }
    assert_eq!(checked, 16);
}
