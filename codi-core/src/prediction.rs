//! ε, v and x parameterisations and the ONE set of conversions between them (valid because α² + σ² = 1):
//! v = α ε − σ x;  x̂ = α z − σ v̂;  ε̂ = α v̂ + σ z;  x̂ = (z − σ ε̂)/α;  ε̂ = (z − α x̂)/σ.
//! Every loss and sampler goes through [`Prediction`].

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

use crate::error::CoreError;
use crate::tensor_ops::per_sample;

/// What the network outputs (diffusers' `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PredictionType {
    /// The noise ε (SD 1.x).
    #[default]
    #[serde(rename = "epsilon")]
    Epsilon,
    /// v = α ε − σ x (SD 2.x).
    #[serde(rename = "v_prediction")]
    VPrediction,
    /// The clean sample x.
    #[serde(rename = "sample")]
    Sample,
}

impl FromStr for PredictionType {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "epsilon" | "eps" => Ok(Self::Epsilon),
            "v_prediction" | "v" => Ok(Self::VPrediction),
            "sample" | "x" => Ok(Self::Sample),
            _ => Err(CoreError::UnknownName {
                what: "prediction type",
                value: s.to_string(),
                expected: "epsilon, v_prediction, sample",
            }),
        }
    }
}

/// A model output read as both a clean estimate x̂ and a noise estimate ε̂ at (z, α, σ).
/// Always z = α x̂ + σ ε̂ (up to rounding).
#[derive(Debug, Clone)]
pub struct Prediction<B: Backend, const D: usize> {
    /// x̂: [batch, …]
    pub x0: Tensor<B, D>,
    /// ε̂: [batch, …]
    pub eps: Tensor<B, D>,
}

impl<B: Backend, const D: usize> Prediction<B, D> {
    /// Reads a model output. output, z: [batch, …]; alpha, sigma: \[batch\] (one value per sample).
    pub fn from_output(
        kind: PredictionType,
        output: Tensor<B, D>,
        z: Tensor<B, D>,
        alpha: Tensor<B, 1>,
        sigma: Tensor<B, 1>,
    ) -> Self {
        let a = per_sample::<B, D>(alpha);
        let s = per_sample::<B, D>(sigma);
        match kind {
            PredictionType::Epsilon => {
                let x0 = (z - output.clone() * s) / a;
                Self { x0, eps: output }
            }
            PredictionType::Sample => {
                let eps = (z - output.clone() * a) / s;
                Self { x0: output, eps }
            }
            PredictionType::VPrediction => {
                let x0 = z.clone() * a.clone() - output.clone() * s.clone();
                let eps = output * a + z * s;
                Self { x0, eps }
            }
        }
    }

    /// The same conversion with one α, σ for the whole batch (samplers).
    pub fn from_output_scalar(
        kind: PredictionType,
        output: Tensor<B, D>,
        z: Tensor<B, D>,
        alpha: f64,
        sigma: f64,
    ) -> Self {
        match kind {
            PredictionType::Epsilon => {
                let x0 = (z - output.clone().mul_scalar(sigma)).div_scalar(alpha);
                Self { x0, eps: output }
            }
            PredictionType::Sample => {
                let eps = (z - output.clone().mul_scalar(alpha)).div_scalar(sigma);
                Self { x0: output, eps }
            }
            PredictionType::VPrediction => {
                let x0 = z.clone().mul_scalar(alpha) - output.clone().mul_scalar(sigma);
                let eps = output.mul_scalar(alpha) + z.mul_scalar(sigma);
                Self { x0, eps }
            }
        }
    }

    /// v̂ = α ε̂ − σ x̂. alpha, sigma: \[batch\].
    pub fn v(&self, alpha: Tensor<B, 1>, sigma: Tensor<B, 1>) -> Tensor<B, D> {
        self.eps.clone() * per_sample::<B, D>(alpha) - self.x0.clone() * per_sample::<B, D>(sigma)
    }

    /// The model output that would produce this prediction (the inverse of [`Self::from_output`]).
    pub fn to_output(
        &self,
        kind: PredictionType,
        alpha: Tensor<B, 1>,
        sigma: Tensor<B, 1>,
    ) -> Tensor<B, D> {
        match kind {
            PredictionType::Epsilon => self.eps.clone(),
            PredictionType::Sample => self.x0.clone(),
            PredictionType::VPrediction => self.v(alpha, sigma),
        }
    }

    /// z = α x̂ + σ ε̂: the point this prediction describes at another noise level (the DDIM / PF-ODE step
    /// when α, σ are those of the next timestep). alpha, sigma: \[batch\].
    pub fn renoise(&self, alpha: Tensor<B, 1>, sigma: Tensor<B, 1>) -> Tensor<B, D> {
        self.x0.clone() * per_sample::<B, D>(alpha) + self.eps.clone() * per_sample::<B, D>(sigma)
    }

    /// Drops the autodiff graph (stop-gradient, `sg(·)` in the paper).
    pub fn detach(self) -> Self {
        Self {
            x0: self.x0.detach(),
            eps: self.eps.detach(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::{NoiseSource, SeededNoise};
    use crate::tensor_ops::max_abs_diff;
    use crate::NoiseScheduleConfig;
    use burn::backend::Flex;

    type B = Flex;
    const KINDS: [PredictionType; 3] = [
        PredictionType::Epsilon,
        PredictionType::VPrediction,
        PredictionType::Sample,
    ];

    /// Random (z, output, α, σ) with one timestep per sample drawn over the whole schedule.
    fn random_case(seed: u64) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>) {
        let device = Default::default();
        let schedule = NoiseScheduleConfig::sd15().init().unwrap();
        let mut noise = SeededNoise::new(seed);
        let z = noise.sample::<B, 4>([5, 3, 4, 6], &device);
        let out = noise.sample::<B, 4>([5, 3, 4, 6], &device).mul_scalar(1.7);
        // Timesteps spread over [0, 999] but away from t where α or σ are tiny, where division amplifies rounding.
        let ts: Vec<i64> = (0..5)
            .map(|i| 20 + ((seed as i64 * 37 + i * 211) % 960))
            .collect();
        let (a, s) = schedule.alpha_sigma::<B>(&ts, &device);
        (z, out, a, s)
    }

    #[test]
    fn z_is_alpha_x_plus_sigma_eps_for_every_prediction_type() {
        for seed in 0..20 {
            let (z, out, a, s) = random_case(seed);
            for kind in KINDS {
                let p = Prediction::from_output(kind, out.clone(), z.clone(), a.clone(), s.clone());
                let back = p.renoise(a.clone(), s.clone());
                let err = max_abs_diff(back, z.clone());
                assert!(err < 2e-4, "{kind:?} seed {seed}: z ≠ αx̂ + σε̂ ({err})");
            }
        }
    }

    #[test]
    fn conversions_round_trip() {
        for seed in 0..20 {
            let (z, out, a, s) = random_case(seed);
            for from in KINDS {
                let p = Prediction::from_output(from, out.clone(), z.clone(), a.clone(), s.clone());
                // output → prediction → output is the identity.
                let again = p.to_output(from, a.clone(), s.clone());
                assert!(
                    max_abs_diff(again, out.clone()) < 2e-4,
                    "{from:?} seed {seed}"
                );
                // Through every other parameterisation and back to the same (x̂, ε̂).
                for to in KINDS {
                    let o = p.to_output(to, a.clone(), s.clone());
                    let q = Prediction::from_output(to, o, z.clone(), a.clone(), s.clone());
                    assert!(
                        max_abs_diff(q.x0, p.x0.clone()) < 5e-4,
                        "{from:?}→{to:?} x̂, seed {seed}"
                    );
                    assert!(
                        max_abs_diff(q.eps, p.eps.clone()) < 5e-4,
                        "{from:?}→{to:?} ε̂, seed {seed}"
                    );
                }
            }
        }
    }

    #[test]
    fn v_matches_its_definition() {
        let (z, out, a, s) = random_case(3);
        let p = Prediction::from_output(
            PredictionType::VPrediction,
            out.clone(),
            z,
            a.clone(),
            s.clone(),
        );
        assert!(max_abs_diff(p.v(a, s), out) < 1e-4);
    }

    #[test]
    fn scalar_and_per_sample_forms_agree() {
        let device = Default::default();
        let mut noise = SeededNoise::new(9);
        let z = noise.sample::<B, 4>([2, 1, 3, 3], &device);
        let out = noise.sample::<B, 4>([2, 1, 3, 3], &device);
        let (alpha, sigma) = (0.6f64, 0.8f64);
        let a = Tensor::<B, 1>::from_floats([alpha as f32; 2], &device);
        let s = Tensor::<B, 1>::from_floats([sigma as f32; 2], &device);
        for kind in KINDS {
            let p = Prediction::from_output(kind, out.clone(), z.clone(), a.clone(), s.clone());
            let q = Prediction::from_output_scalar(kind, out.clone(), z.clone(), alpha, sigma);
            assert!(max_abs_diff(p.x0, q.x0) < 1e-6);
            assert!(max_abs_diff(p.eps, q.eps) < 1e-6);
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!("v_prediction".parse(), Ok(PredictionType::VPrediction));
        assert!("noise".parse::<PredictionType>().is_err());
    }
}
