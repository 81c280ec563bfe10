#!/usr/bin/env bash
# Runs on a GPU machine with a codi binary built with `--features cuda` (carried as .gpu/codi):
# the backend's op speed and SD-1.5-sized UNet / UNet+ControlNet forwards on CUDA.
set -u
BIN=${1:-.gpu/codi}
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$BIN" --device cuda bench ops --iters 10 2>&1 | tee "$OUT/ops_cuda.txt"
"$BIN" --device cuda bench models --config mid --iters 10 2>&1 | tee "$OUT/mid_cuda.txt"
"$BIN" --device cuda bench models --config sd15 --iters 5 2>&1 | tee "$OUT/sd15_cuda.txt"
