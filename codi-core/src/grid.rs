//! Timestep grids of the samplers, as integers on the training grid `0..num_train_timesteps`.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

use crate::error::{invalid, CoreError};

/// diffusers' `timestep_spacing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// `arange(K)·(N div K) + steps_offset`, reversed (SD 1.x default).
    #[default]
    Leading,
    /// `round(arange(N, 0, −N/K)) − 1`: always starts at the last timestep.
    Trailing,
    /// `round(linspace(0, N − 1, K))`, reversed.
    Linspace,
}

impl FromStr for TimestepSpacing {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "leading" => Ok(Self::Leading),
            "trailing" => Ok(Self::Trailing),
            "linspace" => Ok(Self::Linspace),
            _ => Err(CoreError::UnknownName {
                what: "timestep spacing",
                value: s.to_string(),
                expected: "leading, trailing, linspace",
            }),
        }
    }
}

fn check_steps(num_train: usize, steps: usize) -> Result<(), CoreError> {
    if steps == 0 || steps > num_train {
        return Err(invalid(
            "number of sampling steps",
            format!("{steps} (must be between 1 and {num_train})"),
        ));
    }
    Ok(())
}

/// numpy's `linspace(start, stop, n)` (endpoint included) rounded half to even, as `np.round` does.
fn linspace_round(start: f64, stop: f64, n: usize) -> Vec<i64> {
    if n == 1 {
        return vec![start.round_ties_even() as i64];
    }
    let step = (stop - start) / (n - 1) as f64;
    (0..n)
        .map(|i| {
            let v = if i == n - 1 {
                stop
            } else {
                start + step * i as f64
            };
            v.round_ties_even() as i64
        })
        .collect()
}

/// DDIM's timesteps, highest first (diffusers `DDIMScheduler.set_timesteps`).
pub fn ddim_timesteps(
    num_train: usize,
    steps: usize,
    spacing: TimestepSpacing,
    steps_offset: usize,
) -> Result<Vec<i64>, CoreError> {
    check_steps(num_train, steps)?;
    let n = num_train as i64;
    let k = steps as i64;
    let mut ts: Vec<i64> = match spacing {
        TimestepSpacing::Leading => (0..k).map(|i| i * (n / k) + steps_offset as i64).collect(),
        TimestepSpacing::Linspace => linspace_round(0.0, (n - 1) as f64, steps),
        TimestepSpacing::Trailing => {
            let ratio = n as f64 / k as f64;
            let mut v: Vec<i64> = (0..k)
                .map(|i| (n as f64 - i as f64 * ratio).round_ties_even() as i64 - 1)
                .collect();
            v.reverse();
            v
        }
    };
    ts.reverse();
    Ok(ts)
}

/// DDIM's previous timestep: t − N div K (may be negative: then ᾱ_prev is the final ᾱ).
pub fn ddim_prev_timestep(t: i64, num_train: usize, steps: usize) -> i64 {
    t - (num_train / steps) as i64
}

/// DPM-Solver++'s timesteps, highest first (diffusers' `linspace` spacing for multistep solvers).
pub fn dpm_timesteps(num_train: usize, steps: usize) -> Result<Vec<i64>, CoreError> {
    check_steps(num_train, steps)?;
    let mut ts = linspace_round(0.0, (num_train - 1) as f64, steps + 1);
    ts.reverse();
    ts.pop();
    Ok(ts)
}

/// LCM's timesteps (diffusers `LCMScheduler.set_timesteps`, strength 1): the skipping-step grid of
/// `original_steps` points `{k·c − 1}`, sampled at `floor(linspace(0, original_steps, K, endpoint=False))`.
pub fn lcm_timesteps(
    num_train: usize,
    original_steps: usize,
    steps: usize,
) -> Result<Vec<i64>, CoreError> {
    check_steps(original_steps, steps)?;
    if original_steps == 0 || original_steps > num_train {
        return Err(invalid(
            "original_inference_steps",
            format!("{original_steps} (must be between 1 and {num_train})"),
        ));
    }
    let c = (num_train / original_steps) as i64;
    let origin: Vec<i64> = (1..=original_steps as i64)
        .rev()
        .map(|i| i * c - 1)
        .collect();
    Ok((0..steps)
        .map(|i| origin[(i as f64 * original_steps as f64 / steps as f64).floor() as usize])
        .collect())
}

/// The CoDi grid (method.md §5): {0, Δt, 2Δt, …} with Δt = N_train / N, reversed, strided by ⌈N/K⌉.
/// N = 50: K=1 \[980\]; K=2 [980, 480]; K=4 [980, 720, 460, 200].
pub fn codi_timesteps(
    num_train: usize,
    intervals: usize,
    steps: usize,
) -> Result<Vec<i64>, CoreError> {
    if intervals == 0 || intervals > num_train {
        return Err(invalid(
            "number of intervals N",
            format!("{intervals} (must be between 1 and {num_train})"),
        ));
    }
    check_steps(intervals, steps)?;
    let dt = (num_train / intervals) as i64;
    let stride = intervals.div_ceil(steps);
    Ok((0..intervals as i64)
        .rev()
        .map(|i| i * dt)
        .step_by(stride)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codi_grid_matches_method() {
        assert_eq!(codi_timesteps(1000, 50, 1).unwrap(), vec![980]);
        assert_eq!(codi_timesteps(1000, 50, 2).unwrap(), vec![980, 480]);
        assert_eq!(
            codi_timesteps(1000, 50, 4).unwrap(),
            vec![980, 720, 460, 200]
        );
        assert_eq!(
            codi_timesteps(1000, 50, 8).unwrap(),
            vec![980, 840, 700, 560, 420, 280, 140, 0]
        );
        for k in 1..=50 {
            assert!(codi_timesteps(1000, 50, k).unwrap().len() <= k);
        }
        assert!(codi_timesteps(1000, 50, 0).is_err());
        assert!(codi_timesteps(1000, 50, 51).is_err());
    }

    #[test]
    fn ddim_spacings() {
        assert_eq!(
            ddim_timesteps(1000, 4, TimestepSpacing::Leading, 1).unwrap(),
            vec![751, 501, 251, 1]
        );
        assert_eq!(
            ddim_timesteps(1000, 4, TimestepSpacing::Trailing, 1).unwrap(),
            vec![999, 749, 499, 249]
        );
        assert_eq!(
            ddim_timesteps(1000, 4, TimestepSpacing::Linspace, 1).unwrap(),
            vec![999, 666, 333, 0]
        );
        assert_eq!(
            ddim_timesteps(1000, 1, TimestepSpacing::Linspace, 0).unwrap(),
            vec![0]
        );
    }

    #[test]
    fn dpm_grid() {
        // diffusers: linspace(0, 999, 5).round()[::-1][:-1]; 499.5 rounds half to even.
        assert_eq!(dpm_timesteps(1000, 4).unwrap(), vec![999, 749, 500, 250]);
        assert_eq!(dpm_timesteps(1000, 1).unwrap(), vec![999]);
    }

    #[test]
    fn lcm_grid() {
        assert_eq!(
            lcm_timesteps(1000, 50, 4).unwrap(),
            vec![999, 759, 499, 259]
        );
        assert_eq!(lcm_timesteps(1000, 50, 1).unwrap(), vec![999]);
    }
}
