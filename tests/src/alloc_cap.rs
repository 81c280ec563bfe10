//! The fuzz targets' allocation bound: with the `capped-alloc` feature the process's global allocator aborts
//! on any single request above [`MAX_ALLOCATION`], which libFuzzer reports as a crash with its input. (Without
//! a sanitizer libFuzzer sees only the resident set, `-rss_limit_mb`, which a large allocation never touched
//! does not reach.)

use std::alloc::{GlobalAlloc, Layout, System};

/// The most one allocation may ask for while fuzzing: 512 MiB.
pub const MAX_ALLOCATION: usize = 512 << 20;

/// The system allocator with the bound.
pub struct CappedAlloc;

fn refuse(layout: Layout) -> ! {
    // No formatting machinery here: it could allocate.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        b"codi fuzz: an allocation above the 512 MiB bound\n",
    );
    let _ = layout;
    std::process::abort()
}

// SAFETY: every call is forwarded unchanged to the system allocator, or the process aborts.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            refuse(layout)
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            refuse(layout)
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            refuse(layout)
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[cfg(feature = "capped-alloc")]
#[global_allocator]
static CAP: CappedAlloc = CappedAlloc;
