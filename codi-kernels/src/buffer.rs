//! Output buffers written in full by a kernel: allocated without the zeroing pass that `vec![0.0; n]` costs
//! once the allocator hands back reused memory (`crate::alloc`).

use std::mem::MaybeUninit;

/// A Vec of `len` floats filled by `fill`, which gets the uninitialised buffer.
///
/// # Safety
/// `fill` must write every element.
pub(crate) unsafe fn written(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    out.set_len(len);
    out
}

/// The buffer as floats for a kernel that writes through raw pointers.
pub(crate) fn as_ptr(buf: &mut [MaybeUninit<f32>]) -> *mut f32 {
    buf.as_mut_ptr().cast()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_element_is_what_fill_wrote() {
        // SAFETY: the closure writes all 1000 values.
        let v = unsafe {
            super::written(1000, |b| {
                for (i, x) in b.iter_mut().enumerate() {
                    x.write(i as f32);
                }
            })
        };
        assert_eq!(v.len(), 1000);
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
    }
}
