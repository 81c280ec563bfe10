//! `codi bench ops`: the speed of the operations that dominate a diffusion UNet — the backend's matmul, a
//! dense layer, a 3×3 convolution and attention as codi's models run them (on the CPU backend, the host
//! kernels), and the backend's own convolution — forward and forward + backward.

use std::time::Instant;

use crate::device::{with_backend, BackendTask, DeviceSpec};
use anyhow::Result;
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use clap::{Args as ClapArgs, Subcommand};
use codi_models::layers::functional::scaled_dot_product;
use codi_models::layers::{Conv2dConfig, LinearConfig};
use serde::Serialize;

#[derive(Subcommand)]
pub enum Bench {
    /// Matmul, dense layer and 3×3 conv, forward and backward, on the chosen --device.
    Ops(OpsArgs),
    /// UNet and UNet + ControlNet forward at a named config, optionally against PyTorch.
    Models(super::bench_models::Args),
    /// Images per second an image folder yields for training (read, decoded, cut, resized).
    Data(super::bench_data::Args),
    /// One gradient all-reduce between data-parallel replicas, by parameter count.
    Allreduce(super::bench_allreduce::Args),
}

#[derive(ClapArgs, Clone)]
pub struct OpsArgs {
    /// Timed repetitions per measurement (after one warm-up).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// 3×3 convolution shapes to time, each C_IN,C_OUT,SIZE,BATCH (repeatable; default 128,128,32,16).
    #[arg(long = "conv", value_parser = parse_conv_shape)]
    convs: Vec<[usize; 4]>,
    /// Also time the backend's own convolution on each shape (slow: its backward is ~5× codi's).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    backend_conv: bool,
    /// Self-attention shapes to time, each BATCH,HEADS,TOKENS,WIDTH (repeatable; none by default; the mid
    /// config's widest: 8,8,1024,8).
    #[arg(long = "attention", value_parser = parse_attention_shape)]
    attentions: Vec<[usize; 4]>,
}

fn parse_attention_shape(s: &str) -> Result<[usize; 4], String> {
    four_positive(s, "BATCH,HEADS,TOKENS,WIDTH")
}

fn parse_conv_shape(s: &str) -> Result<[usize; 4], String> {
    four_positive(s, "C_IN,C_OUT,SIZE,BATCH")
}

/// Four positive integers separated by commas, named by `names` in the error.
fn four_positive(s: &str, names: &str) -> Result<[usize; 4], String> {
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("'{s}': {e} (expected {names})"))?;
    match v[..] {
        [a, b, c, d] if a > 0 && b > 0 && c > 0 && d > 0 => Ok([a, b, c, d]),
        _ => Err(format!("'{s}': expected four positive integers {names}")),
    }
}

#[derive(Serialize)]
struct Row {
    op: String,
    pass: &'static str,
    ms: f64,
    gflops: f64,
}

/// Median wall time of `f` in ms, after one warm-up; `f` must force its result.
pub(super) fn time_ms(iters: usize, mut f: impl FnMut()) -> f64 {
    // The first call also compiles and autotunes kernels on GPU backends: reported, not timed.
    let t = Instant::now();
    f();
    eprintln!("  warm-up call: {:.2} s", t.elapsed().as_secs_f64());
    // A profile (`bench models --profile`) covers the timed calls only.
    let _ = codi_kernels::profile::take();
    let mut v: Vec<f64> = (0..iters.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let each: Vec<String> = v.iter().map(|t| format!("{t:.1}")).collect();
    eprintln!("  timed calls (ms): {}", each.join(" / "));
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn sync<B: Backend, const D: usize>(t: Tensor<B, D>) {
    let _ = t.sum().into_data();
}

struct Ops(OpsArgs);

/// The rows of one op: its forward time and its forward + backward time (`flops` forward, `backward`
/// times as many more backward).
#[allow(clippy::too_many_arguments)]
fn timed_pair(
    rows: &mut Vec<Row>,
    op: String,
    flops: f64,
    backward: f64,
    iters: usize,
    forward: impl FnMut(),
    forward_backward: impl FnMut(),
) {
    let ms = time_ms(iters, forward);
    rows.push(Row {
        op: op.clone(),
        pass: "forward",
        ms,
        gflops: flops / ms / 1e6,
    });
    let ms = time_ms(iters, forward_backward);
    rows.push(Row {
        op,
        pass: "forward+backward",
        ms,
        gflops: (1.0 + backward) * flops / ms / 1e6,
    });
}

impl BackendTask for Ops {
    type Output = Vec<Row>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Vec<Row> {
        let iters = self.0.iters;
        let mut rows = Vec::new();
        let n = 512;
        let a = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), &device);
        timed_pair(
            &mut rows,
            format!("matmul {n}x{n}"),
            2.0 * (n * n * n) as f64,
            2.0,
            iters,
            || sync(a.clone().inner().matmul(b.clone().inner())),
            || {
                let w = b.clone().require_grad();
                let g = a.clone().matmul(w.clone()).sum().backward();
                sync(w.grad(&g).expect("gradient"));
            },
        );

        // A dense layer at a UNet transformer's shape (8 × 32 × 32 tokens, 256 wide), through codi's op.
        let (tokens, width) = (8192, 256);
        let lin = LinearConfig::new(width, width).init::<B>(&device);
        let t = Tensor::<B, 2>::random([tokens, width], Distribution::Normal(0.0, 1.0), &device);
        let (lin_inner, ti) = (lin.valid(), t.clone().inner());
        timed_pair(
            &mut rows,
            format!("dense [{tokens}, {width}]x[{width}, {width}]"),
            2.0 * (tokens * width * width) as f64,
            2.0,
            iters,
            || sync(lin_inner.forward(ti.clone())),
            || {
                let g = lin.forward(t.clone().require_grad()).sum().backward();
                sync(lin.weight.grad(&g).expect("gradient"));
            },
        );

        let convs = if self.0.convs.is_empty() {
            vec![[128, 128, 32, 16]]
        } else {
            self.0.convs.clone()
        };
        for [c_in, c_out, hw, batch] in convs {
            let conv = Conv2dConfig::new([c_in, c_out], [3, 3])
                .with_padding([1, 1])
                .init::<B>(&device);
            let x = Tensor::<B, 4>::random(
                [batch, c_in, hw, hw],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let (inner, xi) = (conv.valid(), x.clone().inner());
            // codi's convolution (the host kernels on the CPU backend) and the backend's own.
            let kinds: &[(&str, bool)] = if self.0.backend_conv {
                &[("codi", true), ("backend", false)]
            } else {
                &[("codi", true)]
            };
            for &(label, ours) in kinds {
                timed_pair(
                    &mut rows,
                    format!("conv3x3 {c_in}->{c_out} {hw}x{hw} batch {batch} ({label})"),
                    2.0 * (batch * c_in * c_out * 9 * hw * hw) as f64,
                    2.0,
                    iters,
                    || {
                        sync(if ours {
                            inner.forward(xi.clone())
                        } else {
                            inner.forward_generic(xi.clone())
                        })
                    },
                    || {
                        let x = x.clone().require_grad();
                        let out = if ours {
                            conv.forward(x)
                        } else {
                            conv.forward_generic(x)
                        };
                        let g = out.sum().backward();
                        sync(conv.weight.grad(&g).expect("gradient"));
                    },
                );
            }
        }

        for [batch, heads, n, d] in self.0.attentions.clone() {
            let qkv = || {
                Tensor::<B, 4>::random(
                    [batch, heads, n, d],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                )
            };
            let (q, k, v) = (qkv(), qkv(), qkv());
            let (qi, ki, vi) = (q.clone().inner(), k.clone().inner(), v.clone().inner());
            // Scores and values: 2·n²·d each; the backward rebuilds the scores, then dV, dP, dq and dk.
            timed_pair(
                &mut rows,
                format!("attention {batch}x{heads} heads, {n} tokens, width {d}"),
                4.0 * (batch * heads * n * n * d) as f64,
                2.5,
                iters,
                || sync(scaled_dot_product(qi.clone(), ki.clone(), vi.clone())),
                || {
                    let q = q.clone().require_grad();
                    let g = scaled_dot_product(q.clone(), k.clone().require_grad(), v.clone())
                        .sum()
                        .backward();
                    sync(q.grad(&g).expect("gradient"));
                },
            );
        }
        rows
    }
}

impl Bench {
    /// The thread count asked for on the command line (`bench models --threads`).
    pub fn threads(&self) -> Option<usize> {
        match self {
            Bench::Models(args) => args.threads(),
            Bench::Ops(_) | Bench::Data(_) | Bench::Allreduce(_) => None,
        }
    }
}

pub fn run(cmd: Bench, device: DeviceSpec) -> Result<()> {
    match cmd {
        Bench::Models(args) => super::bench_models::run(args, device),
        Bench::Data(args) => super::bench_data::run(args),
        Bench::Allreduce(args) => super::bench_allreduce::run(args, device),
        Bench::Ops(args) => {
            let json = args.json;
            let rows = with_backend(device, Ops(args))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "backend: {device} ({} threads available)",
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                );
                println!("{:<44} {:<17} {:>10} {:>9}", "op", "pass", "ms", "GFLOP/s");
                for r in rows {
                    println!(
                        "{:<44} {:<17} {:>10.2} {:>9.1}",
                        r.op, r.pass, r.ms, r.gflops
                    );
                }
            }
            Ok(())
        }
    }
}
