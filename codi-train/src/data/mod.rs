//! Datasets: items are (image, caption, label), images RGB in [0, 1] as `[3, 32, 32]`.

pub mod fashion_mnist;
pub mod idx;
pub mod scenes;

/// One training item.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageItem {
    /// RGB, channel-major, values in [0, 1]: 3 × size × size.
    pub pixels: Vec<f32>,
    pub size: usize,
    pub caption: String,
    pub label: usize,
}
