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

/// Settings of the evaluation [`Classifier`], saved as its `config.json` (with `_class_name`
/// `CodiClassifier`).
#[derive(Config, Debug, PartialEq)]
pub struct ClassifierConfig {
    /// Number of classes the head predicts.
    pub num_classes: usize,
    /// Channels of the input images (3 for RGB).
    #[config(default = 3)]
    pub in_channels: usize,
    /// One stage per entry; every stage after the first halves the resolution.
    #[config(default = "vec![32, 64, 128]")]
    pub block_out_channels: Vec<usize>,
    /// Width of the penultimate features (the FD space).
    #[config(default = 128)]
    pub feature_dim: usize,
    /// Groups of every GroupNorm; each entry of `block_out_channels` must be a multiple of it.
    #[config(default = 8)]
    pub norm_num_groups: usize,
}

impl ClassifierConfig {
    /// A randomly initialised classifier with these settings.
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

    /// The config as JSON with `_class_name` = `CodiClassifier`: the classifier's `config.json`.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        v["_class_name"] = "CodiClassifier".into();
        v
    }

    /// Whether codi can build this classifier, within [`crate::limits`]. → Ok, or every problem by key
    pub fn check(&self) -> Result<(), String> {
        use crate::limits::*;
        Check::new()
            .levels(&self.block_out_channels, self.norm_num_groups)
            .channels("num_classes", self.num_classes)
            .channels("in_channels", self.in_channels)
            .channels("feature_dim", self.feature_dim)
            .finish()
    }

    /// Reads a config written by [`Self::to_json`]; `file` names it in errors, and [`Self::check`]'s
    /// problems are errors.
    pub fn from_json(value: &Value, file: &Path) -> Result<Self, ModelError> {
        crate::limits::checked(
            crate::diffusers_json::parse(value, file)?,
            file,
            Self::check,
        )
    }
}

/// A pre-activation residual stage of the classifier: norm1 → SiLU → conv1 → norm2 → SiLU → conv2, plus a 1×1
/// shortcut; conv1 and the shortcut carry the stage's stride.
#[derive(Module, Debug)]
pub struct ClassifierBlock<B: Backend> {
    /// GroupNorm (followed by SiLU) over the stage's input, before the first convolution.
    pub norm1: GroupNorm<B>,
    /// First 3×3 convolution of the residual branch, to the stage's channels; stride 2 in every stage but the
    /// first.
    pub conv1: Conv2d<B>,
    /// GroupNorm (followed by SiLU) before the second convolution.
    pub norm2: GroupNorm<B>,
    /// Second 3×3 convolution of the residual branch.
    pub conv2: Conv2d<B>,
    /// 1×1 convolution of the skip path, with the stage's stride (present even when the channels match).
    pub shortcut: Conv2d<B>,
}

impl<B: Backend> ClassifierBlock<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.conv1.forward(self.norm1.forward_silu(x.clone()));
        let h = self.conv2.forward(self.norm2.forward_silu(h));
        self.shortcut.forward(x) + h
    }
}

/// The evaluation classifier: conv_in, one [`ClassifierBlock`] per stage, GroupNorm + SiLU, global average
/// pooling, a projection to the features (+ SiLU) and a linear head.
#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    /// 3×3 input convolution to the first stage's channels.
    pub conv_in: Conv2d<B>,
    /// One residual stage per entry of `block_out_channels`.
    pub blocks: Vec<ClassifierBlock<B>>,
    /// GroupNorm (followed by SiLU) over the last stage's output, before the global average pooling.
    pub norm_out: GroupNorm<B>,
    /// Linear layer from the pooled channels to the penultimate features (followed by SiLU).
    pub proj: Linear<B>,
    /// Linear layer from the features to the class logits.
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

    /// Builds the classifier from a folder: `config.json` (read by [`ClassifierConfig::from_json`]) and
    /// safetensors weights.
    pub fn from_dir(dir: &Path, device: &B::Device) -> Result<Self, ModelError> {
        crate::io::load_dir(
            dir,
            ClassifierConfig::from_json,
            |c| c.init(device),
            &Default::default(),
        )
    }
}
