//! `codi distill --task sr|inpaint|edit|depth|controlnet --mode codi|pe-codi`: CoDi / PE-CoDi of the embedded
//! default or any Stable Diffusion pipeline folder (`--teacher`), on the embedded data or an image folder
//! (`--data`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::device::{with_backend, with_checkpointing, BackendTask, DeviceSpec};
use anyhow::{anyhow, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::Args as ClapArgs;
use codi_core::loss::Objective;
use codi_core::progressive::ProgressiveConfig;
use codi_pipelines::{SchedulerFile, TaskKind};
use codi_train::data::fashion_mnist::DEFAULT_DIR;
use codi_train::data::imagefolder::{is_image_folder, FolderConfig};
use codi_train::distill::{distill, preset_for, DistillConfig, DistillMode};
use codi_train::training::replicas::{replica_devices, start_orchestrator, Replica, Topology};
use codi_train::training::{load_config, RunOptions};

#[derive(ClapArgs, Clone)]
pub struct Args {
    /// sr | inpaint | edit | depth | controlnet
    #[arg(long)]
    task: String,
    /// codi (backbone + adapter) | pe-codi (adapter only)
    #[arg(long, default_value = "pe-codi")]
    mode: String,
    /// Distillation config (JSON). Default: the preset for the task and mode.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    print_config: bool,
    #[arg(long)]
    resume: bool,
    /// The pretrained text-to-image pipeline (a diffusers folder).
    #[arg(long, default_value = "assets/tiny")]
    teacher: PathBuf,
    /// Fashion-MNIST's IDX files (the embedded data), or an image folder: `metadata.jsonl` with `file_name`
    /// and `text` (and the task's other columns), or images with `.txt` captions beside them.
    #[arg(long, default_value = DEFAULT_DIR)]
    data: PathBuf,
    #[command(flatten)]
    folder: FolderArgs,
    /// Run folder. Default: runs/<mode>-<task>.
    #[arg(long)]
    run: Option<PathBuf>,
    /// Output folder. Default: assets/tiny/adapters/<task> (PE-CoDi) or assets/tiny/codi-<task> (CoDi).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start from the output folder of an earlier run of the task (its adapter, and its backbone for
    /// --mode codi from a codi run): the config's `init_from`.
    #[arg(long)]
    init_from: Option<PathBuf>,
    #[arg(long, value_parser = super::at_least_one)]
    epochs: Option<usize>,
    #[arg(long, value_parser = super::at_least_one)]
    steps_per_epoch: Option<usize>,
    #[arg(long, value_parser = super::at_least_one)]
    batch_size: Option<usize>,
    #[arg(long, value_parser = super::positive_number)]
    learning_rate: Option<f64>,
    /// Progressive distillation (`loss.objective: "progressive"`): the last round's student steps (the
    /// config's `loss.progressive.student_steps`).
    #[arg(long, value_parser = super::at_least_one)]
    student_steps: Option<usize>,
    /// Threads that read, decode and batch the data ahead of training (the order stays exact).
    #[arg(long)]
    num_workers: Option<usize>,
    #[arg(long, value_parser = super::positive_seconds, default_value_t = 10.0)]
    log_every: f64,
    /// Keep fewer activations for the backward pass: burn-autodiff's balanced checkpointing recomputes
    /// element-wise ops' outputs instead (book: performance, "Activation checkpointing").
    #[arg(long)]
    checkpointing: bool,
    #[command(flatten)]
    replicas: ReplicaArgs,
    /// At the end, print where the run's time went per layer type (`bench models --profile`'s table), per
    /// training step; validation passes and checkpoints are included.
    #[arg(long)]
    profile: bool,
}

/// Data-parallel training through burn's collective (book: training on several devices).
#[derive(ClapArgs, Clone)]
pub struct ReplicaArgs {
    /// Replicas on this machine, one per device (the CPU backend runs them all on the CPU); each trains on
    /// --batch-size items of every batch. Default: the config's `devices` (1).
    #[arg(long, value_parser = super::at_least_one)]
    devices: Option<usize>,
    /// Machines (processes) in the run, each started with the same command and its own --node-rank.
    #[arg(long, default_value_t = 1, value_parser = super::at_least_one)]
    nodes: usize,
    /// This machine's place among --nodes, from 0; node 0 runs the orchestrator and writes the checkpoints
    /// and the output.
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// HOST:PORT of node 0's orchestrator (with --nodes above 1).
    #[arg(long)]
    coordinator: Option<String>,
    /// HOST:PORT at which the other machines reach this one's tensor service. Default on one machine
    /// (a loopback --coordinator): the coordinator's port + 1 + --node-rank.
    #[arg(long)]
    node_address: Option<String>,
    /// Seconds a replica waits for the others at a gradient exchange before ending the run with an error
    /// (a machine that stopped); the first replica's validation pass and checkpoint count in the wait.
    #[arg(long, value_parser = super::positive_seconds, default_value_t = 600.0)]
    peer_timeout: f64,
}

impl ReplicaArgs {
    fn topology(&self, config_devices: usize) -> Result<Topology> {
        let t = Topology {
            devices: self.devices.unwrap_or(config_devices),
            nodes: self.nodes,
            node_rank: self.node_rank,
            coordinator: self.coordinator.clone(),
            node_address: self.node_address.clone(),
            timeout: std::time::Duration::from_secs_f64(self.peer_timeout),
        };
        t.check().map_err(|e| anyhow!(e))?;
        Ok(t)
    }
}

/// How an image folder is read (diffusers' training-script flags).
#[derive(ClapArgs, Clone, Default)]
pub struct FolderArgs {
    /// Side of the square training images.
    #[arg(long, value_parser = super::at_least_one)]
    resolution: Option<usize>,
    /// Centre the square cut of each image (default: placed at random).
    #[arg(long)]
    center_crop: bool,
    /// Mirror half of the images left–right.
    #[arg(long)]
    random_flip: bool,
    /// Skip images that cannot be read (counted) instead of stopping.
    #[arg(long)]
    skip_bad_images: bool,
    #[arg(long)]
    image_column: Option<String>,
    #[arg(long)]
    caption_column: Option<String>,
    #[arg(long)]
    conditioning_image_column: Option<String>,
    #[arg(long)]
    original_image_column: Option<String>,
    #[arg(long)]
    edit_prompt_column: Option<String>,
    #[arg(long)]
    edited_image_column: Option<String>,
}

impl FolderArgs {
    /// The flags applied to a folder config.
    fn apply(&self, mut f: FolderConfig) -> FolderConfig {
        if let Some(r) = self.resolution {
            f.resolution = r;
        }
        f.center_crop |= self.center_crop;
        f.random_flip |= self.random_flip;
        f.skip_bad_images |= self.skip_bad_images;
        let columns = [
            (&self.image_column, &mut f.image_column),
            (&self.caption_column, &mut f.caption_column),
            (
                &self.conditioning_image_column,
                &mut f.conditioning_image_column,
            ),
            (&self.original_image_column, &mut f.original_image_column),
            (&self.edit_prompt_column, &mut f.edit_prompt_column),
            (&self.edited_image_column, &mut f.edited_image_column),
        ];
        for (flag, column) in columns {
            if let Some(v) = flag {
                *column = v.clone();
            }
        }
        f
    }
}

fn parse(args: &Args) -> Result<(TaskKind, DistillMode)> {
    let task = TaskKind::from_name(&args.task).ok_or_else(|| {
        anyhow!(
            "unknown task '{}' (expected sr, inpaint, edit, depth, controlnet)",
            args.task
        )
    })?;
    let mode = match args.mode.as_str() {
        "codi" => DistillMode::Codi,
        "pe-codi" | "pecodi" => DistillMode::PeCodi,
        m => return Err(anyhow!("unknown mode '{m}' (expected codi, pe-codi)")),
    };
    Ok((task, mode))
}

struct Task(Args, DistillConfig, Topology);

impl BackendTask for Task {
    type Output = Result<Option<serde_json::Value>>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let (a, c, topology) = (self.0, self.1, self.2);
        let mut run = RunOptions::new(a.run.clone().unwrap_or_else(|| default_run(&c)));
        run.resume = a.resume;
        run.log_every = std::time::Duration::from_secs_f64(a.log_every.max(0.0));
        let out = default_out(&a, &c);
        let train = |run: &RunOptions, device: &B::Device| -> Result<Option<serde_json::Value>> {
            let d = distill::<B>(&c, &a.teacher, &a.data, run, &out, device)?;
            Ok(d.info.map(|info| {
                serde_json::json!({
                    "out": out,
                    "adapter": info,
                    "started_at_epoch": d.report.start_epoch,
                    "optimizer_steps_this_run": d.report.history.steps,
                    "skipped_images": d.skipped_images,
                    "train_epoch_means": d.report.history.train,
                    "valid_epoch_means": d.report.history.valid,
                })
            }))
        };
        if topology.world() == 1 {
            return train(&run, &device);
        }
        if let Some(port) = topology
            .orchestrator_port()
            .filter(|_| topology.node_rank == 0)
        {
            start_orchestrator(port).map_err(|e| anyhow!(e))?;
        }
        let devices = replica_devices::<B>(&device, topology.devices).map_err(|e| anyhow!(e))?;
        let results: Vec<Result<Option<serde_json::Value>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = devices
                .iter()
                .enumerate()
                .map(|(local, device)| {
                    let mut run = run.clone();
                    run.replica = Some(Replica::new(&topology, local));
                    let train = &train;
                    scope.spawn(move || train(&run, device))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a replica panicked")))
                })
                .collect()
        });
        let mut summary = None;
        for r in results {
            summary = summary.or(r?);
        }
        Ok(summary)
    }
}

pub fn run(args: Args, device: DeviceSpec) -> Result<()> {
    let (task, mode) = parse(&args)?;
    // The default place of Fashion-MNIST has its own hint (how to install it); a folder the user named
    // must exist.
    if args.data != Path::new(DEFAULT_DIR) && !args.data.is_dir() {
        return Err(anyhow!(
            "--data {}: no such folder (an image folder, or Fashion-MNIST's IDX files)",
            args.data.display()
        ));
    }
    let is_folder = is_image_folder(&args.data);
    let mut c = match &args.config {
        Some(f) => load_config::<DistillConfig>(f)?,
        None => {
            let folder = is_folder.then(|| args.folder.apply(FolderConfig::new()));
            preset_for(task, mode, &args.teacher, folder)?
        }
    };
    if args.config.is_some() && is_folder {
        c.folder = Some(
            args.folder
                .apply(c.folder.take().unwrap_or_else(FolderConfig::new)),
        );
    }
    if let Some(f) = &args.config {
        if c.task != task || c.mode != mode {
            return Err(anyhow!(
                "{} is a {} {} config, not {} {}",
                f.display(),
                c.mode.name(),
                c.task.name(),
                mode.name(),
                task.name()
            ));
        }
    }
    if let Some(dir) = &args.init_from {
        c.init_from = Some(dir.clone());
    }
    if let Some(v) = args.epochs {
        c.train.num_epochs = v;
    }
    if let Some(v) = args.steps_per_epoch {
        c.train.steps_per_epoch = v;
    }
    if let Some(v) = args.batch_size {
        c.train.batch_size = v;
    }
    if let Some(v) = args.learning_rate {
        c.train.learning_rate = v;
    }
    if let Some(v) = args.num_workers {
        c.train.num_workers = v;
    }
    if let Some(v) = args.student_steps {
        c.loss.progressive.student_steps = v;
    }
    if args.print_config {
        println!("{c}");
        return Ok(());
    }
    if c.loss.objective == Objective::Progressive && c.loss.progressive.rounds > 1 {
        return run_rounds(args, c, device);
    }
    train_and_record(args, c, device)
}

/// Progressive distillation's rounds, one run each: round r starts from round r − 1's output (the first from
/// the config's `init_from`) and halves the student's steps. Round K's run and output go to
/// `<run>/round-<K>/` (its output in `out/`); the last round's output to --out. With --resume, a round whose
/// output is written is not trained again.
fn run_rounds(args: Args, c: DistillConfig, device: DeviceSpec) -> Result<()> {
    let p = c.loss.progressive;
    // All rounds against the schedule before the first trains: a round checks only its own step count.
    let scheduler_file = args.teacher.join("scheduler").join("scheduler_config.json");
    let schedule = SchedulerFile::read(&scheduler_file)?.schedule;
    p.check(schedule.num_train_timesteps).with_context(|| {
        let config = args
            .config
            .as_ref()
            .map_or("the preset".into(), |f| f.display().to_string());
        format!(
            "{config}: loss.progressive does not fit the {} training timesteps of {}",
            schedule.num_train_timesteps,
            scheduler_file.display()
        )
    })?;
    let run_dir = args.run.clone().unwrap_or_else(|| default_run(&c));
    let steps = p.round_steps();
    let mut init_from = c.init_from.clone();
    for (r, &k) in steps.iter().enumerate() {
        let last = r + 1 == steps.len();
        let mut round = c.clone();
        round.loss.progressive = ProgressiveConfig {
            student_steps: k,
            rounds: 1,
            ..p
        };
        round.init_from = init_from.clone();
        let mut a = args.clone();
        a.run = Some(run_dir.join(format!("round-{k}")));
        if !last {
            a.out = Some(run_dir.join(format!("round-{k}")).join("out"));
        }
        let out = default_out(&a, &round);
        let started = init_from
            .as_ref()
            .map_or("the backbone".into(), |d| d.display().to_string());
        if args.resume && out.join("distill.json").is_file() {
            println!(
                "round {}/{}: {k} steps, finished in {}",
                r + 1,
                steps.len(),
                out.display()
            );
        } else {
            println!(
                "round {}/{}: a student of {k} DDIM steps from {started}",
                r + 1,
                steps.len()
            );
            train_and_record(a, round, device)?;
        }
        init_from = Some(out);
    }
    Ok(())
}

fn default_run(c: &DistillConfig) -> PathBuf {
    Path::new("runs").join(format!("{}-{}", c.mode.name(), c.task.name()))
}

fn default_out(a: &Args, c: &DistillConfig) -> PathBuf {
    a.out.clone().unwrap_or_else(|| match c.mode {
        DistillMode::PeCodi => a.teacher.join("adapters").join(c.task.name()),
        DistillMode::Codi => a.teacher.join(format!("codi-{}", c.task.name())),
    })
}

/// One run: trains, exports, and records `distill.json` (the command, the config, the wall time, and the
/// budget with the starting runs') beside the output.
fn train_and_record(args: Args, mut c: DistillConfig, device: DeviceSpec) -> Result<()> {
    let start = Instant::now();
    codi_kernels::profile::set_enabled(args.profile);
    if let Some(v) = args.replicas.devices {
        c.devices = Some(v);
    }
    let topology = args.replicas.topology(c.devices.unwrap_or(1))?;
    let task = Task(args.clone(), c.clone(), topology);
    let result = match args.checkpointing {
        true => with_checkpointing(device, task),
        false => with_backend(device, task),
    };
    let profile = codi_kernels::profile::take();
    codi_kernels::profile::set_enabled(false);
    let Some(mut summary) = result?? else {
        println!(
            "node {}: its replicas finished; node 0 writes the output",
            args.replicas.node_rank
        );
        return Ok(());
    };
    let wall = start.elapsed().as_secs_f64();
    if args.profile {
        let steps = c.train.num_epochs * c.train.steps_per_epoch;
        let unit = "training step (validation and checkpoints included)";
        print!(
            "{}",
            super::bench_profile::table("the run", unit, &profile, steps)
        );
    }
    summary["command"] = super::command_line().into();
    summary["wall_time_s"] = wall.into();
    summary["checkpointing"] = args.checkpointing.into();
    summary["config"] = serde_json::from_str(&c.to_string())?;
    // What the adapter cost with its starting runs, recorded here so that it survives their folders.
    let own = c.train.num_epochs * c.train.steps_per_epoch;
    let (first_steps, first_wall) = match &c.init_from {
        Some(dir) => codi_train::distill::export::training_budget(dir)?,
        None => (Some(0), Some(0.0)),
    };
    summary["budget"] = serde_json::json!({
        "train_steps": first_steps.map(|s| s + own),
        "wall_time_s": first_wall.map(|w| w + wall),
    });
    let out = PathBuf::from(summary["out"].as_str().unwrap_or("."));
    let file = out.join("distill.json");
    let tmp = out.join("distill.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&summary)?)
        .and_then(|()| std::fs::rename(&tmp, &file))
        .with_context(|| format!("writing {}", file.display()))?;
    println!("distilled in {wall:.0} s → {}", out.display());
    Ok(())
}
