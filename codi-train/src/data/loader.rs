//! A data loader whose workers build batches in parallel and hand them over in order.
//!
//! burn's own multi-threaded loader splits the dataset into one range per worker and yields batches as they
//! finish, so the batch order changes from run to run. Here worker `k` of `W` builds batches `k, k + W, …`
//! into its own bounded queue and the iterator takes them round-robin: the batches are those of one thread
//! reading in order, at the speed of `W` threads — training stays reproducible and resumable step for step.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::data::dataset::transform::PartialDataset;
use burn::data::dataset::Dataset;
use burn::tensor::backend::Backend;

/// Run before each pass over the data (each epoch), before any item is read.
pub type PassStart = Arc<dyn Fn() + Send + Sync>;

/// Batches built ahead by each worker.
const QUEUED_PER_WORKER: usize = 2;

/// An ordered loader over `dataset` in batches of `batch_size`, built by `workers` threads (0: in the
/// calling thread, when the iterator asks).
pub struct OrderedLoader<B: Backend, I, O> {
    dataset: Arc<dyn Dataset<I>>,
    batcher: Arc<dyn Batcher<B, I, O>>,
    batch_size: usize,
    workers: usize,
    device: B::Device,
    on_pass: Option<PassStart>,
}

impl<B: Backend, I, O> OrderedLoader<B, I, O> {
    pub fn new(
        dataset: Arc<dyn Dataset<I>>,
        batcher: Arc<dyn Batcher<B, I, O>>,
        batch_size: usize,
        workers: usize,
        device: B::Device,
        on_pass: Option<PassStart>,
    ) -> Self {
        Self {
            dataset,
            batcher,
            batch_size: batch_size.max(1),
            workers,
            device,
            on_pass,
        }
    }

    fn batches(&self) -> usize {
        self.dataset.len().div_ceil(self.batch_size)
    }
}

/// Batch `b` (missing items skipped; `None` when none is left).
fn build<B: Backend, I, O>(
    dataset: &dyn Dataset<I>,
    batcher: &dyn Batcher<B, I, O>,
    batch_size: usize,
    b: usize,
    device: &B::Device,
) -> Option<O> {
    let end = ((b + 1) * batch_size).min(dataset.len());
    let items: Vec<I> = (b * batch_size..end)
        .filter_map(|i| dataset.get(i))
        .collect();
    (!items.is_empty()).then(|| batcher.batch(items, device))
}

type Built<O> = std::thread::Result<Option<O>>;

struct Worker<O> {
    queue: Receiver<Built<O>>,
    handle: Option<JoinHandle<()>>,
}

struct OrderedIter<'a, B: Backend, I, O> {
    loader: &'a OrderedLoader<B, I, O>,
    workers: Vec<Worker<O>>,
    next: usize,
    batches: usize,
}

impl<B: Backend, I, O> Iterator for OrderedIter<'_, B, I, O>
where
    I: Send + Sync + 'static,
    O: Send + 'static,
{
    type Item = O;

    fn next(&mut self) -> Option<O> {
        while self.next < self.batches {
            let b = self.next;
            self.next += 1;
            if let Some(batch) = self.batch(b) {
                return Some(batch);
            }
        }
        None
    }
}

impl<B: Backend, I, O> OrderedIter<'_, B, I, O> {
    /// Batch `b`: built here without workers, else taken from its worker's queue.
    fn batch(&mut self, b: usize) -> Option<O> {
        let l = self.loader;
        if self.workers.is_empty() {
            return build(
                l.dataset.as_ref(),
                l.batcher.as_ref(),
                l.batch_size,
                b,
                &l.device,
            );
        }
        let n = self.workers.len();
        let worker = &mut self.workers[b % n];
        match worker.queue.recv() {
            Ok(Ok(batch)) => batch,
            // A batcher that panicked: the panic goes on in the training thread, as without workers.
            Ok(Err(payload)) => resume_unwind(payload),
            Err(_) => {
                if let Some(Err(payload)) = worker.handle.take().map(|h| h.join()) {
                    resume_unwind(payload)
                }
                None
            }
        }
    }
}

impl<B: Backend, I, O> DataLoaderIterator<O> for OrderedIter<'_, B, I, O>
where
    I: Send + Sync + 'static,
    O: Send + 'static,
{
    fn progress(&self) -> Progress {
        let total = self.loader.dataset.len();
        Progress::new((self.next * self.loader.batch_size).min(total), total)
    }
}

impl<B: Backend, I, O> DataLoader<B, O> for OrderedLoader<B, I, O>
where
    I: Send + Sync + Clone + 'static,
    O: Send + 'static,
{
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<O> + 'a> {
        if let Some(start) = &self.on_pass {
            start();
        }
        let batches = self.batches();
        let workers = (0..self.workers.min(batches))
            .map(|k| {
                let (send, queue) = sync_channel(QUEUED_PER_WORKER);
                let (dataset, batcher) = (self.dataset.clone(), self.batcher.clone());
                let (bs, stride, device) = (
                    self.batch_size,
                    self.workers.min(batches),
                    self.device.clone(),
                );
                let handle = std::thread::Builder::new()
                    .name(format!("codi-loader-{k}"))
                    .spawn(move || {
                        for b in (k..batches).step_by(stride) {
                            let built = catch_unwind(AssertUnwindSafe(|| {
                                build(dataset.as_ref(), batcher.as_ref(), bs, b, &device)
                            }));
                            let failed = built.is_err();
                            // The iterator was dropped (end of training): stop quietly.
                            if send.send(built).is_err() || failed {
                                return;
                            }
                        }
                    })
                    .expect("spawning a data loader thread");
                Worker {
                    queue,
                    handle: Some(handle),
                }
            })
            .collect();
        Box::new(OrderedIter {
            loader: self,
            workers,
            next: 0,
            batches,
        })
    }

    fn num_items(&self) -> usize {
        self.dataset.len()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, O>> {
        Arc::new(Self {
            dataset: self.dataset.clone(),
            batcher: self.batcher.clone(),
            batch_size: self.batch_size,
            workers: self.workers,
            device: device.clone(),
            on_pass: self.on_pass.clone(),
        })
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, O>> {
        Arc::new(Self {
            dataset: Arc::new(PartialDataset::new(self.dataset.clone(), start, end)),
            batcher: self.batcher.clone(),
            batch_size: self.batch_size,
            workers: self.workers,
            device: self.device.clone(),
            on_pass: self.on_pass.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::data::dataset::InMemDataset;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Sums its items after a delay that makes later batches finish first across workers.
    #[derive(Clone)]
    struct SlowSum;

    impl Batcher<Flex, usize, Vec<usize>> for SlowSum {
        fn batch(&self, items: Vec<usize>, _: &burn::backend::flex::FlexDevice) -> Vec<usize> {
            let wait = 3u64.saturating_sub(items[0] as u64 % 4);
            std::thread::sleep(std::time::Duration::from_millis(wait));
            items
        }
    }

    fn loader(workers: usize, passes: Arc<AtomicUsize>) -> OrderedLoader<Flex, usize, Vec<usize>> {
        let hook: PassStart = Arc::new(move || {
            passes.fetch_add(1, Ordering::SeqCst);
        });
        OrderedLoader::new(
            Arc::new(InMemDataset::new((0..23).collect::<Vec<usize>>())),
            Arc::new(SlowSum),
            4,
            workers,
            Default::default(),
            Some(hook),
        )
    }

    #[test]
    fn workers_yield_the_batches_of_one_thread_in_order() {
        let passes = Arc::new(AtomicUsize::new(0));
        let serial: Vec<Vec<usize>> = loader(0, passes.clone()).iter().collect();
        assert_eq!(serial.len(), 6);
        assert_eq!(serial[5], vec![20, 21, 22]);
        for workers in [1, 2, 3, 8] {
            let parallel: Vec<Vec<usize>> = loader(workers, passes.clone()).iter().collect();
            assert_eq!(parallel, serial, "{workers} workers");
        }
        assert_eq!(
            passes.load(Ordering::SeqCst),
            5,
            "one pass start per iteration"
        );
        let sliced: Vec<Vec<usize>> = loader(2, passes).slice(4, 12).iter().collect();
        assert_eq!(sliced, vec![vec![4, 5, 6, 7], vec![8, 9, 10, 11]]);
    }

    #[test]
    fn a_panicking_batcher_panics_in_the_reading_thread() {
        #[derive(Clone)]
        struct Fails;
        impl Batcher<Flex, usize, usize> for Fails {
            fn batch(&self, items: Vec<usize>, _: &burn::backend::flex::FlexDevice) -> usize {
                assert!(items[0] < 8, "item {} is broken", items[0]);
                items[0]
            }
        }
        let l: OrderedLoader<Flex, usize, usize> = OrderedLoader::new(
            Arc::new(InMemDataset::new((0..16).collect::<Vec<usize>>())),
            Arc::new(Fails),
            4,
            2,
            Default::default(),
            None,
        );
        let read = catch_unwind(AssertUnwindSafe(|| l.iter().collect::<Vec<_>>()));
        let message = read.unwrap_err();
        let text = message.downcast_ref::<String>().unwrap();
        assert!(text.contains("item 8 is broken"), "{text}");
    }
}
