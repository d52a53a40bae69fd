#!/usr/bin/env bash
# Rehearse benchmarks/gpu_check.sh here, without CUDA, the way the device tool runs it there:
# gpu_prep.sh, then gpu_check.sh with a python of the lent machine's stack, in a copy of the
# working tree (tracked + untracked-not-ignored files + the carried paths; no ../shared beside
# it), with nothing of this machine's venv in the environment. Then it checks that every step
# started, imported and ran or printed "skipped: no CUDA", that each test step collected more
# than 0 tests, and that the summary table was written; it exits 1 when any of that fails.
#
#   PY=/work/venvs/c/bin/python bash benchmarks/gpu_rehearse.sh      (about 2-4 min on 2 cores)
#
# PY: a venv built like the lent machine's (torch 2.11, torchvision 0.26, transformers 5.17,
# timm, pytest; no sam2/hydra/omegaconf/iopath/nbclient/ipywidgets; project not installed).
# Nothing is installed into it. The lent machine also has matplotlib, scikit-learn and their
# needs, and portalocker; where PY lacks them they are fetched once into .gpu_rehearse/lent_extras
# (pip --target) and put on PYTHONPATH, standing in for the machine's own copies.
# Env: PREP_PY (passed to gpu_prep.sh), KEEP=1 keeps the copy (its path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PY:?set PY to the python of a venv built like the lent machine (see the header)}"
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
WORK=$PWD/.gpu_rehearse
LENT_EXTRAS=(matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil six
             scikit-learn scipy joblib threadpoolctl narwhals cloudpickle portalocker)
t0=$SECONDS
mkdir -p "$WORK"

bash benchmarks/gpu_prep.sh >"$WORK/prep.log" 2>&1 || { cat "$WORK/prep.log"; exit 1; }
carry=$(sed -n 's/^carry: //p' "$WORK/prep.log" | tr -d '[]",')
extras=""
if ! "$PY" -c "import matplotlib, sklearn, narwhals, cloudpickle, portalocker" 2>/dev/null; then
  extras=$WORK/lent_extras
  if [ ! -f "$extras/.done" ]; then
    rm -rf "$extras"
    "$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$extras" \
      "${LENT_EXTRAS[@]}" 2> >(grep -v '^WARNING: Location' >&2)
    touch "$extras/.done"
  fi
fi

# The copy, as the device tool makes it: the tree git would send, plus the carried paths.
copy=$(mktemp -d)/repo
mkdir -p "$copy"
git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$copy"
for path in $carry; do
  mkdir -p "$copy/$(dirname "$path")" && cp -r "$path" "$copy/$path"
done
clean_path=$(tr ':' '\n' <<<"$PATH" | grep -v -e '/\.venv/' -e '/venvs/' | paste -sd: -)
( cd "$copy" && env -u VIRTUAL_ENV -u PYTHONHOME -u CONDA_PREFIX -u PYTHONPATH -u LOGS -u OUT \
    PATH="$clean_path" PY="$PY" ${extras:+PYTHONPATH="$extras"} CUDA_VISIBLE_DEVICES= \
    bash benchmarks/gpu_check.sh ) >"$WORK/check.out" 2>&1 || true
logs=$copy/runs/gpu_check
cat "$WORK/check.out"

# The checks.
fail=0
problem() { echo "rehearsal: $*"; fail=1; }
for name in setup tests_gpu tests_rest bench_step tta_vit_fast tta_deit_tiny textseg; do
  row=$(grep -P "^$name\t" "$logs/steps.tsv" 2>/dev/null || true)
  rc=$(cut -f2 <<<"$row")
  verdict=$(cut -f4 <<<"$row")
  if [ -z "$row" ]; then
    problem "$name did not run"
  elif [[ $name == tests_* ]]; then
    n=$(grep -oP '^\d+(?=(/\d+)? tests? collected)' "$logs/$name.log" || echo 0)
    [ "$rc" = 0 ] && [ "$n" -gt 0 ] || problem "$name: exit $rc, $n tests collected ($verdict)"
    echo "rehearsal: $name collected $n tests"
  elif [ "$name" = setup ]; then
    [ "$rc" = 0 ] || problem "setup: $verdict"
  elif ! { [ "$rc" = 0 ] || [[ $rc = 77 && $verdict == "skipped: no CUDA"* ]]; }; then
    problem "$name neither ran nor skipped for want of CUDA: exit $rc, $verdict"
  fi
done
[ -s "$logs/summary.md" ] || problem "no summary table at $logs/summary.md"
[ "${KEEP:-0}" = 1 ] && echo "rehearsal: the copy is kept at $copy" || rm -rf "$(dirname "$copy")"
echo "rehearsal: $([ $fail = 0 ] && echo passed || echo FAILED) in $((SECONDS - t0)) s"
exit $fail
