#!/usr/bin/env bash
# Where a first CUDA run's time goes: CubeCL's compilation and autotune logs, time-stamped, for a UNet forward
# at the tiny and the SD-1.5 config. Carry .gpu (see gpu_check.sh).
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
xz -dc .gpu/codi.xz > /tmp/codi && chmod +x /tmp/codi || exit 1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export CUBECL_AUTOTUNE_LEVEL=minimal
printf '[compilation.logger]\nlevel = "basic"\nstderr = true\n[autotune.logger]\nlevel = "minimal"\nstderr = true\n' > cubecl.toml
stamp() { python3 -u -c '
import sys, time
t0 = time.time()
for l in sys.stdin:
    sys.stdout.write(f"{time.time() - t0:8.2f} {l}")'; }
timeout "${TINY_LIMIT:-60}" /tmp/codi --device cuda bench models --config tiny --workloads unet_forward --iters 3 2>&1 | stamp > "$OUT/tiny.log"
echo "tiny rc ${PIPESTATUS[0]}"; tail -5 "$OUT/tiny.log"; wc -l "$OUT/tiny.log"
timeout "${SD_LIMIT:-90}" /tmp/codi --device cuda bench models --config sd15 --workloads unet_forward --iters 3 2>&1 | stamp > "$OUT/sd15.log"
echo "sd15 rc ${PIPESTATUS[0]}"; tail -5 "$OUT/sd15.log"; wc -l "$OUT/sd15.log"
