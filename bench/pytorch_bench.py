"""The PyTorch side of `codi bench models`: diffusers' UNet2DConditionModel and ControlNetModel on the weights,
inputs and thread count codi saved, timed the same way (median of N after one warm-up), and checked against
codi's outputs. Prints JSON. Needs torch + diffusers (a venv outside the repository; CI never runs this).

    python bench/pytorch_bench.py DIR [--iters 5] [--threads 2] [--device cpu|cuda] [--dtype f32|bf16]
"""
import argparse
import json
import time

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors.torch import load_file

p = argparse.ArgumentParser()
p.add_argument("dir")
p.add_argument("--iters", type=int, default=5)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--device", default="cpu")
p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
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


def with_control():
    down, mid = cn(x, t, ctx, cond, return_dict=False)
    return unet(x, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample


timings = {
    "unet_forward": median_ms(lambda: unet(x, t, ctx).sample),
    "unet_controlnet_forward": median_ms(with_control),
}
diff = {
    "unet_forward": (unet(x, t, ctx).sample.float() - io["unet_out"]).abs().max().item(),
    "unet_controlnet_forward": (with_control().float() - io["unet_controlnet_out"]).abs().max().item(),
}
print(json.dumps({"timings": timings, "max_abs_diff": diff, "torch": torch.__version__, "threads": a.threads,
                  "device": a.device, "dtype": a.dtype}))
