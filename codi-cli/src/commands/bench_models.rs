//! `codi bench models`: UNet and UNet + ControlNet forward at a named config, optionally side by side with
//! PyTorch/diffusers on the same weights, inputs and thread count (bench/pytorch_bench.py).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use clap::Args as ClapArgs;
use codi_core::device::{with_backend, BackendTask, DeviceSpec};
use codi_core::tensor_ops::to_vec;
use codi_core::{NoiseSource, SeededNoise};
use codi_models::io::save_diffusers_dir;

use super::bench::time_ms;
use codi_models::unet::{DownBlockType, UpBlockType};
use codi_models::{ControlNetConfig, UNet2DConditionModelConfig};
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
}

struct Setup {
    unet: UNet2DConditionModelConfig,
    controlnet: ControlNetConfig,
    latent: [usize; 2],
    batch: usize,
    tokens: usize,
}

fn setup(name: &str, batch: Option<usize>) -> Result<Setup> {
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
    Ok(Setup {
        unet,
        controlnet,
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
        let s = setup(&self.args.config, self.args.batch)?;
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
        let it = self.args.iters;
        let mut out = vec![];
        let ms = time_ms(it, || {
            let _ = to_vec(unet.forward(sample.clone(), t.clone(), ctx.clone()).sum());
        });
        out.push(Timing {
            workload: "unet_forward".into(),
            ms,
        });
        let ms = time_ms(it, || {
            let r = controlnet.forward(sample.clone(), t.clone(), ctx.clone(), cond.clone(), 1.0);
            let _ = to_vec(
                unet.forward_with_residuals(sample.clone(), t.clone(), ctx.clone(), Some(r))
                    .sum(),
            );
        });
        out.push(Timing {
            workload: "unet_controlnet_forward".into(),
            ms,
        });
        if let Some(dir) = &self.args.save {
            save_diffusers_dir(&unet, &s.unet.to_diffusers(), &dir.join("unet"))?;
            save_diffusers_dir(
                &controlnet,
                &s.controlnet.to_diffusers(),
                &dir.join("controlnet"),
            )?;
            let y = unet.forward(sample.clone(), t.clone(), ctx.clone());
            let r = controlnet.forward(sample.clone(), t.clone(), ctx.clone(), cond.clone(), 1.0);
            let yc = unet.forward_with_residuals(sample.clone(), t.clone(), ctx.clone(), Some(r));
            write_tensors(
                &dir.join("io.safetensors"),
                &[
                    ("sample", raw(&sample)),
                    ("timestep", raw(&t)),
                    ("encoder_hidden_states", raw(&ctx)),
                    ("controlnet_cond", raw(&cond)),
                    ("unet_out", raw(&y)),
                    ("unet_controlnet_out", raw(&yc)),
                ],
            )?;
        }
        Ok(out)
    }
}

pub fn run(mut args: Args, device: DeviceSpec) -> Result<()> {
    if args.python.is_some() && args.save.is_none() {
        args.save = Some(std::env::temp_dir().join(format!(
            "codi-bench-{}-{}",
            args.config,
            std::process::id()
        )));
    }
    let codi = with_backend(device, Run { args: args.clone() })??;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut torch: HashMap<String, f64> = HashMap::new();
    if let (Some(py), Some(dir)) = (&args.python, &args.save) {
        let script = args.script.clone().unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/pytorch_bench.py")
        });
        let out = Command::new(py)
            .arg(&script)
            .arg(dir)
            .args([
                "--iters",
                &args.iters.to_string(),
                "--threads",
                &threads.to_string(),
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
        for (k, ms) in v["timings"].as_object().into_iter().flatten() {
            torch.insert(k.clone(), ms.as_f64().unwrap_or(f64::NAN));
        }
        for (k, d) in v["max_abs_diff"].as_object().into_iter().flatten() {
            eprintln!("parity {k}: max |codi − diffusers| = {d}");
        }
    }
    if args.json {
        let rows: Vec<_> = codi
            .iter()
            .map(|c| serde_json::json!({"workload": c.workload, "codi_ms": c.ms, "pytorch_ms": torch.get(&c.workload)}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"config": args.config, "threads": threads, "rows": rows})
            )?
        );
        return Ok(());
    }
    println!("config {} on {device}, {threads} threads", args.config);
    println!(
        "{:<26} {:>10} {:>12} {:>14}",
        "workload", "codi ms", "PyTorch ms", "codi/PyTorch"
    );
    for c in codi {
        let (p, r) = match torch.get(&c.workload) {
            Some(p) => (format!("{p:.1}"), format!("{:.2}", c.ms / p)),
            None => ("-".into(), "-".into()),
        };
        println!("{:<26} {:>10.1} {:>12} {:>14}", c.workload, c.ms, p, r);
    }
    Ok(())
}
