//! `codi bench models`: at a named config, UNet forward, UNet + ControlNet forward, VAE decode and one CoDi
//! training step, optionally side by side with PyTorch/diffusers on the same weights, inputs and thread count
//! (bench/pytorch_bench.py).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::device::{with_backend_as, with_checkpointing, BackendTask, DeviceSpec, FloatDType};
use anyhow::{bail, Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use clap::Args as ClapArgs;
use codi_core::tensor_ops::to_vec;
use codi_core::{NoiseSource, SeededNoise};
use codi_models::io::save_diffusers_dir;

use super::bench::time_ms;
use super::bench_profile;
use codi_models::unet::{DownBlockType, UpBlockType};
use codi_models::{AutoencoderKLConfig, ControlNetConfig, UNet2DConditionModelConfig};

use super::bench_step::{parse_mode, step_timesteps, StepBench, StepInputs};
use codi_pipelines::DistillMode;
use serde::Serialize;

#[derive(ClapArgs, Clone)]
pub struct Args {
    /// tiny (the diffusers fixture's config), mid (block_out 64/128/256, 32×32 latents, batch 8) or sd15.
    #[arg(long, default_value = "mid")]
    config: String,
    /// Batch size (default: 2 tiny, 8 mid, 1 sd15).
    #[arg(long)]
    batch: Option<usize>,
    /// Timed repetitions (median reported) after one warm-up.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Write the weights (diffusers layout), inputs and codi's outputs here.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Run bench/pytorch_bench.py with this Python on the saved folder and print the codi/PyTorch ratio.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Where bench/pytorch_bench.py is (default: the source tree's).
    #[arg(long)]
    script: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    /// Threads for codi (rayon) and PyTorch alike (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// What the training step trains (default: codi, pe-codi for sd15, whose full AdamW state needs ~20 GB).
    #[arg(long, value_parser = parse_mode)]
    mode: Option<DistillMode>,
    /// Float type codi and PyTorch compute in: f32, or bf16 (cuda only; weights, activations, gradients and
    /// AdamW state all in bf16 on both sides).
    #[arg(long, default_value = "f32")]
    dtype: FloatDType,
    /// Workloads to run, comma-separated (default: all of them).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "unet_forward,unet_controlnet_forward,vae_decode,codi_train_step"
    )]
    workloads: Vec<String>,
    /// Rounds of (codi, PyTorch) in turn; the ratio printed is the median of the rounds' ratios. This
    /// machine's speed drifts by more than the ratio within minutes, so a ratio from one codi run and one
    /// PyTorch run minutes apart is weak evidence.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Print where codi's time goes, per layer type (the CPU backend's host ops: convolutions, dense layers,
    /// attention, GroupNorm, LayerNorm, GEGLU, SiLU, layout transposes, forward and backward) with the achieved GFLOP/s,
    /// and the rest of the time (burn's own ops), for each workload's timed calls (on stderr).
    #[arg(long)]
    profile: bool,
    /// Run the training step with burn-autodiff's balanced checkpointing (f32 only).
    #[arg(long)]
    checkpointing: bool,
}

impl Args {
    /// --threads, for the pool `main` runs the command in.
    pub fn threads(&self) -> Option<usize> {
        self.threads
    }
}

const WORKLOADS: [&str; 4] = [
    "unet_forward",
    "unet_controlnet_forward",
    "vae_decode",
    "codi_train_step",
];

struct Setup {
    unet: UNet2DConditionModelConfig,
    controlnet: ControlNetConfig,
    vae: AutoencoderKLConfig,
    mode: DistillMode,
    latent: [usize; 2],
    batch: usize,
    tokens: usize,
}

fn setup(name: &str, batch: Option<usize>, mode: Option<DistillMode>) -> Result<Setup> {
    use DownBlockType::*;
    use UpBlockType::*;
    let (unet, cond_ch, latent, b, tokens) = match name {
        "tiny" => (
            UNet2DConditionModelConfig::new(
                vec![CrossAttnDownBlock2D, DownBlock2D],
                vec![UpBlock2D, CrossAttnUpBlock2D],
                vec![16, 32],
                vec![1, 1],
                32,
                vec![1, 1],
                vec![2, 2],
            )
            .with_norm_num_groups(8),
            vec![8, 8, 16, 16],
            [8, 12],
            2,
            7,
        ),
        "mid" => (
            UNet2DConditionModelConfig::new(
                vec![CrossAttnDownBlock2D, CrossAttnDownBlock2D, DownBlock2D],
                vec![UpBlock2D, CrossAttnUpBlock2D, CrossAttnUpBlock2D],
                vec![64, 128, 256],
                vec![2; 3],
                256,
                vec![1; 3],
                vec![8; 3],
            ),
            vec![16, 32, 64],
            [32, 32],
            8,
            77,
        ),
        "sd15" => (
            UNet2DConditionModelConfig::sd15(),
            vec![16, 32, 96, 256],
            [64, 64],
            1,
            77,
        ),
        other => bail!("unknown --config '{other}' (expected tiny, mid or sd15)"),
    };
    let controlnet =
        ControlNetConfig::new(unet.clone()).with_conditioning_embedding_out_channels(cond_ch);
    // VAEs whose latents are the UNet's input (f = 2, 4 and SD's 8).
    let (vae, default_mode) = match name {
        "tiny" => (
            AutoencoderKLConfig::new(vec![16, 32]).with_norm_num_groups(8),
            DistillMode::Codi,
        ),
        "mid" => (
            AutoencoderKLConfig::new(vec![64, 128, 256]),
            DistillMode::Codi,
        ),
        _ => (AutoencoderKLConfig::sd15(), DistillMode::PeCodi),
    };
    Ok(Setup {
        unet,
        controlnet,
        vae,
        mode: mode.unwrap_or(default_mode),
        latent,
        batch: batch.unwrap_or(b),
        tokens,
    })
}

#[derive(Serialize, Clone)]
pub struct Timing {
    pub workload: String,
    pub ms: f64,
}

impl Timing {
    fn new(workload: &str, ms: f64) -> Self {
        Self {
            workload: workload.into(),
            ms,
        }
    }
}

struct Run {
    args: Args,
}

/// A tensor's shape and values on the host.
type HostTensor = (Vec<usize>, Vec<f32>);

fn raw<B: Backend, const D: usize>(t: &Tensor<B, D>) -> HostTensor {
    (t.dims().to_vec(), to_vec(t.clone()))
}

fn write_tensors(path: &Path, tensors: &[(&str, HostTensor)]) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, (s, v))| {
            (
                k.to_string(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .expect("consistent tensor"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path)
        .with_context(|| format!("cannot write {}", path.display()))
}

impl BackendTask for Run {
    type Output = Result<Vec<Timing>>;
    fn run<AB: AutodiffBackend>(self, device: AB::Device) -> Self::Output {
        type B<AB> = <AB as AutodiffBackend>::InnerBackend;
        let args = &self.args;
        let s = setup(&args.config, args.batch, args.mode)?;
        let wants = |w: &str| args.workloads.iter().any(|x| x == w);
        let unet = s.unet.init::<B<AB>>(&device);
        let mut controlnet = s.controlnet.init_from_unet(&unet, &device);
        // Nonzero zero-convs so the adapter's output matters in the comparison.
        let mut noise = SeededNoise::new(0);
        for conv in controlnet
            .controlnet_down_blocks
            .iter_mut()
            .chain([&mut controlnet.controlnet_mid_block])
        {
            let shape = conv.weight.dims();
            conv.weight = conv
                .weight
                .clone()
                .map(|_| noise.sample::<B<AB>, 4>(shape, &device).mul_scalar(0.05));
        }
        let [h, w] = s.latent;
        let f = 1 << (s.controlnet.conditioning_embedding_out_channels.len() - 1);
        let sample = noise.sample::<B<AB>, 4>([s.batch, s.unet.in_channels, h, w], &device);
        let t = Tensor::<B<AB>, 1>::from_data(
            TensorData::new(
                (0..s.batch)
                    .map(|i| (999 - 97 * i as i64 % 1000) as f32)
                    .collect::<Vec<_>>(),
                [s.batch],
            ),
            &device,
        );
        let ctx =
            noise.sample::<B<AB>, 3>([s.batch, s.tokens, s.unet.cross_attention_dim], &device);
        let cond = noise.sample::<B<AB>, 4>([s.batch, 3, h * f, w * f], &device);
        let it = args.iters;
        codi_kernels::profile::set_enabled(args.profile);
        // time_ms, and the profile of the timed calls when asked.
        let timed = |workload: &str, f: &mut dyn FnMut()| {
            let ms = time_ms(it, f);
            if args.profile {
                let p = codi_kernels::profile::take();
                eprint!("{}", bench_profile::table(workload, "timed call", &p, it));
            }
            ms
        };
        let mut out = vec![];
        let mut io: Vec<(&str, HostTensor)> = vec![
            ("sample", raw(&sample)),
            ("timestep", raw(&t)),
            ("encoder_hidden_states", raw(&ctx)),
            ("controlnet_cond", raw(&cond)),
        ];
        if wants("unet_forward") {
            let ms = timed("unet_forward", &mut || {
                let _ = to_vec(unet.forward(sample.clone(), t.clone(), ctx.clone()).sum());
            });
            out.push(Timing::new("unet_forward", ms));
            io.push((
                "unet_out",
                raw(&unet.forward(sample.clone(), t.clone(), ctx.clone())),
            ));
        }
        let with_control = || {
            let r = controlnet.forward(sample.clone(), t.clone(), ctx.clone(), cond.clone(), 1.0);
            unet.forward_with_residuals(sample.clone(), t.clone(), ctx.clone(), Some(r))
        };
        if wants("unet_controlnet_forward") {
            let ms = timed("unet_controlnet_forward", &mut || {
                let _ = to_vec(with_control().sum());
            });
            out.push(Timing::new("unet_controlnet_forward", ms));
            io.push(("unet_controlnet_out", raw(&with_control())));
        }
        let vae = wants("vae_decode").then(|| s.vae.init::<B<AB>>(&device));
        if let Some(vae) = &vae {
            let ms = timed("vae_decode", &mut || {
                let _ = to_vec(vae.decode(sample.clone()).sum());
            });
            out.push(Timing::new("vae_decode", ms));
            io.push(("vae_decode_out", raw(&vae.decode(sample.clone()))));
        }
        if wants("codi_train_step") {
            let inputs = StepInputs {
                x: noise.sample::<B<AB>, 4>([s.batch, s.unet.in_channels, h, w], &device),
                noise: noise.sample::<B<AB>, 4>([s.batch, s.unet.in_channels, h, w], &device),
                text: ctx.clone(),
                cond: cond.clone(),
            };
            let mut bench = StepBench::<AB>::new(&unet, &controlnet, &inputs, s.mode);
            let mut losses = vec![];
            let ms = timed("codi_train_step", &mut || losses.push(bench.step()));
            out.push(Timing::new(
                match s.mode {
                    DistillMode::Codi => "codi_train_step",
                    DistillMode::PeCodi => "pe_codi_train_step",
                },
                ms,
            ));
            let (ts, ss) = step_timesteps(s.batch);
            let host = |v: &[i64]| (vec![v.len()], v.iter().map(|&x| x as f32).collect());
            io.extend([
                ("train_x", raw(&inputs.x)),
                ("train_noise", raw(&inputs.noise)),
                ("train_t", host(&ts)),
                ("train_s", host(&ss)),
                ("train_losses", (vec![losses.len()], losses)),
            ]);
        }
        if let Some(dir) = &args.save {
            save_diffusers_dir(&unet, &s.unet.to_diffusers(), &dir.join("unet"))?;
            save_diffusers_dir(
                &controlnet,
                &s.controlnet.to_diffusers(),
                &dir.join("controlnet"),
            )?;
            if let Some(vae) = &vae {
                save_diffusers_dir(vae, &s.vae.to_diffusers(), &dir.join("vae"))?;
            }
            write_tensors(&dir.join("io.safetensors"), &io)?;
        }
        codi_kernels::profile::set_enabled(false);
        Ok(out)
    }
}

pub fn run(mut args: Args, device: DeviceSpec) -> Result<()> {
    if args.python.is_some() && matches!(device, DeviceSpec::Wgpu(_)) {
        bail!(
            "--python compares on the same device, and PyTorch has no wgpu device: use cpu or cuda"
        );
    }
    if args.python.is_some() && args.save.is_none() {
        args.save = Some(std::env::temp_dir().join(format!(
            "codi-bench-{}-{}",
            args.config,
            std::process::id()
        )));
    }
    if let Some(w) = args
        .workloads
        .iter()
        .find(|w| !WORKLOADS.contains(&w.as_str()))
    {
        bail!(
            "unknown workload '{w}' (expected some of {})",
            WORKLOADS.join(", ")
        );
    }
    // `main` runs the command in a pool of --threads workers.
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let threads = rayon::current_num_threads();
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    // Per workload: each round's codi and PyTorch times.
    let mut codi_ms: Vec<(String, Vec<f64>)> = Vec::new();
    let mut torch_ms: HashMap<String, Vec<f64>> = HashMap::new();
    for round in 0..args.rounds {
        let run = Run { args: args.clone() };
        let timings = match args.checkpointing {
            true if args.dtype != FloatDType::F32 => bail!("--checkpointing runs in f32 only"),
            true => with_checkpointing(device, run)??,
            false => with_backend_as(device, args.dtype, run)??,
        };
        for t in timings {
            match codi_ms.iter_mut().find(|(w, _)| *w == t.workload) {
                Some((_, v)) => v.push(t.ms),
                None => codi_ms.push((t.workload, vec![t.ms])),
            }
        }
        if let (Some(py), Some(dir)) = (&args.python, &args.save) {
            for (k, ms) in run_pytorch(&args, py, dir, threads, device, round == 0)? {
                torch_ms.entry(k).or_default().push(ms);
            }
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let codi: Vec<Timing> = codi_ms
        .iter()
        .map(|(w, v)| Timing::new(w, median(v)))
        .collect();
    // The median of the per-round ratios, and the ratios themselves.
    let ratios: HashMap<String, Vec<f64>> = codi_ms
        .iter()
        .filter_map(|(w, c)| {
            let p = torch_ms.get(w)?;
            Some((w.clone(), c.iter().zip(p).map(|(c, p)| c / p).collect()))
        })
        .collect();
    let torch: HashMap<String, f64> = torch_ms
        .iter()
        .map(|(k, v)| (k.clone(), median(v)))
        .collect();
    if args.json {
        let rows: Vec<_> = codi
            .iter()
            .map(|c| serde_json::json!({"workload": c.workload, "codi_ms": c.ms, "pytorch_ms": torch.get(&c.workload), "ratios": ratios.get(&c.workload)}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"config": args.config, "device": device.to_string(), "dtype": args.dtype.name(), "threads": threads, "rows": rows})
            )?
        );
        return Ok(());
    }
    println!(
        "config {} on {device} in {}, {threads} threads",
        args.config,
        args.dtype.name()
    );
    println!(
        "{:<26} {:>10} {:>12} {:>14}",
        "workload", "codi ms", "PyTorch ms", "codi/PyTorch"
    );
    for c in codi {
        let (p, r, each) = match (torch.get(&c.workload), ratios.get(&c.workload)) {
            (Some(p), Some(r)) => (
                format!("{p:.1}"),
                format!("{:.2}", median(r)),
                if r.len() > 1 {
                    let each: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
                    format!("   rounds {}", each.join(" "))
                } else {
                    String::new()
                },
            ),
            _ => ("-".into(), "-".into(), String::new()),
        };
        println!(
            "{:<26} {:>10.1} {:>12} {:>14}{each}",
            c.workload, c.ms, p, r
        );
    }
    Ok(())
}

/// Runs bench/pytorch_bench.py on the saved folder: each workload's median time in ms (the parity lines
/// printed when `report`).
fn run_pytorch(
    args: &Args,
    py: &Path,
    dir: &Path,
    threads: usize,
    device: DeviceSpec,
    report: bool,
) -> Result<HashMap<String, f64>> {
    let script = args
        .script
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/pytorch_bench.py"));
    let out = Command::new(py)
        .arg(&script)
        .arg(dir)
        .args([
            "--iters",
            &args.iters.to_string(),
            "--threads",
            &threads.to_string(),
            "--mode",
            setup(&args.config, args.batch, args.mode)?.mode.name(),
            "--device",
            match device {
                DeviceSpec::Cuda(_) => "cuda",
                _ => "cpu",
            },
            "--dtype",
            args.dtype.name(),
        ])
        .output()
        .with_context(|| format!("cannot run {}", py.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("pytorch_bench.py printed no JSON")?;
    if report {
        for (k, d) in v["max_abs_diff"].as_object().into_iter().flatten() {
            eprintln!("parity {k}: max |codi − PyTorch| = {d}");
        }
    }
    Ok(v["timings"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, ms)| (k.clone(), ms.as_f64().unwrap_or(f64::NAN)))
        .collect())
}
