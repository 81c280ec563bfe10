"""The PyTorch side of `codi bench models`: diffusers' UNet2DConditionModel, ControlNetModel and AutoencoderKL
on the weights, inputs and thread count codi saved, timed the same way (median of N after one warm-up), and
checked against codi's outputs. Runs every workload whose codi output is in io.safetensors. Prints JSON.
Needs torch + diffusers (a venv outside the repository; CI never runs this).

    python bench/pytorch_bench.py DIR [--iters 5] [--threads 2] [--device cpu|cuda] [--dtype f32|bf16]
                                      [--mode codi|pe-codi]

The training step is codi's distiller step (codi_train::distill::model) written out in PyTorch: online
UNet + ControlNet forward with gradient at (z_t, t); x̂ = (z_t − σ_t ε̂)/α_t; the PF-ODE (DDIM) step
z_s = α_s x̂ + σ_s ε̂ from the detached prediction; the EMA target's ε at (z_s, s) without gradient;
loss = mean((ε̂ − ε_target)²) + mean((x̂ − x)²); backward; global-norm clip 1.0; AdamW (lr 1e-5,
weight decay 1e-2, eps 1e-8); EMA update (decay 0.999). Its first loss is compared with codi's.
"""
import argparse
import copy
import json
import time

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file

p = argparse.ArgumentParser()
p.add_argument("dir")
p.add_argument("--iters", type=int, default=5)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--device", default="cpu")
p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
p.add_argument("--mode", default="codi", choices=["codi", "pe-codi"])
a = p.parse_args()
dev = torch.device(a.device)
dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
torch.set_num_threads(a.threads)
torch.set_grad_enabled(False)

unet = UNet2DConditionModel.from_pretrained(f"{a.dir}/unet").eval().to(dev, dtype)
cn = ControlNetModel.from_pretrained(f"{a.dir}/controlnet").eval().to(dev, dtype)
io = {k: v.to(dev) for k, v in load_file(f"{a.dir}/io.safetensors").items()}
x, ctx, cond = (io[k].to(dtype) for k in ("sample", "encoder_hidden_states", "controlnet_cond"))
t = io["timestep"]


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def median_ms(f):
    f()
    sync()
    ts = []
    for _ in range(max(a.iters, 1)):
        s = time.perf_counter()
        f()
        sync()
        ts.append((time.perf_counter() - s) * 1e3)
    return sorted(ts)[len(ts) // 2]


def adapted(u, c, z, tt):
    down, mid = c(z, tt, ctx, cond, return_dict=False)
    return u(z, tt, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample


def max_diff(out, key):
    return (out.float() - io[key]).abs().max().item()


timings, diff = {}, {}
if "unet_out" in io:
    timings["unet_forward"] = median_ms(lambda: unet(x, t, ctx).sample)
    diff["unet_forward"] = max_diff(unet(x, t, ctx).sample, "unet_out")
if "unet_controlnet_out" in io:
    timings["unet_controlnet_forward"] = median_ms(lambda: adapted(unet, cn, x, t))
    diff["unet_controlnet_forward"] = max_diff(adapted(unet, cn, x, t), "unet_controlnet_out")
if "vae_decode_out" in io:
    vae = AutoencoderKL.from_pretrained(f"{a.dir}/vae").eval().to(dev, dtype)
    timings["vae_decode"] = median_ms(lambda: vae.decode(x).sample)
    diff["vae_decode"] = max_diff(vae.decode(x).sample, "vae_decode_out")
    del vae

if "train_losses" in io:
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    ac = sched.alphas_cumprod.to(dev)

    def coef(key):
        steps = io[key].long()
        abar = ac[steps].view(-1, 1, 1, 1).double()
        return steps, abar.sqrt().to(dtype), (1 - abar).sqrt().to(dtype)

    (ts, a_t, s_t), (ss, a_s, s_s) = coef("train_t"), coef("train_s")
    x0_true, eps_true = io["train_x"].to(dtype), io["train_noise"].to(dtype)
    z_t = a_t * x0_true + s_t * eps_true
    online_unet, online_cn = copy.deepcopy(unet).train(), copy.deepcopy(cn).train()
    ema_cn = copy.deepcopy(online_cn).requires_grad_(False)
    if a.mode == "pe-codi":
        # The backbone is frozen and shared by the EMA target.
        ema_unet = online_unet.requires_grad_(False)
        pairs = [(online_cn, ema_cn)]
    else:
        ema_unet = copy.deepcopy(online_unet).requires_grad_(False)
        pairs = [(online_cn, ema_cn), (online_unet, ema_unet)]
    trained = [p for online, _ in pairs for p in online.parameters()]
    ema = [p for _, target in pairs for p in target.parameters()]
    opt = torch.optim.AdamW(trained, lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
    losses = []

    def train_step():
        with torch.enable_grad():
            eps = adapted(online_unet, online_cn, z_t, ts)
            x0 = (z_t - s_t * eps) / a_t
            with torch.no_grad():
                z_s = a_s * x0 + s_s * eps
                eps_target = adapted(ema_unet, ema_cn, z_s, ss)
            loss = ((eps - eps_target) ** 2).mean() + ((x0 - x0_true) ** 2).mean()
            loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch._foreach_lerp_(ema, trained, 1 - 0.999)
        losses.append(loss.item())

    name = "codi_train_step" if a.mode == "codi" else "pe_codi_train_step"
    timings[name] = median_ms(train_step)
    diff[name + " (first loss)"] = abs(losses[0] - io["train_losses"][0].item())
    diff[name + " (last loss)"] = abs(losses[-1] - io["train_losses"][-1].item())

print(json.dumps({"timings": timings, "max_abs_diff": diff, "torch": torch.__version__, "threads": a.threads,
                  "device": a.device, "dtype": a.dtype, "mode": a.mode}))
