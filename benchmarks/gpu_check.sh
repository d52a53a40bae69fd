#!/usr/bin/env bash
# One command for whoever has a CUDA machine: every GPU path, timed, all logs in one folder.
#
#   bash benchmarks/gpu_check.sh                 # data in .data/ (see below), logs in runs/gpu_check
#
# In order, each step capped so that the whole script ends within 9 minutes on one H100:
#   1. the test suite with CUDA visible, so every "auto" path takes the GPU (and the gpu tests run)
#   2. bench_step.py --device cuda (our training step against timm's, if timm is installed)
#   3. gpu_time_to_accuracy.py for vit-fast, then for deit-tiny, each within an epoch budget
#   4. textseg on the GPU (bench_textseg.py, real-size random weights)
# A step that fails or runs out of time is reported and the next one runs. The summary at the
# end lists each step's exit status and seconds; copy the numbers into benchmarks/RESULTS.md.
#
# Env: PY (python with this package installed; default .venv/bin/python, else python3),
#      DATA (ImageFolder CIFAR-10; default .data/cifar10, unpacked from
#      .data/cifar10-jpeg.tar.gz when only the archive is there),
#      LOGS (default runs/gpu_check), FAST_EPOCHS (default 20), DEIT_EPOCHS (default 12).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
DATA=${DATA:-.data/cifar10}
LOGS=${LOGS:-runs/gpu_check}
FAST_EPOCHS=${FAST_EPOCHS:-20}
DEIT_EPOCHS=${DEIT_EPOCHS:-12}
mkdir -p "$LOGS"
summary="$LOGS/summary.txt"
: >"$summary"

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: torch sees no CUDA GPU; this script is for a GPU machine" >&2
  exit 2
fi
if [ ! -d "$DATA/train" ] && [ -f .data/cifar10-jpeg.tar.gz ]; then
  mkdir -p "$DATA" && tar -xzf .data/cifar10-jpeg.tar.gz -C "$DATA"
fi
"$PY" - <<'EOF' | tee "$LOGS/machine.txt"
import torch, torchvision, transformers
print(f"{torch.cuda.get_device_name(0)} | torch {torch.__version__} | torchvision {torchvision.__version__} "
      f"| transformers {transformers.__version__} | CUDA {torch.version.cuda}")
EOF

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (at most ${limit}s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$LOGS/$name.log"
  local verdict=$([ $rc -eq 0 ] && echo ok || { [ $rc -eq 124 ] && echo "stopped at the time cap" || echo "failed"; })
  printf '%-22s exit %-3s %4ss  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$verdict" | tee -a "$summary"
}

step tests 170 "$PY" -m pytest -q -x -p no:cacheprovider -m "not browser"
step bench_step 45 "$PY" benchmarks/bench_step.py --device cuda --rounds 3
if [ -d "$DATA/train" ]; then
  step time_to_acc_vit_fast 130 "$PY" benchmarks/gpu_time_to_accuracy.py --data "$DATA" \
    --preset vit-fast --epochs "$FAST_EPOCHS" --out "$LOGS/vit-fast" --log "$LOGS/vit-fast.log"
  step time_to_acc_deit_tiny 100 "$PY" benchmarks/gpu_time_to_accuracy.py --data "$DATA" \
    --preset deit-tiny --epochs "$DEIT_EPOCHS" --out "$LOGS/deit-tiny" --log "$LOGS/deit-tiny.log"
else
  echo "gpu_check: no CIFAR-10 at $DATA (copy ../shared/data/cifar10-jpeg.tar.gz to .data/); time-to-accuracy skipped" | tee -a "$summary"
fi
step textseg 60 "$PY" benchmarks/bench_textseg.py --device cuda --repeats 2
echo
echo "=== summary (logs in $LOGS)"
cat "$summary"
