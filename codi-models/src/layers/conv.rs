//! 2-D convolution. `forward` takes the host kernel where it serves ([`super::cpu`]) and burn's op otherwise;
//! the parameters and their names are burn's (`weight`, `bias`), so diffusers' keys load unchanged.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::module::conv2d as conv2d_op;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{backend::Backend, Tensor};

use super::cpu;

/// A convolution with groups 1, dilation 1 and the same zero padding on opposite sides.
#[derive(Config, Debug)]
pub struct Conv2dConfig {
    /// [c_in, c_out]
    pub channels: [usize; 2],
    /// [kh, kw]
    pub kernel_size: [usize; 2],
    /// Stride [rows, columns].
    #[config(default = "[1, 1]")]
    pub stride: [usize; 2],
    /// Zero padding [rows above and below, columns left and right].
    #[config(default = "[0, 0]")]
    pub padding: [usize; 2],
    /// Whether the convolution has a learnt bias.
    #[config(default = true)]
    pub bias: bool,
    /// Weight and bias start at zero (ControlNet's zero convolutions); else burn's default initializer.
    #[config(default = false)]
    pub zero_init: bool,
}

impl Conv2dConfig {
    /// A convolution with these settings: weight and bias from burn's default initializer, or zero with
    /// `zero_init`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Conv2d<B> {
        let [ph, pw] = self.padding;
        let mut config = burn::nn::conv::Conv2dConfig::new(self.channels, self.kernel_size)
            .with_stride(self.stride)
            .with_padding(PaddingConfig2d::Explicit(ph, pw, ph, pw))
            .with_bias(self.bias);
        if self.zero_init {
            config = config.with_initializer(Initializer::Zeros);
        }
        let conv = config.init(device);
        Conv2d {
            weight: conv.weight,
            bias: conv.bias,
            stride: self.stride,
            padding: self.padding,
        }
    }
}

/// A 2-D convolution with groups 1, dilation 1 and symmetric zero padding (built by [`Conv2dConfig`]).
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    /// [c_out, c_in, kh, kw]
    pub weight: Param<Tensor<B, 4>>,
    /// \[c_out\]
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Stride [rows, columns].
    pub stride: [usize; 2],
    /// [rows above and below, columns left and right]
    pub padding: [usize; 2],
}

impl<B: Backend> Conv2d<B> {
    /// x: [b, c_in, h, w] → [b, c_out, (h + 2·pad − kh) / stride + 1, (w + 2·pad − kw) / stride + 1]
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        cpu::conv::forward(self, x).unwrap_or_else(|x| self.forward_generic(x))
    }

    /// burn's convolution: what every backend but the CPU fast path runs. Shapes as [`Self::forward`].
    pub fn forward_generic(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let options = ConvOptions::new(self.stride, self.padding, [1, 1], 1);
        conv2d_op(
            x,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            options,
        )
    }
}

/// A k×k convolution with "same" padding and the given stride.
pub fn conv2d<B: Backend>(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    device: &B::Device,
) -> Conv2d<B> {
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding([k / 2, k / 2])
        .init(device)
}

/// A k×k convolution with "same" padding whose weight and bias start at zero (ControlNet's zero convs).
pub fn zero_conv<B: Backend>(c_in: usize, c_out: usize, k: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_padding([k / 2, k / 2])
        .with_zero_init(true)
        .init(device)
}
