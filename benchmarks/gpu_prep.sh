#!/usr/bin/env bash
# Run HERE (a machine with pip's index), before benchmarks/gpu_check.sh runs on the lent GPU
# machine, which has torch, torchvision, transformers, timm and pytest but no internet, no sam2,
# hydra-core, omegaconf, antlr4 or iopath, and not this project. It fills two ignored paths that
# the device tool's `carry` takes along:
#
#   .gpu_wheels/               pure-Python wheels: sam2 1.1.0 (built here from the hash-pinned sdist
#                              with SAM2_BUILD_CUDA=0, then checked against Meta's files), hydra-core,
#                              omegaconf, antlr4-python3-runtime 4.9.3, iopath
#   .data/cifar10-jpeg.tar.gz  CIFAR-10 as JPEGs (19 MB), from ../shared/data
#
# The project itself travels as the working tree: gpu_check.sh puts the repo root on PYTHONPATH
# (no wheel of it, so what runs there is exactly what is checked out here).
#
#   bash benchmarks/gpu_prep.sh       then give the device tool the carry list and command it prints
#
# Env: PREP_PY (a python with torch + setuptools, to build sam2 without build isolation; default
#      .venv/bin/python, else python3), SHARED (default ../shared), WHEELS (default .gpu_wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PREP_PY=${PREP_PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
SHARED=${SHARED:-../shared}
WHEELS=${WHEELS:-.gpu_wheels}
# Versions as in the dev venv; all ship (or build to) py3-none-any wheels.
PURE=("hydra-core==1.3.8" "omegaconf==2.3.1" "antlr4-python3-runtime==4.9.3" "iopath==0.1.10")

pip_() { "$PREP_PY" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v '^WARNING: Location' >&2); }
mkdir -p "$WHEELS" .data
if ! ls "$WHEELS"/sam2-1.1.0-py3-none-any.whl >/dev/null 2>&1; then
  # --no-cache-dir: build from the sdist whose hash is pinned, not from a wheel cached earlier
  SAM2_BUILD_CUDA=0 pip_ wheel --no-cache-dir --no-deps --no-build-isolation --require-hashes \
    -r scripts/sam2-requirements.txt -w "$WHEELS"
fi
pip_ wheel --no-deps -w "$WHEELS" "${PURE[@]}"
bad=$(ls "$WHEELS"/*.whl | grep -v -- '-py3-none-any\.whl$' || true)
if [ -n "$bad" ]; then
  echo "gpu_prep: not pure-Python wheels (they would not install on Python 3.12 there): $bad" >&2
  exit 1
fi
check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
pip_ install --no-index --no-deps --no-compile --target "$check" "$WHEELS"/sam2-1.1.0-py3-none-any.whl
"$PREP_PY" scripts/verify_sam2.py --site "$check"  # Meta's files, or stop here

if [ ! -f .data/cifar10-jpeg.tar.gz ]; then
  if [ -f "$SHARED/data/cifar10-jpeg.tar.gz" ]; then
    cp "$SHARED/data/cifar10-jpeg.tar.gz" .data/
  else
    echo "gpu_prep: no $SHARED/data/cifar10-jpeg.tar.gz; gpu_check.sh will skip time-to-accuracy" >&2
  fi
fi
size=$(du -cm "$WHEELS" .data/cifar10-jpeg.tar.gz 2>/dev/null | tail -n1 | cut -f1)
echo "gpu_prep: $(ls "$WHEELS" | wc -l) wheels in $WHEELS, $size MiB to carry (limit 64 MiB with the tree)"
echo 'carry: [".gpu_wheels", ".data/cifar10-jpeg.tar.gz"]'
echo 'command: bash benchmarks/gpu_check.sh'
echo 'timeout_s: 600'
