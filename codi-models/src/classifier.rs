//! The evaluation classifier: a small residual CNN over 32×32 RGB whose penultimate features define the
//! Fréchet distance (FD) of every evaluation, and whose labels give class agreement.

use std::path::Path;

use crate::layers::functional::silu;
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use serde_json::Value;

use crate::error::ModelError;
use crate::layers::{conv2d, Conv2d, GroupNorm, GroupNormConfig, Linear, LinearConfig};

#[derive(Config, Debug, PartialEq)]
pub struct ClassifierConfig {
    pub num_classes: usize,
    #[config(default = 3)]
    pub in_channels: usize,
    /// One stage per entry; every stage after the first halves the resolution.
    #[config(default = "vec![32, 64, 128]")]
    pub block_out_channels: Vec<usize>,
    /// Width of the penultimate features (the FD space).
    #[config(default = 128)]
    pub feature_dim: usize,
    #[config(default = 8)]
    pub norm_num_groups: usize,
}

impl ClassifierConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Classifier<B> {
        let gn = |c| GroupNormConfig::new(self.norm_num_groups, c).init(device);
        let c0 = self.block_out_channels[0];
        let mut c_in = c0;
        let blocks = self
            .block_out_channels
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let stride = if i == 0 { 1 } else { 2 };
                let b = ClassifierBlock {
                    norm1: gn(c_in),
                    conv1: conv2d(c_in, c, 3, stride, device),
                    norm2: gn(c),
                    conv2: conv2d(c, c, 3, 1, device),
                    shortcut: conv2d(c_in, c, 1, stride, device),
                };
                c_in = c;
                b
            })
            .collect();
        Classifier {
            conv_in: conv2d(self.in_channels, c0, 3, 1, device),
            blocks,
            norm_out: gn(c_in),
            proj: LinearConfig::new(c_in, self.feature_dim).init(device),
            head: LinearConfig::new(self.feature_dim, self.num_classes).init(device),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        v["_class_name"] = "CodiClassifier".into();
        v
    }

    pub fn from_json(value: &Value, file: &Path) -> Result<Self, ModelError> {
        let c: Self = crate::diffusers_json::parse(value, file)?;
        if c.block_out_channels.is_empty()
            || c.block_out_channels
                .iter()
                .any(|ch| !ch.is_multiple_of(c.norm_num_groups))
        {
            return Err(ModelError::Config {
                file: file.to_path_buf(),
                reason: format!(
                    "block_out_channels {:?} must be non-empty multiples of norm_num_groups {}",
                    c.block_out_channels, c.norm_num_groups
                ),
            });
        }
        Ok(c)
    }
}

#[derive(Module, Debug)]
pub struct ClassifierBlock<B: Backend> {
    pub norm1: GroupNorm<B>,
    pub conv1: Conv2d<B>,
    pub norm2: GroupNorm<B>,
    pub conv2: Conv2d<B>,
    pub shortcut: Conv2d<B>,
}

impl<B: Backend> ClassifierBlock<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.conv1.forward(self.norm1.forward_silu(x.clone()));
        let h = self.conv2.forward(self.norm2.forward_silu(h));
        self.shortcut.forward(x) + h
    }
}

#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub blocks: Vec<ClassifierBlock<B>>,
    pub norm_out: GroupNorm<B>,
    pub proj: Linear<B>,
    pub head: Linear<B>,
}

impl<B: Backend> Classifier<B> {
    /// The penultimate features. x: [batch, 3, H, W] in [−1, 1] → [batch, feature_dim]
    pub fn features(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut h = self.conv_in.forward(x);
        for b in &self.blocks {
            h = b.forward(h);
        }
        let h = self.norm_out.forward_silu(h);
        let [b, c, _, _] = h.dims();
        let pooled = h
            .reshape([b as i32, c as i32, -1])
            .mean_dim(2)
            .reshape([b, c]);
        silu(self.proj.forward(pooled))
    }

    /// Class logits. x: [batch, 3, H, W] in [−1, 1] → [batch, classes]
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.head.forward(self.features(x))
    }

    /// Both at once. → ([batch, feature_dim], [batch, classes])
    pub fn features_and_logits(&self, x: Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let f = self.features(x);
        (f.clone(), self.head.forward(f))
    }

    pub fn from_dir(dir: &Path, device: &B::Device) -> Result<Self, ModelError> {
        crate::io::load_dir(
            dir,
            ClassifierConfig::from_json,
            |c| c.init(device),
            &Default::default(),
        )
    }
}
