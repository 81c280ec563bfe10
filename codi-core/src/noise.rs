//! Gaussian noise that is reproducible from a seed on every backend: drawn on the host with ChaCha8 and
//! Box–Muller (both stable across versions and platforms), then uploaded. Backend RNGs differ between
//! CPU and GPU and are global state, so samplers and training never use them for ε.

use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Where a sampler or a training step gets its Gaussian noise.
pub trait NoiseSource {
    /// A tensor of i.i.d. N(0, 1) values.
    fn sample<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        device: &B::Device,
    ) -> Tensor<B, D>;
}

/// N(0, 1) noise from a seed; the same seed gives the same values on any backend.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    rng: ChaCha8Rng,
}

impl SeededNoise {
    /// A generator seeded with `seed` (ChaCha8), at the start of its stream.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The generator's position, for checkpoints that resume exactly.
    pub fn word_pos(&self) -> u128 {
        self.rng.get_word_pos()
    }

    /// Restores a position saved by [`Self::word_pos`] for the same seed.
    pub fn set_word_pos(&mut self, pos: u128) {
        self.rng.set_word_pos(pos)
    }

    /// `n` standard normal values (Box–Muller; u1 is kept away from 0 so the log is finite).
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let u1: f64 = 1.0 - self.rng.random::<f64>();
            let u2: f64 = self.rng.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt();
            let th = std::f64::consts::TAU * u2;
            out.push((r * th.cos()) as f32);
            out.push((r * th.sin()) as f32);
        }
        out.truncate(n);
        out
    }

    /// Uniform floats in `[0, 1)`.
    pub fn uniform(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.rng.random::<f32>()).collect()
    }
}

impl NoiseSource for SeededNoise {
    fn sample<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        device: &B::Device,
    ) -> Tensor<B, D> {
        let n = shape.iter().product();
        Tensor::from_data(TensorData::new(self.normals(n), shape), device)
    }
}

/// Noise given in advance, in order (tests against reference implementations that stored their draws).
#[derive(Debug, Clone)]
pub struct ExplicitNoise {
    draws: std::collections::VecDeque<TensorData>,
}

impl ExplicitNoise {
    /// Noise that hands out `draws` in order, one per [`NoiseSource::sample`] call; each must have the
    /// requested shape, and running out panics.
    pub fn new(draws: Vec<TensorData>) -> Self {
        Self {
            draws: draws.into(),
        }
    }
}

impl NoiseSource for ExplicitNoise {
    fn sample<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        device: &B::Device,
    ) -> Tensor<B, D> {
        let data = self
            .draws
            .pop_front()
            .expect("ExplicitNoise ran out of draws: the test gave fewer than the sampler needs");
        assert_eq!(
            data.shape.as_slice(),
            shape.as_slice(),
            "ExplicitNoise draw has the wrong shape"
        );
        Tensor::from_data(data, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_noise_and_standard_moments() {
        let a = SeededNoise::new(7).normals(20_000);
        let b = SeededNoise::new(7).normals(20_000);
        assert_eq!(a, b);
        assert_ne!(a, SeededNoise::new(8).normals(20_000));
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "var {var}");
    }

    #[test]
    fn position_restores_the_stream() {
        let mut a = SeededNoise::new(3);
        a.normals(11);
        let pos = a.word_pos();
        let next = a.normals(5);
        let mut b = SeededNoise::new(3);
        b.set_word_pos(pos);
        assert_eq!(b.normals(5), next);
    }
}
