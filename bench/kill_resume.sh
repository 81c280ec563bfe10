#!/usr/bin/env bash
# Crash safety: a training run — a PE-CoDi distillation, or a pretraining of the VAE, the classifier or the
# teacher — is SIGKILLed at random moments (every fourth one as a checkpoint file is being written) and
# resumed each time until it finishes; every weight file it exports must be byte-identical to an
# uninterrupted run's. Prints every kill (and whether a checkpoint was being written at that moment), then a
# summary.
#
#   bench/kill_resume.sh [MIN_KILLS=20] [WORK_DIR] [RUN=distill|vae|classifier|teacher]
set -euo pipefail
cd "$(dirname "$0")/.."
min_kills="${1:-20}"
work="${2:-$(mktemp -d)}"
kind="${3:-distill}"
mkdir -p "$work"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/codi-target}"
export RUST_BACKTRACE=0
cargo build -q -p codi-cli
codi="$CARGO_TARGET_DIR/debug/codi"
data=tests/fixtures/fashion-mnist-subset

# The embedded default's preset (PE-CoDi for distillation), shortened: EPOCHS (60) epochs of 6 steps, batch 4, 16
# validation items; the pretraining data cut to 64 Fashion-MNIST items and 64 scenes.
case "$kind" in
  distill) cmd=(distill --task sr) ;;
  vae|classifier|teacher) cmd=(pretrain "$kind" --fashion-limit 64 --scenes 64) ;;
  *) echo "unknown run '$kind' (distill, vae, classifier, teacher)" >&2; exit 2 ;;
esac
"$codi" "${cmd[@]}" --print-config > "$work/preset.json"
python3 - "$work/preset.json" "$work/config.json" "${EPOCHS:-60}" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c = c.get("config", c)
c["train"].update(num_epochs=int(sys.argv[3]), steps_per_epoch=6, batch_size=4, valid_items=16)
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
args=("${cmd[@]}" --config "$work/config.json" --data "$data" --log-every 60)

echo "uninterrupted run"
"$codi" "${args[@]}" --run "$work/ref-run" --out "$work/ref-out" > "$work/ref.log" 2>&1

kills=0; during_write=0; resumes=0
while true; do
  "$codi" "${args[@]}" --resume --run "$work/run" --out "$work/out" >> "$work/killed.log" 2>&1 &
  pid=$!
  resumes=$((resumes + 1))
  # Every fourth kill waits for a checkpoint write to begin (a `.partial-` file) and kills then; the others
  # come after a random 0.3–3 s. Once enough kills were made, the run finishes.
  if [ "$kills" -lt "$min_kills" ]; then
    if [ $((kills % 4)) -eq 3 ]; then
      # A tight poll (a checkpoint file takes milliseconds to write): kill as soon as one appears.
      targeted=$(python3 - "$work/run/checkpoint" "$pid" <<'PY' || true
import os, sys, time
folder, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 60
while time.time() < deadline:
    try:
        if any(n.startswith(".partial") for n in os.listdir(folder)):
            os.kill(pid, 9)
            print("killed")
            break
    except FileNotFoundError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        break
    time.sleep(0.0002)
PY
)
    else
      sleep "$(python3 -c 'import random; print(round(random.uniform(0.3, 3.0), 2))')"
    fi
  fi
  if [ "${targeted:-}" = killed ]; then
    targeted=""
    wait "$pid" 2>/dev/null || true
    kills=$((kills + 1)); during_write=$((during_write + 1))
    echo "kill $kills: as a checkpoint file was being written"
  elif [ "$kills" -lt "$min_kills" ] && kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    kills=$((kills + 1))
    latest=$(ls "$work/run/checkpoint" 2>/dev/null | sed -n 's/^model-\([0-9]*\)\.mpk$/\1/p' | sort -n | tail -1)
    echo "kill $kills: at a random moment; latest model checkpoint ${latest:-none}"
  else
    if wait "$pid"; then break; fi
    echo "a resumed run failed; see $work/killed.log" >&2; exit 1
  fi
done

same=yes
compared=0
while IFS= read -r f; do
  compared=$((compared + 1))
  cmp -s "$work/ref-out/$f" "$work/out/$f" || { same=no; echo "differs: $f"; }
done < <(cd "$work/ref-out" && find . -name '*.safetensors' | sort)
[ "$compared" -gt 0 ] || { echo "the run exported no weight files" >&2; exit 1; }
echo
echo "kills: $kills ($during_write as a checkpoint file was being written, the rest at random moments); runs started: $resumes, every resume succeeded"
partial=$(ls -a "$work/run/checkpoint" | grep -c '^\.partial' || true)
echo "temporary files of interrupted saves left in the finished run's checkpoint folder: $partial"
echo "exported weight files ($compared) byte-identical to the uninterrupted run's: $same"
[ "$same" = yes ] || exit 1
[ "$kills" -ge "$min_kills" ] || { echo "the run finished after only $kills kills" >&2; exit 1; }
