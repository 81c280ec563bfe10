"""PyTorch's side of `codi bench ops --conv …`: the same 3×3 convolutions (padding 1, no bias), forward only,
median of N after one warm-up, at a given thread count. Needs torch (a venv outside the repository).

    python bench/pytorch_conv.py [--threads 2] [--iters 5] C_IN,C_OUT,SIZE,BATCH ...
"""
import argparse
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("shapes", nargs="+")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--iters", type=int, default=5)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.set_grad_enabled(False)


def median_ms(f):
    f()
    ts = []
    for _ in range(a.iters):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2] * 1e3


for s in a.shapes:
    ci, co, hw, b = (int(v) for v in s.split(","))
    x = torch.randn(b, ci, hw, hw)
    w = torch.randn(co, ci, 3, 3)
    ms = median_ms(lambda: F.conv2d(x, w, padding=1))
    gflops = 2 * b * ci * co * 9 * hw * hw / ms / 1e6
    print(f"conv3x3 {ci}->{co} {hw}x{hw} batch {b} (PyTorch)  forward  {ms:8.2f} ms  {gflops:6.1f} GFLOP/s")
