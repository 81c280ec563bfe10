//! diffusers `Downsample2D` and `Upsample2D` (with conv).

use burn::module::Module;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{backend::Backend, Tensor};

use super::{conv2d, Conv2d, Conv2dConfig};

/// A stride-2 3×3 conv. `padding = 1` in the UNets; the VAE uses padding 0 after an asymmetric
/// (right, bottom) zero pad of 1.
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    /// The stride-2 3×3 convolution.
    pub conv: Conv2d<B>,
    /// Pad one zero column on the right and one row at the bottom before the (unpadded) convolution: the
    /// VAE's `padding = 0`.
    pub asymmetric_pad: bool,
}

impl<B: Backend> Downsample2D<B> {
    /// A downsampler from `channels` to `out_channels`: `padding` 1 pads the convolution by 1 on every side
    /// (UNets), 0 pads asymmetrically first (VAE).
    pub fn new(channels: usize, out_channels: usize, padding: usize, device: &B::Device) -> Self {
        let conv = if padding == 1 {
            conv2d(channels, out_channels, 3, 2, device)
        } else {
            Conv2dConfig::new([channels, out_channels], [3, 3])
                .with_stride([2, 2])
                .init(device)
        };
        Self {
            conv,
            asymmetric_pad: padding == 0,
        }
    }

    /// x: [batch, c, h, w] → [batch, c_out, ⌈h/2⌉, ⌈w/2⌉]
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = if self.asymmetric_pad {
            // (left, right, top, bottom)
            x.pad((0, 1, 0, 1), burn::tensor::ops::PadMode::Constant(0.0))
        } else {
            x
        };
        self.conv.forward(x)
    }
}

/// Nearest 2× upsampling, then a 3×3 conv.
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    /// 3×3 convolution after the nearest-neighbour upsampling.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Upsample2D<B> {
    /// An upsampler from `channels` to `out_channels`.
    pub fn new(channels: usize, out_channels: usize, device: &B::Device) -> Self {
        Self {
            conv: conv2d(channels, out_channels, 3, 1, device),
        }
    }

    /// x: [batch, c, h, w] → [batch, c_out, 2h, 2w]; `size` overrides the output size (odd skip shapes).
    pub fn forward(&self, x: Tensor<B, 4>, size: Option<[usize; 2]>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let size = size.unwrap_or([2 * h, 2 * w]);
        let x = interpolate(x, size, InterpolateOptions::new(InterpolateMode::Nearest));
        self.conv.forward(x)
    }
}
