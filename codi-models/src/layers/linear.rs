//! Dense layer. `forward` takes the host kernel where it serves ([`super::cpu`]) and burn's op otherwise;
//! the parameters are burn's (`weight` stored [d_in, d_out], `bias`), so diffusers' keys load unchanged.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::module::linear;
use burn::tensor::{backend::Backend, Tensor};

use super::cpu;

/// Settings of a [`Linear`] layer.
#[derive(Config, Debug)]
pub struct LinearConfig {
    /// Input width.
    pub d_input: usize,
    /// Output width.
    pub d_output: usize,
    /// Whether the layer has a learnt bias.
    #[config(default = true)]
    pub bias: bool,
}

impl LinearConfig {
    /// burn's initialisation (uniform in ±1/√d_input).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Linear<B> {
        let lin = burn::nn::LinearConfig::new(self.d_input, self.d_output)
            .with_bias(self.bias)
            .init(device);
        Linear {
            weight: lin.weight,
            bias: lin.bias,
        }
    }
}

/// A dense layer y = x·W + b, its weight stored as burn does ([d_in, d_out], the transpose of PyTorch's).
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// [d_in, d_out]
    pub weight: Param<Tensor<B, 2>>,
    /// \[d_out\]
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Linear<B> {
    /// x: [..., d_in] → [..., d_out]
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        cpu::linear::forward(self, x).unwrap_or_else(|x| self.forward_generic(x))
    }

    /// burn's dense op: what every backend but the CPU fast path runs. Shapes as [`Self::forward`].
    pub fn forward_generic<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        linear(x, self.weight.val(), self.bias.as_ref().map(Param::val))
    }
}
