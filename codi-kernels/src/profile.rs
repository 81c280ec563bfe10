//! Wall time per layer type, for `codi bench models --profile`: the callers of the kernels (codi-models'
//! layers) wrap each host op in [`timed`], which costs one relaxed atomic load while profiling is off.
//!
//! An op's time is its whole host call as seen by the calling thread — reading the tensors out, the kernel
//! with its threads, the tensors back — so the entries add up to the share of a workload that these ops
//! take; the rest is burn's own ops (element-wise arithmetic, copies, autodiff bookkeeping, the optimizer).
//! A timed op inside another (a transpose inside attention) counts towards the outer one only.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Forward or backward (the gradient computations of an autodiff op).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pass {
    Forward,
    Backward,
}

impl Pass {
    pub fn name(self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::Backward => "backward",
        }
    }
}

/// One layer type's totals since the last [`take`].
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub op: &'static str,
    pub pass: Pass,
    pub calls: u64,
    pub time: Duration,
    /// Floating-point operations counted the direct way (2 per multiply-add of the definition, also where
    /// a kernel does fewer, as Winograd's convolutions do); 0 for ops that move data rather than compute.
    pub flops: f64,
}

/// What [`take`] returns: the entries, largest time first, and the wall time since profiling started or
/// was last taken.
#[derive(Clone, Debug)]
pub struct Profile {
    pub entries: Vec<Entry>,
    pub wall: Duration,
}

static ON: AtomicBool = AtomicBool::new(false);

struct State {
    since: Instant,
    totals: HashMap<(&'static str, Pass), (u64, Duration, f64)>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

fn state() -> std::sync::MutexGuard<'static, Option<State>> {
    // Totals stay consistent if a profiled op panicked: they are only added to under the lock.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts (clearing earlier totals) or stops profiling, for the whole process.
pub fn set_enabled(on: bool) {
    *state() = on.then(|| State {
        since: Instant::now(),
        totals: HashMap::new(),
    });
    ON.store(on, Ordering::Relaxed);
}

/// Whether [`timed`] records.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The totals since profiling started or was last taken, and a fresh start; empty when profiling is off.
pub fn take() -> Profile {
    let mut guard = state();
    let Some(s) = guard.as_mut() else {
        return Profile {
            entries: vec![],
            wall: Duration::ZERO,
        };
    };
    let wall = s.since.elapsed();
    let mut entries: Vec<Entry> = s
        .totals
        .drain()
        .map(|((op, pass), (calls, time, flops))| Entry {
            op,
            pass,
            calls,
            time,
            flops,
        })
        .collect();
    entries.sort_by(|a, b| {
        b.time
            .cmp(&a.time)
            .then((a.op, a.pass).cmp(&(b.op, b.pass)))
    });
    s.since = Instant::now();
    Profile { entries, wall }
}

/// Runs `f`, adding its wall time to (`op`, `pass`) when profiling is on and no timed op encloses it.
pub fn timed<R>(op: &'static str, pass: Pass, flops: f64, f: impl FnOnce() -> R) -> R {
    if !enabled() || DEPTH.get() > 0 {
        return f();
    }
    DEPTH.set(1);
    // Reset even if f panics, so that a caught panic does not silence the thread's later ops.
    struct Outer;
    impl Drop for Outer {
        fn drop(&mut self) {
            DEPTH.set(0);
        }
    }
    let _outer = Outer;
    let t = Instant::now();
    let out = f();
    let dt = t.elapsed();
    if let Some(s) = state().as_mut() {
        let e = s.totals.entry((op, pass)).or_default();
        e.0 += 1;
        e.1 += dt;
        e.2 += flops;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: profiling is process-wide, and tests run in parallel.
    #[test]
    fn records_outer_ops_only_while_enabled_and_take_starts_afresh() {
        timed("dense", Pass::Forward, 10.0, || ());
        assert!(take().entries.is_empty(), "recorded while off");

        set_enabled(true);
        let v = timed("conv 3×3", Pass::Forward, 100.0, || {
            // A nested op counts towards the outer one.
            timed("transpose", Pass::Forward, 0.0, || {
                std::thread::sleep(Duration::from_millis(20))
            });
            7
        });
        assert_eq!(v, 7);
        timed("conv 3×3", Pass::Forward, 100.0, || ());
        timed("conv 3×3", Pass::Backward, 200.0, || ());
        let p = take();
        assert_eq!(p.entries.len(), 2, "{p:?}");
        let fwd = &p.entries[0];
        assert_eq!(
            (fwd.op, fwd.pass, fwd.calls),
            ("conv 3×3", Pass::Forward, 2)
        );
        assert_eq!(fwd.flops, 200.0);
        assert!(
            fwd.time >= Duration::from_millis(20) && p.wall >= fwd.time,
            "{p:?}"
        );
        assert_eq!((p.entries[1].pass, p.entries[1].calls), (Pass::Backward, 1));
        assert!(take().entries.is_empty(), "take did not start afresh");

        // A panic inside an op leaves later ops recorded.
        let _ = std::panic::catch_unwind(|| timed("dense", Pass::Forward, 1.0, || panic!("bad")));
        timed("dense", Pass::Forward, 1.0, || ());
        assert_eq!(take().entries.len(), 1);

        set_enabled(false);
        timed("dense", Pass::Forward, 1.0, || ());
        assert!(take().entries.is_empty());
    }
}
