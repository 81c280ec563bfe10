//! Per-thread scratch buffers reused between calls: the kernels' large temporaries (im2col columns, packed
//! blocks) would otherwise be fresh allocations on every call, paid for in page faults.

use std::cell::RefCell;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Buffers kept per thread; more in use at once (nested calls) are allocated and dropped.
const KEEP: usize = 4;

/// Runs `f` on a buffer of `len` floats whose contents are left from earlier use: `f` must write before it
/// reads.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = POOL.with_borrow_mut(|pool| pool.pop()).unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let out = f(&mut buf[..len]);
    POOL.with_borrow_mut(|pool| {
        if pool.len() < KEEP {
            pool.push(buf);
        }
    });
    out
}
