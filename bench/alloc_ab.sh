#!/usr/bin/env bash
# The global allocator, A/B: `codi bench models` with codi's BlockCache, mimalloc and jemalloc, in turn, for
# ROUNDS rounds in one run (this machine's speed drifts by ±30 % within minutes: only side-by-side figures
# compare). Prints each run's medians and, per workload, the median over rounds and the peak resident memory.
#
#   bench/alloc_ab.sh [ROUNDS] [extra `codi bench models` flags]
#   bench/alloc_ab.sh 3 --config mid --iters 3 --workloads vae_decode,codi_train_step
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"; shift || true
flags=("$@")
[ ${#flags[@]} -gt 0 ] || flags=(--config mid --iters 3 --workloads unet_forward,vae_decode,codi_train_step)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/codi-target}"
bins=$(mktemp -d)
for alloc in blockcache mimalloc jemalloc; do
  features=()
  [ "$alloc" = blockcache ] || features=(--features "alloc-$alloc")
  cargo build -q -p codi-cli "${features[@]}"
  cp "$CARGO_TARGET_DIR/debug/codi" "$bins/codi-$alloc"
done
results="$bins/results.jsonl"
for round in $(seq 1 "$rounds"); do
  for alloc in blockcache mimalloc jemalloc; do
    out=$( { /usr/bin/time -f '%M' "$bins/codi-$alloc" bench models --json "${flags[@]}" 2>"$bins/err"; } )
    peak_kb=$(tail -n 1 "$bins/err")
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(json.dumps({"alloc":sys.argv[2],"round":int(sys.argv[3]),"peak_mb":int(sys.argv[4])//1024,"ms":{r["workload"]:r["codi_ms"] for r in d["rows"]}}))' \
      "$out" "$alloc" "$round" "$peak_kb" | tee -a "$results"
  done
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
allocs = ["blockcache", "mimalloc", "jemalloc"]
workloads = list(rows[0]["ms"])
print("\nmedian over rounds (ms; peak RSS MB):")
print("| workload | " + " | ".join(allocs) + " |")
print("|---|" + "---|" * len(allocs))
for w in workloads:
    cells = [f'{statistics.median(r["ms"][w] for r in rows if r["alloc"] == a):.0f}' for a in allocs]
    print(f"| {w} | " + " | ".join(cells) + " |")
peaks = [f'{max(r["peak_mb"] for r in rows if r["alloc"] == a)}' for a in allocs]
print("| peak RSS (MB) | " + " | ".join(peaks) + " |")
PY
rm -rf "$bins"
