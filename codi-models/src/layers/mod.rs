//! Building blocks shared by the UNets, the VAE and the ControlNet adapter; field names mirror diffusers.

pub mod activation;
pub mod attention;
pub mod blocks;
pub mod cpu_attention;
pub mod cpu_conv;
pub mod cpu_geglu;
pub mod cpu_layer_norm;
pub mod cpu_linear;
pub mod cpu_transpose;
pub mod embeddings;
pub mod host;
pub mod norm;
#[cfg(test)]
mod perturb;
pub mod resnet;
pub mod sampling;
pub mod transformer;

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;

/// A k×k convolution with "same" padding and the given stride.
pub fn conv2d<B: Backend>(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    device: &B::Device,
) -> Conv2d<B> {
    let p = k / 2;
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .init(device)
}

/// A 1×1 convolution whose weight and bias start at zero (ControlNet's zero convs).
pub fn zero_conv<B: Backend>(c_in: usize, c_out: usize, k: usize, device: &B::Device) -> Conv2d<B> {
    let p = k / 2;
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_initializer(burn::nn::Initializer::Zeros)
        .init(device)
}
