//! Fashion-MNIST (Xiao et al. 2017, MIT licence) from its four standard IDX files, as 32×32 RGB items with a
//! caption from the class name. Debian's `dataset-fashion-mnist` installs the files under
//! /usr/share/datasets/fashion-mnist/.

use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;

use super::idx::read_idx;
use super::ImageItem;
use crate::TrainError;

/// Where Debian's package puts the files.
pub const DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

pub const CLASSES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// The caption of a class: "a sneaker", "an ankle boot".
pub fn caption(label: usize) -> String {
    let name = CLASSES[label];
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// 28×28 grey images padded by 2 to 32×32 and replicated to RGB.
#[derive(Debug, Clone)]
pub struct FashionMnist {
    images: Vec<u8>,
    labels: Vec<u8>,
}

const SIDE: usize = 28;
pub const SIZE: usize = 32;

fn find(dir: &Path, stem: &str) -> Result<PathBuf, TrainError> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(TrainError::Data {
        file: dir.join(format!("{stem}.gz")),
        reason: format!(
            "not found (nor {stem}). Install Debian's `dataset-fashion-mnist` or download the four IDX files of \
             Fashion-MNIST into {} and pass --data DIR",
            dir.display()
        ),
    })
}

impl FashionMnist {
    /// Loads one split from `dir` (gzipped or raw IDX files).
    pub fn load(dir: &Path, split: Split) -> Result<Self, TrainError> {
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let img_file = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let lbl_file = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let images = read_idx(&img_file)?;
        let labels = read_idx(&lbl_file)?;
        if images.dims.len() != 3 || images.dims[1..] != [SIDE, SIDE] {
            return Err(TrainError::Data {
                file: img_file,
                reason: format!(
                    "expected images of shape [n, 28, 28], found {:?}",
                    images.dims
                ),
            });
        }
        if labels.dims != [images.dims[0]] {
            return Err(TrainError::Data {
                file: lbl_file,
                reason: format!("{:?} labels for {} images", labels.dims, images.dims[0]),
            });
        }
        if let Some(bad) = labels.data.iter().find(|&&l| l as usize >= CLASSES.len()) {
            return Err(TrainError::Data {
                file: lbl_file,
                reason: format!("label {bad} is not a Fashion-MNIST class (0–9)"),
            });
        }
        Ok(Self {
            images: images.data,
            labels: labels.data,
        })
    }
}

impl Dataset<ImageItem> for FashionMnist {
    fn get(&self, index: usize) -> Option<ImageItem> {
        let label = *self.labels.get(index)? as usize;
        let src = &self.images[index * SIDE * SIDE..(index + 1) * SIDE * SIDE];
        let pad = (SIZE - SIDE) / 2;
        let mut plane = vec![0f32; SIZE * SIZE];
        for y in 0..SIDE {
            for x in 0..SIDE {
                plane[(y + pad) * SIZE + x + pad] = src[y * SIDE + x] as f32 / 255.0;
            }
        }
        let pixels = [plane.clone(), plane.clone(), plane].concat();
        Some(ImageItem {
            pixels,
            size: SIZE,
            caption: caption(label),
            label,
        })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}
