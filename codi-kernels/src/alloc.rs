//! A global allocator that keeps freed large blocks for reuse.
//!
//! Activations of a few MB and more come from the system allocator as fresh `mmap`s and go back as `munmap`s
//! (glibc's mmap threshold stops at 32 MB, so a [8, 64, 128, 128] activation is always mapped afresh): every
//! call of a network then pays a page fault and a kernel-zeroed page per 4 KB it writes, on whichever thread
//! touches the page first. A network called again allocates the same sizes again, so keeping freed blocks by
//! size class turns those faults into reuse. Blocks below [`BlockCache::MIN`] go straight to the system
//! allocator; the cache holds at most `limit` bytes and frees the rest.
//!
//! Install it in a binary (`codi` does):
//! ```ignore
//! #[global_allocator]
//! static ALLOC: codi_kernels::alloc::BlockCache = codi_kernels::alloc::BlockCache::new(1 << 30);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Size classes per doubling: a block serves requests up to 1/8 smaller than its class.
const STEPS: usize = 8;
/// log2 of the smallest cached size.
const MIN_SHIFT: usize = 20;
/// Classes from 1 MiB up to (not including) 2^48 bytes.
const CLASSES: usize = (48 - MIN_SHIFT) * STEPS;
/// Blocks kept per class.
const SLOTS: usize = 64;
/// Cached blocks are allocated at this alignment, so that any of a class serves any request of it; glibc
/// gives 16 without asking (its calloc path: fresh pages are not cleared twice) and burn asks for at most 16.
const ALIGN: usize = 16;

struct Free {
    blocks: [[usize; SLOTS]; CLASSES],
    counts: [u8; CLASSES],
    bytes: usize,
}

/// The system allocator with a cache of freed blocks of at least [`BlockCache::MIN`] bytes.
pub struct BlockCache {
    limit: AtomicUsize,
    free: Mutex<Free>,
}

impl BlockCache {
    /// The smallest block size that is cached.
    pub const MIN: usize = 1 << MIN_SHIFT;

    /// A cache that keeps at most `limit` bytes of freed blocks.
    pub const fn new(limit: usize) -> Self {
        Self {
            limit: AtomicUsize::new(limit),
            free: Mutex::new(Free {
                blocks: [[0; SLOTS]; CLASSES],
                counts: [0; CLASSES],
                bytes: 0,
            }),
        }
    }

    /// Changes the most bytes kept (0: keep nothing, every free goes back to the system); blocks beyond a
    /// lowered limit are freed as they would next be kept.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Bytes held in the cache now.
    pub fn cached_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        // A panic while the lock is held cannot leave the lists inconsistent (no allocation inside).
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The class of a request and the size every block of that class has, or None when it is not cached.
fn class_of(layout: Layout) -> Option<(usize, usize)> {
    let size = layout.size();
    if size < BlockCache::MIN || layout.align() > ALIGN {
        return None;
    }
    let octave = (usize::BITS - 1 - size.leading_zeros()) as usize;
    let grain = 1usize << (octave - STEPS.trailing_zeros() as usize);
    let step = size.div_ceil(grain); // STEPS..=2·STEPS
    let class = (octave - MIN_SHIFT) * STEPS + step - STEPS;
    (class < CLASSES).then_some((class, step * grain))
}

fn block_layout(size: usize) -> Layout {
    // SAFETY: ALIGN is a power of two and size a multiple of it (sizes ≥ 1 MiB rounded to ≥ 128 KiB).
    unsafe { Layout::from_size_align_unchecked(size, ALIGN) }
}

impl BlockCache {
    fn take(&self, class: usize) -> Option<*mut u8> {
        let mut free = self.lock();
        let n = free.counts[class] as usize;
        if n == 0 {
            return None;
        }
        free.counts[class] -= 1;
        let ptr = free.blocks[class][n - 1];
        free.bytes -= class_size(class);
        Some(ptr as *mut u8)
    }

    /// Keeps the block if there is room; false if the caller must free it.
    fn keep(&self, class: usize, ptr: *mut u8) -> bool {
        let size = class_size(class);
        let mut free = self.lock();
        let n = free.counts[class] as usize;
        if n == SLOTS || free.bytes + size > self.limit.load(Ordering::Relaxed) {
            return false;
        }
        free.blocks[class][n] = ptr as usize;
        free.counts[class] += 1;
        free.bytes += size;
        true
    }
}

fn class_size(class: usize) -> usize {
    let (octave, step) = (class / STEPS + MIN_SHIFT, class % STEPS + STEPS);
    step << (octave - STEPS.trailing_zeros() as usize)
}

// SAFETY: every block handed out is either the system allocator's for the caller's layout, or a block of
// `block_layout(size)` with size ≥ the request and ALIGN ≥ its alignment, returned to the same class on free.
unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            None => System.alloc(layout),
            Some((class, size)) => match self.take(class) {
                Some(ptr) => ptr,
                None => System.alloc(block_layout(size)),
            },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            None => System.alloc_zeroed(layout),
            Some((class, size)) => match self.take(class) {
                Some(ptr) => {
                    ptr.write_bytes(0, layout.size());
                    ptr
                }
                // Fresh pages come zeroed from the kernel.
                None => System.alloc_zeroed(block_layout(size)),
            },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class_of(layout) {
            None => System.dealloc(ptr, layout),
            Some((class, size)) => {
                if !self.keep(class, ptr) {
                    System.dealloc(ptr, block_layout(size));
                }
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        match (class_of(layout), class_of(new)) {
            (None, None) => System.realloc(ptr, layout, new_size),
            (Some((a, _)), Some((b, _))) if a == b => ptr,
            _ => {
                let out = self.alloc(new);
                if !out.is_null() {
                    ptr.copy_to_nonoverlapping(out, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_their_requests_and_grow_by_an_eighth() {
        let mut last = 0;
        for size in (BlockCache::MIN..64 << 20).step_by(40_961) {
            let (class, block) = class_of(Layout::from_size_align(size, 4).unwrap()).unwrap();
            assert!(
                block >= size && block - size < block / STEPS + 1,
                "{size} → {block}"
            );
            assert_eq!(class_size(class), block);
            assert!(class >= last);
            last = class;
        }
        assert_eq!(
            class_of(Layout::from_size_align(BlockCache::MIN - 1, 4).unwrap()),
            None
        );
        assert_eq!(
            class_of(Layout::from_size_align(1 << 20, 4).unwrap()),
            Some((0, 1 << 20))
        );
        assert_eq!(
            class_of(Layout::from_size_align(4 << 20, 4096).unwrap()),
            None
        );
    }

    #[test]
    fn freed_blocks_are_reused_within_the_limit_and_zeroed_on_request() {
        let cache = BlockCache::new(3 << 20);
        let layout = Layout::from_size_align(1_500_000, 4).unwrap();
        unsafe {
            let a = cache.alloc(layout);
            a.write_bytes(7, layout.size());
            cache.dealloc(a, layout);
            assert!(cache.cached_bytes() >= layout.size());
            // A slightly smaller request of the same class gets the same block, zeroed when asked.
            let smaller = Layout::from_size_align(1_450_000, 16).unwrap();
            let b = cache.alloc_zeroed(smaller);
            assert_eq!(a, b);
            assert!(std::slice::from_raw_parts(b, smaller.size())
                .iter()
                .all(|&v| v == 0));
            assert_eq!(cache.cached_bytes(), 0);
            // Past the limit, frees go back to the system.
            let c = cache.alloc(layout);
            cache.dealloc(b, smaller);
            cache.dealloc(c, layout);
            assert!(cache.cached_bytes() <= 3 << 20);
            // Growing within a class keeps the block; across classes moves the contents.
            let d = cache.alloc(layout);
            d.write_bytes(3, layout.size());
            let e = cache.realloc(d, layout, 1_510_000);
            assert_eq!(d, e);
            let f = cache.realloc(e, Layout::from_size_align(1_510_000, 4).unwrap(), 5 << 20);
            assert_eq!(*f.add(layout.size() - 1), 3);
            cache.dealloc(f, Layout::from_size_align(5 << 20, 4).unwrap());
            // With the limit at 0 nothing more is kept.
            cache.set_limit(0);
            let before = cache.cached_bytes();
            let g = cache.alloc(layout);
            cache.dealloc(g, layout);
            assert!(cache.cached_bytes() <= before);
        }
    }
}
