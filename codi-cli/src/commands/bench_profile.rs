//! `codi bench models --profile`, `codi distill --profile`: where the time goes by layer type
//! (`codi_kernels::profile`).

use codi_kernels::profile::Profile;

/// The table of `what`, per one of `calls` `unit`s (a workload's timed call, a training step): each layer
/// type's time, share and achieved rate, then the rest of the wall time (burn's own ops).
pub fn table(what: &str, unit: &str, p: &Profile, calls: usize) -> String {
    let calls = calls.max(1) as f64;
    let wall_ms = p.wall.as_secs_f64() * 1e3 / calls;
    let mut out = format!(
        "profile of {what} (per {unit}, mean of {calls}: {wall_ms:.1} ms)\n{:<20} {:<9} {:>6} {:>10} {:>7} {:>9} {:>9}\n",
        "layer type", "pass", "calls", "ms", "share", "GFLOP", "GFLOP/s"
    );
    let share = |ms: f64| {
        if wall_ms > 0.0 {
            100.0 * ms / wall_ms
        } else {
            0.0
        }
    };
    let mut host_ms = 0.0;
    for e in &p.entries {
        let ms = e.time.as_secs_f64() * 1e3 / calls;
        host_ms += ms;
        let (gflop, rate) = if e.flops > 0.0 {
            let gflop = e.flops / calls / 1e9;
            (format!("{gflop:.2}"), format!("{:.1}", gflop / (ms / 1e3)))
        } else {
            ("-".into(), "-".into())
        };
        out += &format!(
            "{:<20} {:<9} {:>6} {:>10.2} {:>6.1}% {:>9} {:>9}\n",
            e.op,
            e.pass.name(),
            (e.calls as f64 / calls).round(),
            ms,
            share(ms),
            gflop,
            rate
        );
    }
    if p.entries.is_empty() {
        out += "(no host op ran: the profile covers the CPU backend's host kernels)\n";
    }
    let rest = (wall_ms - host_ms).max(0.0);
    out += &format!(
        "{:<37}{:>10.2} {:>6.1}%\n{:<37}{:>10.2} {:>6.1}%\n",
        "host ops together",
        host_ms,
        share(host_ms),
        "the rest (burn's ops)",
        rest,
        share(rest)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use codi_kernels::profile::{Entry, Pass};
    use std::time::Duration;

    #[test]
    fn the_table_gives_per_call_times_shares_rates_and_the_rest() {
        let p = Profile {
            entries: vec![
                Entry {
                    op: "conv 3×3",
                    pass: Pass::Forward,
                    calls: 20,
                    time: Duration::from_millis(600),
                    flops: 20e9,
                },
                Entry {
                    op: "group norm + SiLU",
                    pass: Pass::Backward,
                    calls: 4,
                    time: Duration::from_millis(100),
                    flops: 0.0,
                },
            ],
            wall: Duration::from_millis(1000),
        };
        let t = table("unet_forward", "timed call", &p, 2);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].contains("per timed call, mean of 2: 500.0 ms"),
            "{t}"
        );
        // 300 ms per call of 500, 10 GFLOP per call: 33.3 GFLOP/s.
        let conv: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            conv,
            ["conv", "3×3", "forward", "10", "300.00", "60.0%", "10.00", "33.3"]
        );
        assert!(lines[3].ends_with("-         -"), "{t}");
        assert!(
            lines[4].contains("350.00") && lines[4].contains("70.0%"),
            "{t}"
        );
        assert!(
            lines[5].contains("150.00") && lines[5].contains("30.0%"),
            "{t}"
        );
    }
}
