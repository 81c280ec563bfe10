//! Training data whose order depends only on (seed, epoch, position), so that a run resumed from the
//! checkpoint of epoch k draws the same batches, and the same per-epoch randomness, as a run that never
//! stopped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use burn::data::dataset::Dataset;

use super::loader::PassStart;

/// SplitMix64 over three words: the key of an item from (seed, epoch, position), and further keys from one.
pub fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ c.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Called with the number of an epoch (from 1) as it starts, before its first item is read: where a run
/// reseeds what it draws per epoch (noise streams, the backend's generator).
pub type EpochStart = Arc<dyn Fn(usize) + Send + Sync>;

/// `len` items of `inner` per epoch, drawn with replacement at positions keyed by (seed, epoch, position).
/// [`EpochSampled::pass_start`] starts the next epoch: the loader runs it before each pass
/// ([`crate::data::loader::OrderedLoader`]), so any number of workers may read the positions.
#[derive(Clone)]
pub struct EpochSampled<D> {
    inner: D,
    seed: u64,
    len: usize,
    epoch: Arc<AtomicUsize>,
    on_start: Option<EpochStart>,
}

impl<D> EpochSampled<D> {
    /// Starts after `completed` epochs (0 for a new run, the checkpoint's epoch for a resumed one).
    pub fn new(
        inner: D,
        seed: u64,
        len: usize,
        completed: usize,
        on_start: Option<EpochStart>,
    ) -> Self {
        Self {
            inner,
            seed,
            len,
            epoch: Arc::new(AtomicUsize::new(completed)),
            on_start,
        }
    }
}

impl<D> EpochSampled<D> {
    /// Starts the next epoch (and runs `on_start` with its number).
    pub fn pass_start(&self) -> PassStart {
        let (epoch, on_start) = (self.epoch.clone(), self.on_start.clone());
        Arc::new(move || {
            let e = epoch.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(f) = &on_start {
                f(e);
            }
        })
    }
}

impl<I, D: Dataset<I>> Dataset<I> for EpochSampled<D> {
    fn get(&self, index: usize) -> Option<I> {
        if index >= self.len || self.inner.is_empty() {
            return None;
        }
        let e = self.epoch.load(Ordering::SeqCst) as u64;
        let key = mix(self.seed, e, index as u64);
        self.inner.get((key % self.inner.len() as u64) as usize)
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::data::dataset::InMemDataset;
    use std::sync::Mutex;

    fn epoch_items(d: &EpochSampled<InMemDataset<usize>>) -> Vec<usize> {
        d.pass_start()();
        (0..d.len()).map(|i| d.get(i).unwrap()).collect()
    }

    #[test]
    fn a_run_resumed_after_epoch_k_reads_what_an_unbroken_run_reads_from_epoch_k_plus_1() {
        let data = || InMemDataset::new((0..100).collect::<Vec<usize>>());
        let started = Arc::new(Mutex::new(Vec::new()));
        let log = started.clone();
        let hook: EpochStart = Arc::new(move |e| log.lock().unwrap().push(e));
        let unbroken = EpochSampled::new(data(), 7, 12, 0, Some(hook));
        let epochs: Vec<Vec<usize>> = (0..3).map(|_| epoch_items(&unbroken)).collect();
        assert_ne!(epochs[0], epochs[1], "every epoch draws anew");
        assert_eq!(*started.lock().unwrap(), vec![1, 2, 3]);
        let resumed = EpochSampled::new(data(), 7, 12, 2, None);
        assert_eq!(epoch_items(&resumed), epochs[2]);
    }
}
