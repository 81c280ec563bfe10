//! The pretraining data: Fashion-MNIST and the procedural scenes in one dataset with one label space
//! (Fashion-MNIST's 10 classes, then the 3 scene shapes).

use std::path::Path;

use burn::config::Config;
use burn::data::dataset::Dataset;

use super::fashion_mnist::{self, FashionMnist, Split};
use super::scenes::{Scenes, Shape};
use super::ImageItem;
use crate::error::TrainError;

/// Scene labels follow Fashion-MNIST's.
pub const SCENE_LABEL_OFFSET: usize = fashion_mnist::CLASSES.len();
pub const NUM_LABELS: usize = SCENE_LABEL_OFFSET + Shape::ALL.len();

/// A label of the joint label space, in words.
pub fn label_name(label: usize) -> String {
    if label < SCENE_LABEL_OFFSET {
        fashion_mnist::CLASSES[label].to_string()
    } else {
        format!("scene: {}", Shape::ALL[label - SCENE_LABEL_OFFSET].name())
    }
}

/// Which data a pretraining uses.
#[derive(Config, Debug)]
pub struct DataConfig {
    /// Use Fashion-MNIST (from `--data DIR`).
    #[config(default = true)]
    pub fashion_mnist: bool,
    /// At most this many Fashion-MNIST items per split (0 = all).
    #[config(default = 0)]
    pub fashion_mnist_limit: usize,
    /// Procedural scenes in the training split.
    #[config(default = 20000)]
    pub scenes_train: usize,
    /// Procedural scenes in the test split.
    #[config(default = 2000)]
    pub scenes_test: usize,
}

/// Fashion-MNIST items first, then scenes.
#[derive(Debug, Clone)]
pub struct Mixed {
    fashion: Option<FashionMnist>,
    fashion_len: usize,
    scenes: Scenes,
}

impl Mixed {
    pub fn load(config: &DataConfig, fashion_dir: &Path, split: Split) -> Result<Self, TrainError> {
        let fashion = if config.fashion_mnist {
            Some(FashionMnist::load(fashion_dir, split)?)
        } else {
            None
        };
        let full = fashion.as_ref().map_or(0, |f| f.len());
        let fashion_len = match config.fashion_mnist_limit {
            0 => full,
            n => n.min(full),
        };
        let scenes = match split {
            Split::Train => Scenes::train(config.scenes_train),
            Split::Test => Scenes::test(config.scenes_test),
        };
        Ok(Self {
            fashion,
            fashion_len,
            scenes,
        })
    }
}

impl Dataset<ImageItem> for Mixed {
    fn get(&self, index: usize) -> Option<ImageItem> {
        if index < self.fashion_len {
            self.fashion.as_ref()?.get(index)
        } else {
            let mut item = self.scenes.get(index - self.fashion_len)?.image;
            item.label += SCENE_LABEL_OFFSET;
            Some(item)
        }
    }

    fn len(&self) -> usize {
        self.fashion_len + self.scenes.len
    }
}
