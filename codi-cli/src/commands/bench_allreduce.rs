//! `codi bench allreduce`: the time of one gradient all-reduce between data-parallel replicas (threads in
//! this process, through burn-collective, as `codi distill --devices N` runs them) by parameter count — what a
//! step of data-parallel training adds to the single-device step.

use std::time::Instant;

use crate::device::{with_backend, BackendTask, DeviceSpec};
use anyhow::{anyhow, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use clap::Args as ClapArgs;
use codi_train::training::replicas::{replica_devices, Replica, Topology};
use serde::Serialize;

#[derive(ClapArgs, Clone)]
pub struct Args {
    /// Replicas (threads, one per device).
    #[arg(long, default_value_t = 2, value_parser = super::at_least_one)]
    replicas: usize,
    /// Parameter counts to reduce (comma-separated); default: the embedded adapter (PE-CoDi), its backbone +
    /// adapter (CoDi), and 10⁷ and 10⁸ values.
    #[arg(long, value_delimiter = ',', default_values_t = [1_154_096usize, 3_534_612, 10_000_000, 100_000_000])]
    params: Vec<usize>,
    /// Timed repetitions per count (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 5, value_parser = super::at_least_one)]
    rounds: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    params: usize,
    replicas: usize,
    median_ms: f64,
    /// Parameter bytes reduced per second (f32).
    gb_per_s: f64,
}

struct Timing(Args);

impl BackendTask for Timing {
    type Output = Result<Vec<Row>>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let args = self.0;
        let topology = Topology {
            devices: args.replicas,
            ..Topology::single()
        };
        let devices = replica_devices::<B>(&device, args.replicas).map_err(|e| anyhow!(e))?;
        let times: Vec<Result<Vec<f64>, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = devices
                .iter()
                .enumerate()
                .map(|(local, device)| {
                    let replica = Replica::new(&topology, local);
                    let args = &args;
                    scope.spawn(move || time_replica::<B::InnerBackend>(&replica, device, args))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a replica panicked".into()))
                })
                .collect()
        });
        // Each replica's time per count; the slowest is the step's.
        let mut slowest = vec![0f64; args.params.len()];
        for t in times {
            for (s, v) in slowest.iter_mut().zip(t.map_err(|e| anyhow!(e))?) {
                *s = s.max(v);
            }
        }
        Ok(args
            .params
            .iter()
            .zip(slowest)
            .map(|(&params, ms)| Row {
                params,
                replicas: args.replicas,
                median_ms: ms,
                gb_per_s: params as f64 * 4.0 / (ms / 1e3) / 1e9,
            })
            .collect())
    }
}

/// One replica's median time (ms) for each count.
fn time_replica<B: Backend>(
    replica: &Replica,
    device: &B::Device,
    args: &Args,
) -> Result<Vec<f64>, String> {
    replica.register::<B>(device)?;
    let mut medians = Vec::new();
    for &n in &args.params {
        let values = Tensor::<B, 1>::random([n], Distribution::Normal(0.0, 1.0), device);
        let mut times = Vec::new();
        for round in 0..=args.rounds {
            let start = Instant::now();
            let mean = replica.all_reduce_mean(values.clone())?;
            let _ = mean.into_data();
            if round > 0 {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        medians.push(times[times.len() / 2]);
    }
    replica.finish::<B>()?;
    Ok(medians)
}

pub fn run(args: Args, device: DeviceSpec) -> Result<()> {
    let json = args.json;
    let rows = with_backend(device, Timing(args))??;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("all-reduce (mean) between replicas on {device}, median of the rounds");
    println!(
        "{:>12} {:>9} {:>11} {:>8}",
        "parameters", "replicas", "ms", "GB/s"
    );
    for r in rows {
        println!(
            "{:>12} {:>9} {:>11.2} {:>8.2}",
            r.params, r.replicas, r.median_ms, r.gb_per_s
        );
    }
    Ok(())
}
