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
    // The smallest kept buffer that is large enough, else the largest (grown without copying its contents).
    let mut buf = POOL
        .with_borrow_mut(|pool| {
            let fits = (0..pool.len())
                .filter(|&i| pool[i].len() >= len)
                .min_by_key(|&i| pool[i].len());
            let pick = fits.or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].len()));
            pick.map(|i| pool.swap_remove(i))
        })
        .unwrap_or_default();
    if buf.len() < len {
        buf.clear();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_have_the_asked_length_and_nested_calls_get_their_own() {
        with_scratch(1000, |outer| {
            assert_eq!(outer.len(), 1000);
            outer.fill(1.0);
            with_scratch(10, |inner| {
                assert_eq!(inner.len(), 10);
                inner.fill(2.0);
            });
            assert!(
                outer.iter().all(|&v| v == 1.0),
                "a nested call wrote into the outer buffer"
            );
        });
        // Kept buffers are reused at any smaller length and grown for a larger one.
        with_scratch(5, |b| assert_eq!(b.len(), 5));
        with_scratch(5000, |b| assert_eq!(b.len(), 5000));
    }
}
