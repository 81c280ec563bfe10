use std::cell::RefCell;

use burn::backend::Flex;
use burn::tensor::Tensor;

use super::*;
use crate::noise::SeededNoise;
use crate::schedule::NoiseScheduleConfig;
use crate::tensor_ops::{max_abs_diff, to_vec};

type B = Flex;

/// The exact ε-predictor for data x ~ N(0, s²I): E[ε | z_t] = σ z / (α² s² + σ²). Along its PF-ODE
/// z_t / √(α_t² s² + σ_t²) is constant, which gives every sampler an exact answer to converge to.
fn gaussian_denoiser(schedule: NoiseSchedule, s: f64) -> impl Denoiser<B> {
    FnDenoiser {
        prediction_type: PredictionType::Epsilon,
        f: move |z: Tensor<B, 4>, t: Tensor<B, 1>| {
            let t = to_vec(t)[0].round() as i64;
            let (a, sg) = (schedule.alpha(t), schedule.sigma(t));
            z.mul_scalar(sg / (a * a * s * s + sg * sg))
        },
    }
}

fn radius(schedule: &NoiseSchedule, t: i64, s: f64) -> f64 {
    let (a, sg) = (schedule.alpha(t), schedule.sigma(t));
    (a * a * s * s + sg * sg).sqrt()
}

/// Runs a sampler on the Gaussian model from the exact z_{t0}; returns max |sample − expected|.
fn gaussian_error(sampler: Sampler, s: f64) -> f64 {
    let schedule = NoiseScheduleConfig::sd15().init().unwrap();
    let device = Default::default();
    let u = SeededNoise::new(1).sample::<B, 4>([2, 4, 3, 5], &device);
    let plan = sampler.plan(&schedule).unwrap();
    let t0 = plan[0].t;
    let z = u.clone().mul_scalar(radius(&schedule, t0, s));
    let den = gaussian_denoiser(schedule.clone(), s);
    let out = sampler
        .sample(&schedule, &den, z, &mut SeededNoise::new(2), |_, _| {})
        .unwrap();
    // Both samplers end with one update from the last grid point; on the exact trajectory that point is
    // z* = r(t_last)·u, where the model's x̂ = α s² z*/(α² s² + σ²) and ε̂ = σ z*/(α² s² + σ²).
    let last = plan.last().unwrap();
    let (a, sg) = (last.alpha, last.sigma);
    let z_star = radius(&schedule, last.t, s);
    let x_hat = a * s * s * z_star / (a * a * s * s + sg * sg);
    let eps_hat = sg * z_star / (a * a * s * s + sg * sg);
    let expected = match sampler.kind {
        // DDIM moves to the final ᾱ: α_f x̂ + σ_f ε̂.
        SamplerKind::Ddim { .. } => {
            u.mul_scalar(last.alpha_next * x_hat + last.sigma_next * eps_hat)
        }
        // DPM-Solver++ lands on x̂ (final σ = 0).
        _ => u.mul_scalar(x_hat),
    };
    max_abs_diff(out, expected) as f64
}

fn ddim_exact(steps: usize) -> Sampler {
    Sampler::new(
        SamplerKind::Ddim {
            eta: 0.0,
            spacing: TimestepSpacing::Trailing,
            steps_offset: 1,
            set_alpha_to_one: true,
        },
        steps,
    )
}

#[test]
fn ddim_and_dpm_solve_the_gaussian_pf_ode() {
    let s = 0.5;
    let ddim_10 = gaussian_error(ddim_exact(10), s);
    let ddim_200 = gaussian_error(ddim_exact(200), s);
    let ddim_1000 = gaussian_error(ddim_exact(1000), s);
    let dpm_10 = gaussian_error(Sampler::new(SamplerKind::DpmSolverPP2M, 10), s);
    let dpm_50 = gaussian_error(Sampler::new(SamplerKind::DpmSolverPP2M, 50), s);
    eprintln!(
        "DDIM 10/200/1000: {ddim_10} {ddim_200} {ddim_1000}; DPM-Solver++ 10/50: {dpm_10} {dpm_50}"
    );
    // DDIM is first order: the error falls about as 1/K.
    assert!(
        ddim_1000 < ddim_200 / 3.0 && ddim_200 < ddim_10 / 3.0,
        "DDIM does not converge"
    );
    assert!(ddim_1000 < 6e-3, "DDIM 1000 steps error {ddim_1000}");
    // Second order: 10 steps are ~10× closer than DDIM's 10, and 50 steps beat DDIM's 200.
    assert!(
        dpm_10 < ddim_10 / 5.0,
        "DPM-Solver++ {dpm_10} vs DDIM {ddim_10} at 10 steps"
    );
    assert!(
        dpm_50 < ddim_200 / 2.0,
        "DPM-Solver++ 50 steps {dpm_50} vs DDIM 200 steps {ddim_200}"
    );
    assert!(dpm_50 < 1e-2);
}

#[test]
fn codi_sampler_visits_its_grid_and_follows_its_recurrence() {
    let schedule = NoiseScheduleConfig::sd15().init().unwrap();
    let device = Default::default();
    let seen = RefCell::new(Vec::new());
    // A model whose x̂ is 0.3 z, so ε̂ = (z − 0.3 α z)/σ: everything is a scalar multiple of z.
    let den = FnDenoiser {
        prediction_type: PredictionType::Sample,
        f: |z: Tensor<B, 4>, t: Tensor<B, 1>| {
            seen.borrow_mut().push(to_vec(t)[0] as i64);
            z.mul_scalar(0.3)
        },
    };
    let sampler = Sampler::new(SamplerKind::codi(), 4);
    let z = Tensor::<B, 4>::ones([1, 1, 1, 1], &device);
    let out = sampler
        .sample(&schedule, &den, z, &mut SeededNoise::new(0), |_, _| {})
        .unwrap();
    assert_eq!(*seen.borrow(), vec![980, 720, 460, 200]);
    // The same recurrence on scalars.
    let b = BoundaryScalings::default();
    let ts = [980i64, 720, 460, 200];
    let mut z = 1.0f64;
    let mut x = 0.0;
    for (i, &t) in ts.iter().enumerate() {
        let (a, sg) = (schedule.alpha(t), schedule.sigma(t));
        let xh = 0.3 * z;
        let eh = (z - a * xh) / sg;
        let (cs, co) = b.at(t as f64);
        x = cs * z + co * xh;
        if let Some(&tn) = ts.get(i + 1) {
            z = schedule.alpha(tn) * x + schedule.sigma(tn) * eh;
        }
    }
    assert!((to_vec(out)[0] as f64 - x).abs() < 1e-6);
}

#[test]
fn one_step_samplers_return_the_boundary_scaled_estimate() {
    let schedule = NoiseScheduleConfig::sd15().init().unwrap();
    let device = Default::default();
    let z = SeededNoise::new(5).sample::<B, 4>([1, 2, 2, 2], &device);
    let den = FnDenoiser {
        prediction_type: PredictionType::Sample,
        f: |z: Tensor<B, 4>, _t: Tensor<B, 1>| z.mul_scalar(0.5).add_scalar(0.1),
    };
    for (kind, t) in [(SamplerKind::codi(), 980), (SamplerKind::lcm(), 999)] {
        let out = Sampler::new(kind, 1)
            .sample(
                &schedule,
                &den,
                z.clone(),
                &mut SeededNoise::new(0),
                |_, _| {},
            )
            .unwrap();
        let (cs, co) = BoundaryScalings::default().at(t as f64);
        let expected =
            z.clone().mul_scalar(cs) + z.clone().mul_scalar(0.5).add_scalar(0.1).mul_scalar(co);
        assert!(max_abs_diff(out, expected) < 1e-6, "{}", kind.name());
    }
}

#[test]
fn ddim_eta_adds_the_given_noise_and_seeds_reproduce() {
    let schedule = NoiseScheduleConfig::sd15().init().unwrap();
    let device = Default::default();
    let den = gaussian_denoiser(schedule.clone(), 1.0);
    let z = SeededNoise::new(3).sample::<B, 4>([1, 4, 4, 4], &device);
    let mut kind = SamplerKind::ddim();
    if let SamplerKind::Ddim { eta, .. } = &mut kind {
        *eta = 1.0;
    }
    let run = |seed| {
        Sampler::new(kind, 5)
            .sample(
                &schedule,
                &den,
                z.clone(),
                &mut SeededNoise::new(seed),
                |_, _| {},
            )
            .unwrap()
    };
    assert_eq!(to_vec(run(4)), to_vec(run(4)));
    assert!(max_abs_diff(run(4), run(5)) > 1e-3);
}

#[test]
fn guidance_is_linear_in_the_outputs() {
    let device = Default::default();
    let c = FnDenoiser {
        prediction_type: PredictionType::Epsilon,
        f: |z: Tensor<B, 4>, _t: Tensor<B, 1>| z.ones_like(),
    };
    let u = FnDenoiser {
        prediction_type: PredictionType::Epsilon,
        f: |z: Tensor<B, 4>, _t: Tensor<B, 1>| z.zeros_like(),
    };
    let g = Guided {
        cond: c,
        uncond: u,
        scale: 3.0,
    };
    let z = Tensor::<B, 4>::zeros([1, 1, 2, 2], &device);
    let t = Tensor::<B, 1>::zeros([1], &device);
    assert_eq!(to_vec(g.predict(z, t)), vec![3.0; 4]);
}

#[test]
fn progress_counts_every_step_and_bad_settings_are_errors() {
    let schedule = NoiseScheduleConfig::sd15().init().unwrap();
    let device = Default::default();
    let den = gaussian_denoiser(schedule.clone(), 1.0);
    let z = Tensor::<B, 4>::zeros([1, 1, 1, 1], &device);
    let mut calls = vec![];
    Sampler::new(SamplerKind::DpmSolverPP2M, 7)
        .sample(
            &schedule,
            &den,
            z.clone(),
            &mut SeededNoise::new(0),
            |i, n| calls.push((i, n)),
        )
        .unwrap();
    assert_eq!(calls, (1..=7).map(|i| (i, 7)).collect::<Vec<_>>());
    assert!(Sampler::new(SamplerKind::codi(), 0)
        .sample(&schedule, &den, z, &mut SeededNoise::new(0), |_, _| {})
        .is_err());
    assert!(SamplerKind::from_name("euler").is_err());
}
