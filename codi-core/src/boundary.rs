//! Consistency-model boundary scalings: f(z_t) = c_skip(t)·z_t + c_out(t)·x̂, with c_skip(0) = 1, c_out(0) = 0.

use serde::{Deserialize, Serialize};

/// Which c_out the model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BoundaryForm {
    /// c_out = t_s / √(t_s² + σ_d²) (diffusers' LCMScheduler, the CoDi paper).
    #[default]
    Lcm,
    /// c_out = σ_d·t_s / √(t_s² + σ_d²) (the first CoDi code release, consistency models).
    SigmaDataScaled,
}

/// c_skip and c_out with t_s = timestep_scaling·t.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoundaryScalings {
    /// σ_data, the data standard deviation assumed by the scalings (0.5 by default).
    pub sigma_data: f64,
    /// Factor from the training timestep t to the boundary's t_s = timestep_scaling·t (10 by default, as
    /// LCM).
    pub timestep_scaling: f64,
    /// Which c_out formula is used.
    pub form: BoundaryForm,
}

impl Default for BoundaryScalings {
    /// σ_data = 0.5, timestep scaling 10, LCM form (method.md §2).
    fn default() -> Self {
        Self {
            sigma_data: 0.5,
            timestep_scaling: 10.0,
            form: BoundaryForm::Lcm,
        }
    }
}

impl BoundaryScalings {
    /// (c_skip, c_out) at training timestep t.
    pub fn at(&self, t: f64) -> (f64, f64) {
        let ts = self.timestep_scaling * t;
        let sd2 = self.sigma_data * self.sigma_data;
        let c_skip = sd2 / (ts * ts + sd2);
        let c_out = ts / (ts * ts + sd2).sqrt();
        match self.form {
            BoundaryForm::Lcm => (c_skip, c_out),
            BoundaryForm::SigmaDataScaled => (c_skip, self.sigma_data * c_out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_is_identity_at_zero_and_model_elsewhere() {
        for form in [BoundaryForm::Lcm, BoundaryForm::SigmaDataScaled] {
            let b = BoundaryScalings {
                form,
                ..Default::default()
            };
            assert_eq!(b.at(0.0), (1.0, 0.0));
            let (skip, _) = b.at(1.0);
            assert!(skip < 0.0025 + 1e-12, "c_skip(1) = {skip}");
        }
        let (skip, out) = BoundaryScalings::default().at(999.0);
        // diffusers' LCMScheduler at t = 999 (fixture values).
        assert!((skip - 2.5050075037374525e-09).abs() < 1e-20);
        assert!((out - 0.9999999987474963).abs() < 1e-15);
    }
}
