//! `codi`: thin commands over the library crates.

mod commands;
mod device;

use crate::device::DeviceSpec;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// Freed activations of 1 MiB and more are kept for the next call instead of going back to the kernel
/// (book: performance chapter); up to 2 GiB of them, or `CODI_ALLOC_CACHE_MB` (0 turns the cache off).
#[cfg(not(any(feature = "alloc-mimalloc", feature = "alloc-jemalloc")))]
#[global_allocator]
static ALLOC: codi_kernels::alloc::BlockCache = codi_kernels::alloc::BlockCache::new(2 << 30);

/// mimalloc instead (cargo feature `alloc-mimalloc`), for comparison: `bench/alloc_ab.sh`.
#[cfg(feature = "alloc-mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jemalloc instead (cargo feature `alloc-jemalloc`), for comparison: `bench/alloc_ab.sh`.
#[cfg(all(feature = "alloc-jemalloc", not(feature = "alloc-mimalloc")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "codi",
    version,
    about = "Conditional diffusion distillation (CoDi) on Burn"
)]
struct Cli {
    /// Where to compute: cpu (burn-flex), ndarray, wgpu[:N] or cuda[:N] (all but cpu need their cargo feature).
    #[arg(long, global = true, default_value = "cpu")]
    device: DeviceSpec,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a sampler's timestep grid with α and σ at each step.
    Schedule(commands::schedule::Args),
    /// Describe a diffusers model folder and check that every weight loads.
    Inspect(commands::inspect::Args),
    /// Pretrain a part of the embedded default (VAE, text-to-image teacher, evaluation classifier).
    Pretrain(commands::pretrain::Args),
    /// Distil the pretrained pipeline into a few-step conditional model (CoDi / PE-CoDi).
    Distill(Box<commands::distill::Args>),
    /// Training curves (loss terms per step, validation means) of burn-train runs, as an SVG.
    Curves(commands::curves::Args),
    /// Run every committed adapter in a few steps on bundled test images: a grid per task and a summary.
    Demo(commands::demo::Args),
    /// Text-to-image samples from a pretrained pipeline, as a PNG grid.
    Sample(commands::sample::Args),
    /// Evaluate a model with the evaluation classifier (class agreement, FD).
    Eval(commands::eval::Args),
    /// Measure speed.
    #[command(subcommand)]
    Bench(commands::bench::Bench),
}

fn main() -> Result<()> {
    if let Ok(mb) = std::env::var("CODI_ALLOC_CACHE_MB") {
        let mb: usize = mb.trim().parse().map_err(|_| {
            anyhow::anyhow!("CODI_ALLOC_CACHE_MB must be a whole number of MiB, got '{mb}'")
        })?;
        #[cfg(not(any(feature = "alloc-mimalloc", feature = "alloc-jemalloc")))]
        ALLOC.set_limit(mb << 20);
        #[cfg(any(feature = "alloc-mimalloc", feature = "alloc-jemalloc"))]
        let _ = mb;
    }
    let cli = Cli::parse();
    // Every command runs on a worker of the thread pool that the kernels and burn-flex split their work over:
    // called from outside, each parallel operation handed its work to the pool and put the calling thread to
    // sleep, and with the pool's threads spinning for work beside it, the machine ran one thread more than it
    // has cores (book: performance chapter).
    let threads = match &cli.command {
        Command::Bench(b) => b.threads(),
        _ => None,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        // 0: rayon's default, RAYON_NUM_THREADS or one per core.
        .num_threads(threads.unwrap_or(0))
        .build()
        .context("cannot start the thread pool")?;
    pool.install(|| dispatch(cli))
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Schedule(args) => commands::schedule::run(args, cli.device),
        Command::Inspect(args) => commands::inspect::run(args, cli.device),
        Command::Pretrain(args) => commands::pretrain::run(args, cli.device),
        Command::Distill(args) => commands::distill::run(*args, cli.device),
        Command::Curves(args) => commands::curves::run(args),
        Command::Demo(args) => commands::demo::run(args, cli.device),
        Command::Sample(args) => commands::sample::run(args, cli.device),
        Command::Eval(args) => commands::eval::run(args, cli.device),
        Command::Bench(cmd) => commands::bench::run(cmd, cli.device),
    }
}
