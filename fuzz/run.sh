#!/usr/bin/env bash
# Fuzzes codi's loaders with libFuzzer (cargo fuzz on the stable toolchain, no sanitizer: `-s none`).
#
#   fuzz/run.sh [RUNS] [TARGET...]     RUNS executions per target (default 100000); every target by default
#
# Each target starts from its kept corpus (fuzz/corpus/<target>) in a working copy (fuzz/grown/, ignored by
# git), runs RUNS inputs with the bounds below, then keeps in fuzz/corpus/<target> the seeds and the fewest
# inputs that reach every edge reached so far, so the kept corpus stays small. A crash, a hang past the timeout or a breach of a memory
# bound stops that target; its input lands in fuzz/artifacts/<target>/ and the script exits non-zero. Fixed
# crashes go to fuzz/regressions/<target>/, which `cargo test -p codi-tests --test fuzz_corpus` replays.
#
# Bounds: one input may run TIMEOUT seconds (10), the process may hold RSS_MB of memory (1024), and no single
# allocation may exceed 512 MiB (the capped allocator of codi-tests' `capped-alloc` feature aborts).
set -euo pipefail
cd "$(dirname "$0")"

RUNS="${1:-100000}"
shift || true
TIMEOUT="${TIMEOUT:-10}"
RSS_MB="${RSS_MB:-1024}"
MAX_LEN="${MAX_LEN:-8192}"
export CARGO_TARGET_DIR="${CODI_FUZZ_TARGET_DIR:-$HOME/.cache/codi-fuzz-target}"
TOOLS="${CODI_TOOLS_DIR:-$HOME/.cache/codi-tools}"
export PATH="$TOOLS/bin:$PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked --root "$TOOLS"
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^codi-fuzz$')
fi

# Coverage instrumentation, debug assertions (overflow checks) on, release optimisation.
cargo fuzz build -s none --target-dir "$CARGO_TARGET_DIR"
bin_dir="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"

status=0
printf '| target | executions | seconds | executions/s | kept corpus (files, bytes) | peak RSS (MB) | result |\n'
printf '|---|---:|---:|---:|---:|---:|---|\n'
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "grown/$t" "artifacts/$t"
  cp -n "corpus/$t"/* "grown/$t"/ 2>/dev/null || true
  log="artifacts/$t/run.log"
  start=$(date +%s.%N)
  result=ok
  if ! "$bin_dir/$t" "grown/$t" -runs="$RUNS" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" \
      -max_len="$MAX_LEN" -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
    result="FAILED: $(grep -m1 -o 'Test unit written to .*' "$log" || tail -1 "$log")"
    status=1
  fi
  end=$(date +%s.%N)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  # The kept corpus: the seeds, then the fewest inputs (old and new) that reach every edge reached so far.
  # Edges only (-use_counters=0): with hit counts (the default) merging keeps more than twice as many files.
  kept=$(mktemp -d)
  cp "corpus/$t"/seed-* "$kept"/ 2>/dev/null || true
  "$bin_dir/$t" -merge=1 -use_counters=0 "$kept" "corpus/$t" "grown/$t" -timeout="$TIMEOUT" \
    -rss_limit_mb="$RSS_MB" -max_len="$MAX_LEN" >"artifacts/$t/merge.log" 2>&1 || true
  rm -rf "corpus/$t" && mv "$kept" "corpus/$t" && chmod 755 "corpus/$t"
  files=$(find "corpus/$t" -type f | wc -l)
  bytes=$(du -cb "corpus/$t"/* | tail -1 | cut -f1)
  secs=$(awk "BEGIN{print $end - $start}")
  rate=$(awk "BEGIN{printf \"%d\", ${execs:-0} / $secs}")
  printf '| %s | %s | %.0f | %s | %s, %s | %s | %s |\n' "$t" "${execs:-?}" "$secs" "$rate" "$files" "$bytes" \
    "${rss:-?}" "$result"
done
exit $status
