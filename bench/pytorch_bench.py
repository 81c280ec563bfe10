"""The PyTorch side of `codi bench models`: diffusers' UNet2DConditionModel and ControlNetModel on the weights,
inputs and thread count codi saved, timed the same way (median of N after one warm-up), and checked against
codi's outputs. Prints JSON. Needs torch + diffusers (a venv outside the repository; CI never runs this).

    python bench/pytorch_bench.py DIR [--iters 5] [--threads 2]
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
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.set_grad_enabled(False)

unet = UNet2DConditionModel.from_pretrained(f"{a.dir}/unet").eval()
cn = ControlNetModel.from_pretrained(f"{a.dir}/controlnet").eval()
io = load_file(f"{a.dir}/io.safetensors")
x, t, ctx, cond = io["sample"], io["timestep"], io["encoder_hidden_states"], io["controlnet_cond"]


def median_ms(f):
    f()
    ts = []
    for _ in range(max(a.iters, 1)):
        s = time.perf_counter()
        f()
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
    "unet_forward": (unet(x, t, ctx).sample - io["unet_out"]).abs().max().item(),
    "unet_controlnet_forward": (with_control() - io["unet_controlnet_out"]).abs().max().item(),
}
print(json.dumps({"timings": timings, "max_abs_diff": diff, "torch": torch.__version__, "threads": a.threads}))
