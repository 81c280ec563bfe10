//! `codi`: thin commands over the library crates.

mod commands;

use anyhow::Result;
use clap::{Parser, Subcommand};
use codi_core::device::DeviceSpec;

#[derive(Parser)]
#[command(
    name = "codi",
    version,
    about = "Conditional diffusion distillation (CoDi) on Burn"
)]
struct Cli {
    /// Where to compute: cpu, wgpu[:N] or cuda[:N] (wgpu and cuda need those cargo features).
    #[arg(long, global = true, default_value = "cpu")]
    device: DeviceSpec,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a sampler's timestep grid with α and σ at each step.
    Schedule(commands::schedule::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Schedule(args) => commands::schedule::run(args, cli.device),
    }
}
