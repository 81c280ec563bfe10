//! Batching images for burn's data loaders.

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use super::ImageItem;

/// A batch of images in the networks' range. images: [batch, 3, H, W] in [−1, 1]; labels: \[batch\]
#[derive(Debug, Clone)]
pub struct ImageBatch<B: Backend> {
    pub images: Tensor<B, 4>,
    pub labels: Tensor<B, 1, Int>,
    pub captions: Vec<String>,
}

/// Images → [`ImageBatch`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageBatcher;

/// Items as one [batch, 3, size, size] tensor in [−1, 1].
pub fn images_tensor<B: Backend>(items: &[ImageItem], device: &B::Device) -> Tensor<B, 4> {
    let size = items.first().map_or(0, |i| i.size);
    let data: Vec<f32> = items
        .iter()
        .flat_map(|i| i.pixels.iter().map(|p| p * 2.0 - 1.0))
        .collect();
    Tensor::from_data(TensorData::new(data, [items.len(), 3, size, size]), device)
}

impl<B: Backend> Batcher<B, ImageItem, ImageBatch<B>> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &B::Device) -> ImageBatch<B> {
        let labels: Vec<i64> = items.iter().map(|i| i.label as i64).collect();
        ImageBatch {
            images: images_tensor(&items, device),
            labels: Tensor::from_data(TensorData::new(labels, [items.len()]), device),
            captions: items.into_iter().map(|i| i.caption).collect(),
        }
    }
}
