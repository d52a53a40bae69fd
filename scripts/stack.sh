#!/usr/bin/env bash
# Build a virtual environment that holds one of the stacks our users really have, for CI.
#
#   bash scripts/stack.sh colab          # .venv-colab: Colab's GPU runtime (constraints/colab.txt)
#   bash scripts/stack.sh gpu-machine    # .venv-gpu: the lent GPU machine's, bare (constraints/gpu-machine.txt)
#
# colab: Python 3.13 as on Colab (pyenv's, when this machine has it), every version pinned by
#   constraints/colab.txt; then what q2's set-up cell adds on Colab (SAM 2 with hydra-core and
#   iopath, ipyevents, av) and this project with --no-deps, as the notebooks install it; then
#   the test tools Colab lacks (selenium; notebook and widgetsnbextension, at Colab's pins, serve
#   the browser test's page; pytest-xdist, CI's two workers) and the export extra (onnx), same
#   constraints.
# gpu-machine: Python 3.12 as there; torch, torchvision, transformers, timm, pytest and the
#   machine's other packages, and nothing it lacks (no sam2, hydra, omegaconf, iopath, nbclient,
#   ipywidgets, av); the project is not installed. benchmarks/gpu_prep.sh carries the rest.
# The venv is rebuilt only when this script or the constraints change (a stamp file records them).
set -euo pipefail
cd "$(dirname "$0")/.."
stack=${1:?usage: bash scripts/stack.sh colab|gpu-machine}

pick_python() {  # pick_python 3.13: that minor version from PATH or pyenv, else python3
  local want=$1 candidate
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want".*/bin/python"$want" "python$want"; do
    # a pyenv shim answers for a version it does not select: run it to be sure
    if "$candidate" -c "import venv" >/dev/null 2>&1; then command -v "$candidate"; return; fi
  done
  echo "stack $stack: no Python $want on this machine; using $(python3 --version) instead" >&2
  command -v python3
}

case "$stack" in
  colab) venv=.venv-colab; python=$(pick_python 3.13); constraints=constraints/colab.txt ;;
  gpu-machine) venv=.venv-gpu; python=$(pick_python 3.12); constraints=constraints/gpu-machine.txt ;;
  *) echo "stack.sh: unknown stack '$stack' (colab or gpu-machine)" >&2; exit 2 ;;
esac
stamp="$venv/.stack-stamp"
want_stamp=$(cat "$0" "$constraints" scripts/sam2-requirements.txt | sha256sum | cut -c1-16)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want_stamp" ]; then
  echo "stack $stack: $venv is up to date"
  exit 0
fi
rm -rf "$venv"
"$python" -m venv "$venv"
PY=$venv/bin/python
pip_install() { "$PY" -m pip install --disable-pip-version-check -q -c "$constraints" "$@"; }
pip_install --upgrade pip

if [ "$stack" = colab ]; then
  # Colab's own packages, at Colab's versions (the notebooks and tests import these).
  pip_install torch torchvision transformers numpy pillow matplotlib scikit-learn tqdm \
    ipywidgets ipyevents omegaconf nbclient nbformat ipykernel pytest setuptools wheel pycocotools
  # What q2's set-up cell installs on Colab: SAM 2 (its own dependencies hydra-core and iopath
  # included) built with SAM2_BUILD_CUDA=0, then ipyevents and av, then this package --no-deps.
  pip_install hydra-core iopath av
  SAM2_BUILD_CUDA=0 pip_install --no-deps --no-build-isolation --require-hashes -r scripts/sam2-requirements.txt
  "$PY" scripts/verify_sam2.py
  pip_install --no-deps -e .
  # Test tools: the browser test drives the UI in Debian's chromium through selenium, served by
  # the classic Notebook server whose widgetsnbextension draws ipywidgets 7 (Voila 0.5 cannot,
  # Voila 0.4 needs nbclient < 0.8); both at Colab's pins. pytest-xdist runs CI's two test
  # workers. onnx for `vitcifar export` (users add it on Colab when they export).
  pip_install notebook widgetsnbextension selenium pytest-xdist onnx onnxscript onnxruntime
  # The classic notebook's frontends of the widgets: ipywidgets' own (widgetsnbextension), and
  # ipyevents', whose wheel ships only JupyterLab's (Colab draws both with its own frontend).
  for ext in widgetsnbextension ipyevents; do
    for verb in install enable; do  # quiet, unless it fails
      said=$("$venv/bin/jupyter" nbextension "$verb" --py "$ext" --sys-prefix 2>&1) ||
        { echo "$said" >&2; echo "stack.sh: jupyter nbextension $verb $ext failed" >&2; exit 1; }
    done
  done
else
  pip_install torch torchvision transformers timm numpy pillow matplotlib scikit-learn tqdm \
    safetensors pyyaml portalocker narwhals cloudpickle pytest
fi
echo "$want_stamp" >"$stamp"
echo "stack $stack: $("$PY" - <<'PYEOF'
import sys, importlib.metadata as md
names = ["torch", "torchvision", "transformers", "ipywidgets", "numpy", "pillow"]
have = []
for n in names:
    try:
        have.append(f"{n} {md.version(n)}")
    except md.PackageNotFoundError:
        pass
print(f"Python {sys.version.split()[0]} | " + " | ".join(have))
PYEOF
)"
