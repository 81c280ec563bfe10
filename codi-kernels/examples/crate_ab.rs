//! Hand-written parts against the crates that could replace them, measured side by side in one run:
//! - the `target_feature` function + portable twin of each kernel against `multiversion` (SiLU over 16 Ki
//!   floats, one thread: the per-chunk body of `math::silu_f32`);
//! - the per-layer profiler (`profile::timed`) against `tracing` spans with a layer that sums each span's
//!   time, per call, off and on.
//!
//! cargo run -p codi-kernels --example crate_ab [-- ROUNDS]
//!
//! Prints the median over ROUNDS (default 7) of each variant's time (book: performance, "Crates against
//! hand-written code").

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use codi_kernels::math::{has_avx2_fma, silu, silu_with};
use codi_kernels::profile::{self, Pass};
use tracing::span;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// SiLU as the kernels write it: an AVX2 + FMA build chosen at run time, the portable loop otherwise.
fn silu_hand(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { silu_avx2(x) };
    }
    x.iter_mut().for_each(|v| *v = silu(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_avx2(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = silu_with::<true>(*v));
}

/// The same through `multiversion`: one body, cloned per target and dispatched at run time; the fused
/// multiply-add is chosen per clone from the clone's target.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn silu_multiversion(x: &mut [f32]) {
    const FUSED: bool = multiversion::target::selected_target!().supports_feature_str("fma");
    x.iter_mut().for_each(|v| *v = silu_with::<FUSED>(*v));
}

/// Sums each span's busy time by name: what `profile::timed` records, through tracing.
#[derive(Default)]
struct SpanTimes(Mutex<HashMap<&'static str, (u64, Duration)>>);

struct Entered(Instant);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for &'static SpanTimes {
    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        if let Some(s) = ctx.span(id) {
            s.extensions_mut().insert(Entered(Instant::now()));
        }
    }
    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        if let Some(s) = ctx.span(id) {
            if let Some(Entered(t)) = s.extensions_mut().remove::<Entered>() {
                let mut m = self.0.lock().unwrap();
                let e = m.entry(s.metadata().name()).or_default();
                e.0 += 1;
                e.1 += t.elapsed();
            }
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median over `rounds` of the mean time per call (ns) of `f`, `calls` calls per round.
fn per_call(rounds: usize, calls: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..rounds)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..calls {
                    f();
                }
                t.elapsed().as_nanos() as f64 / calls as f64
            })
            .collect(),
    )
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    println!("AVX2 + FMA in use: {}", has_avx2_fma());

    // SiLU: the two builds give the same values and are timed in turn.
    let input: Vec<f32> = (0..1 << 14).map(|i| (i as f32 - 8192.0) / 1024.0).collect();
    let (mut a, mut b) = (input.clone(), input.clone());
    silu_hand(&mut a);
    silu_multiversion(&mut b);
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let (mut hand, mut mv) = (Vec::new(), Vec::new());
    // Each round times both, the first of them alternating, so that neither profits from going second.
    for round in 0..rounds {
        let time_hand = || {
            per_call(1, 2000, || {
                let mut x = input.clone();
                silu_hand(black_box(&mut x));
            })
        };
        let time_mv = || {
            per_call(1, 2000, || {
                let mut x = input.clone();
                silu_multiversion(black_box(&mut x));
            })
        };
        if round % 2 == 0 {
            hand.push(time_hand());
            mv.push(time_mv());
        } else {
            mv.push(time_mv());
            hand.push(time_hand());
        }
    }
    println!(
        "SiLU, 16384 floats, one thread (µs per call, median of {rounds}): hand-written {:.2}, \
         multiversion {:.2}; max |difference| {diff:e}",
        median(hand) / 1e3,
        median(mv) / 1e3
    );

    // Profiling an empty op: off, then on, through each.
    let calls = 200_000;
    let timed_off = per_call(rounds, calls, || {
        profile::timed("op", Pass::Forward, 0.0, || black_box(()))
    });
    let span_off = per_call(rounds, calls, || {
        span!(tracing::Level::INFO, "op").in_scope(|| black_box(()))
    });
    profile::set_enabled(true);
    let timed_on = per_call(rounds, calls, || {
        profile::timed("op", Pass::Forward, 0.0, || black_box(()))
    });
    profile::set_enabled(false);
    static TIMES: std::sync::OnceLock<SpanTimes> = std::sync::OnceLock::new();
    let times = TIMES.get_or_init(SpanTimes::default);
    let subscriber = tracing_subscriber::registry().with(times);
    let span_on = tracing::subscriber::with_default(subscriber, || {
        per_call(rounds, calls, || {
            span!(tracing::Level::INFO, "op").in_scope(|| black_box(()))
        })
    });
    let recorded = times.0.lock().unwrap().get("op").map_or(0, |e| e.0);
    println!(
        "Profiling an empty op (ns per call, median of {rounds} × {calls} calls): \
         off: profile::timed {timed_off:.1}, tracing span {span_off:.1}; \
         on: profile::timed {timed_on:.1}, tracing span + summing layer {span_on:.1} ({recorded} spans summed)"
    );
}
