#!/usr/bin/env bash
# Runs on a GPU machine (no Rust there) from the repository root, with a codi binary built here with
# `--features cuda`, stripped and xz-compressed as .gpu/codi.xz, and diffusers as a wheel in .whl/
# (the machine has torch). Carry both:
#   cargo build -p codi-cli --features cuda && strip -o /tmp/codi target/debug/codi && xz -9 -T2 -c /tmp/codi > .gpu/codi.xz
#   (11 MB). The working tree must stay under the device's 64 MiB: slim the diffusers wheel (pip download
#   diffusers==0.42.1 --no-deps; unzip; delete everything in diffusers/pipelines and diffusers/modular_pipelines
#   but their __init__.py; zip again: 2.1 MB instead of 6.2 MB; the models import without them).
#   device run: bash bench/gpu_check.sh   (carry .gpu .whl)
# In commit b3a46d2 (H100) every phase hit its limit before codi's first call returned: CubeCL compiles each kernel
# (and ~5 autotune candidates per shape) at first launch; see bench/gpu-logs and the performance chapter.
# So the script keeps CubeCL's PTX and autotune caches in /tmp/cubecl-cache and packs them into
# $OUT/cubecl-cache.tar.xz after every phase (a phase killed at its limit keeps what it compiled and tuned).
# Put that file in .gpu/ for the next GPU session (H100 and H200 are both sm_90): it is unpacked first, so
# the kernels already tuned and compiled cost a cache read instead of NVRTC and autotune again.
# It times SD-1.5's UNet + ControlNet CoDi training step (64×64 latents, batch 1) in codi and in PyTorch on the
# same card, in f32 and in bf16, then the forward workloads; each phase has its own time limit and writes
# its JSON (and log) under $OUT, so a slow phase still leaves the earlier ones.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
xz -dc .gpu/codi.xz > /tmp/codi && chmod +x /tmp/codi || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch, diffusers; print("torch", torch.__version__, "diffusers", diffusers.__version__, torch.cuda.get_device_name())' | tee -a "$OUT/gpu.txt"
# CubeCL loads libcuda and libnvrtc at run time: add the toolkit's and the pip wheels' folders in case the
# loader does not know them.
for d in /usr/local/cuda/lib64 $(python3 -c 'import glob, nvidia, os; print(" ".join(sorted({os.path.dirname(p) for p in glob.glob(os.path.join(nvidia.__path__[0], "**", "libnvrtc*.so*"), recursive=True)})))' 2>/dev/null); do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
# CubeCL compiles every kernel at its first launch; autotune at its lightest level keeps that bounded, and its
# results are cached under target/ for the later phases.
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
CACHE=/tmp/cubecl-cache
mkdir -p "$CACHE"
[ -f .gpu/cubecl-cache.tar.xz ] && tar -xJf .gpu/cubecl-cache.tar.xz -C "$CACHE" && echo "cache carried in: $(find "$CACHE" -type f | wc -l) files"
# CubeCL reads cubecl.toml from the working directory up; the caches' files sit deeper than $OUT returns,
# hence the tarball.
printf '[compilation]\ncache = { file = "%s" }\n[autotune]\ncache = { file = "%s" }\n' "$CACHE" "$CACHE" > cubecl.toml
pack() { tar -cJf "$OUT/cubecl-cache.tar.xz.part" -C "$CACHE" . && mv "$OUT/cubecl-cache.tar.xz.part" "$OUT/cubecl-cache.tar.xz"; }
phase() { # name limit_s args...
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date +%T), limit ${limit}s)"
    timeout "$limit" /tmp/codi --device cuda bench models --python python3 --script bench/pytorch_bench.py \
        --json "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"
    echo "rc $? at $(date +%T)"
    cat "$OUT/$name.json"
    tail -c 3000 "$OUT/$name.log"
    pack
    ls -l "$OUT/cubecl-cache.tar.xz"
}
phase sd15-step-f32 ${STEP_LIMIT:-240} --config sd15 --mode codi --workloads codi_train_step --iters 5
phase sd15-step-bf16 ${STEP_LIMIT:-180} --config sd15 --mode codi --workloads codi_train_step --iters 5 --dtype bf16
phase sd15-fwd-f32 ${FWD_LIMIT:-90} --config sd15 --workloads unet_forward,unet_controlnet_forward,vae_decode --iters 10
