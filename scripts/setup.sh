#!/usr/bin/env bash
# Set up a fresh Linux machine (Python >= 3.10): a virtual environment in .venv
# with torch, SAM 2 and this project (editable, with the test tools).
# Usage:  bash scripts/setup.sh            (then: .venv/bin/python -m ...)
# Env:    PYTHON=python3.11   TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PY=.venv/bin/python
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

# 1. torch first: sam2 builds against it. Skipped when a torch is already there.
"$PY" -c "import torch, torchvision" 2>/dev/null || pip_install $TORCH_SPEC
# 2. SAM 2 ships no wheel; build it against the torch above, without its optional CUDA op.
#    PyPI's 'sam2' is a third party's upload: only the sdist with the pinned hash is accepted,
#    and the installed files must be Meta's (commit 2b90b9f), else set-up stops here.
pip_install setuptools wheel
if ! "$PY" scripts/verify_sam2.py >/dev/null 2>&1; then
  SAM2_BUILD_CUDA=0 pip_install --force-reinstall --no-deps --no-build-isolation \
    --require-hashes -r scripts/sam2-requirements.txt
  "$PY" scripts/verify_sam2.py
fi
# 3. This project, editable, with the test tools.
pip_install -e ".[dev]"
echo "setup done: $("$PY" -c 'import torch, transformers, sam2; print("torch", torch.__version__, "| transformers", transformers.__version__)')"
