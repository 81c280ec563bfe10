//! Datasets: items are (image, caption, label), images RGB in [0, 1] as `[3, 32, 32]`.

pub mod batch;
pub mod epoch;
pub mod fashion_mnist;
pub mod idx;
pub mod imagefolder;
pub mod loader;
pub mod mixed;
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

/// `n` items spread evenly through a dataset (all of it when it is smaller).
#[derive(Debug, Clone)]
pub struct Spread<D> {
    inner: D,
    n: usize,
}

impl<D> Spread<D> {
    pub fn new<I>(inner: D, n: usize) -> Self
    where
        D: burn::data::dataset::Dataset<I>,
    {
        let n = n.min(inner.len());
        Self { inner, n }
    }
}

impl<I, D: burn::data::dataset::Dataset<I>> burn::data::dataset::Dataset<I> for Spread<D> {
    fn get(&self, index: usize) -> Option<I> {
        if index >= self.n {
            return None;
        }
        self.inner.get(index * self.inner.len() / self.n)
    }
    fn len(&self) -> usize {
        self.n
    }
}
