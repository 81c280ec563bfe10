//! GroupNorm (alone or followed by SiLU) and LayerNorm. `forward` takes the host kernel where it serves
//! ([`super::cpu`]) and burn's definition otherwise; parameters as burn names them (`gamma`, `beta`, which
//! the weight loader maps to diffusers' `weight`, `bias`).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor, TensorPrimitive};

use super::cpu;
use super::functional::silu;

/// Settings of a [`GroupNorm`].
#[derive(Config, Debug)]
pub struct GroupNormConfig {
    /// Number of groups the channels are split into; must divide `num_channels`.
    pub num_groups: usize,
    /// Channels of the input: the length of γ and β.
    pub num_channels: usize,
    /// ε added to the variance.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// A learnt per-channel scale γ and shift β.
    #[config(default = true)]
    pub affine: bool,
}

impl GroupNormConfig {
    /// γ = 1, β = 0.
    pub fn init<B: Backend>(&self, device: &B::Device) -> GroupNorm<B> {
        let ones = || Param::from_tensor(Tensor::ones([self.num_channels], device));
        let zeros = || Param::from_tensor(Tensor::zeros([self.num_channels], device));
        GroupNorm {
            gamma: self.affine.then(ones),
            beta: self.affine.then(zeros),
            num_groups: self.num_groups,
            epsilon: self.epsilon,
        }
    }
}

/// Group normalisation: statistics per sample over each group of channels and the spatial axes, then an
/// optional per-channel affine (γ, β).
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    /// \[channels\]
    pub gamma: Option<Param<Tensor<B, 1>>>,
    /// \[channels\]
    pub beta: Option<Param<Tensor<B, 1>>>,
    /// Number of channel groups normalised separately.
    pub num_groups: usize,
    /// ε added to the variance.
    pub epsilon: f64,
}

impl<B: Backend> GroupNorm<B> {
    /// y = (x − μ) / √(σ² + ε) · γ + β per group of channels. x: [batch, channels, …] → same shape
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        cpu::group_norm::forward(self, x, false).unwrap_or_else(|x| self.forward_generic(x))
    }

    /// silu([`Self::forward`]), the pair that opens every ResNet block; one pass on the CPU fast path.
    pub fn forward_silu<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        cpu::group_norm::forward(self, x, true).unwrap_or_else(|x| silu(self.forward_generic(x)))
    }

    /// burn-nn's GroupNorm, written out because its function is private to burn-nn: what every backend but
    /// the CPU fast path runs. Shapes as [`Self::forward`].
    pub fn forward_generic<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let shape = x.shape();
        let dims = shape.dims::<D>();
        let (n, c) = (dims[0], dims[1]);
        let per_group = dims[2..].iter().product::<usize>() * c / self.num_groups;
        let x = x.reshape([n, self.num_groups, per_group]);
        let centred = x.clone() - x.sum_dim(2) / per_group as f64;
        let var = centred.clone().square().sum_dim(2) / per_group as f64;
        let y = (centred / var.add_scalar(self.epsilon).sqrt()).reshape(shape);
        match (&self.gamma, &self.beta) {
            (Some(gamma), Some(beta)) => {
                let mut affine = [1; D];
                affine[1] = c;
                y * gamma.val().reshape(affine) + beta.val().reshape(affine)
            }
            _ => y,
        }
    }
}

/// Settings of a [`LayerNorm`].
#[derive(Config, Debug)]
pub struct LayerNormConfig {
    /// Width of the normalised last axis.
    pub d_model: usize,
    /// ε added to the variance.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Whether there is a learnt shift β (the scale γ is always there).
    #[config(default = true)]
    pub bias: bool,
}

impl LayerNormConfig {
    /// γ = 1, β = 0.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LayerNorm<B> {
        LayerNorm {
            gamma: Param::from_tensor(Tensor::ones([self.d_model], device)),
            beta: self
                .bias
                .then(|| Param::from_tensor(Tensor::zeros([self.d_model], device))),
            epsilon: self.epsilon,
        }
    }
}

/// Layer normalisation over the last axis, with a learnt scale γ and an optional shift β.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// \[width\]
    pub gamma: Param<Tensor<B, 1>>,
    /// \[width\]
    pub beta: Option<Param<Tensor<B, 1>>>,
    /// ε added to the variance.
    pub epsilon: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Normalises over the last axis. x: [..., width] → same shape
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        cpu::layer_norm::forward(self, x).unwrap_or_else(|x| self.forward_generic(x))
    }

    /// burn's LayerNorm op (fused by burn-flex): what inference on the CPU and every other backend runs.
    pub fn forward_generic<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let gamma = self.gamma.val().into_primitive().tensor();
        let beta = self
            .beta
            .as_ref()
            .map(|b| b.val().into_primitive().tensor());
        let y = B::layer_norm(x.into_primitive().tensor(), gamma, beta, self.epsilon);
        Tensor::from_primitive(TensorPrimitive::Float(y))
    }
}
