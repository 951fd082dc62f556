#!/usr/bin/env bash
# The GPU presets end to end on the tiny models: what a session with one CUDA GPU runs (H100/H200).
# Usage: bash scripts/gpu_check.sh [OUT_DIR]      (default: $OUT, else outputs/gpu_check)
# Needs a venv with a CUDA torch and planlift[dev] (bitsandbytes for qlora4bit; vLLM for the vllm check).
# Writes <check>.log and one line per check to summary.txt: rc, seconds, final val/e2e_acc, peak memory.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-outputs/gpu_check}}
mkdir -p "$OUT"
PY=${PYTHON:-python}
export PLANLIFT_CACHE=${PLANLIFT_CACHE:-$OUT/cache} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
$PY - <<'PYEOF' | tee "$OUT/summary.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0))
PYEOF

check() {
  local name=$1; shift
  local start=$(date +%s)
  timeout 600 $PY src/train.py debug=fast torch_threads=4 callbacks.rich_progress_bar=null \
    hydra.run.dir="$OUT/$name" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local acc=$(grep -o "val/e2e_acc = [0-9.]*" "$OUT/$name.log" | tail -1)
  echo "$name rc=$rc seconds=$(( $(date +%s) - start )) ${acc:-no metric} args: $*" | tee -a "$OUT/summary.txt"
}

check gpu hardware=gpu
check fsdp hardware=fsdp trainer.devices=1          # FSDP2 sharding on one GPU (mesh of 1)
check qlora4bit hardware=qlora4bit trainer.accelerator=gpu
if $PY -c "import vllm" 2>/dev/null; then
  check vllm hardware=gpu executor=vllm executor.dtype=bfloat16 executor.gpu_memory_utilization=0.3
fi
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv | tee -a "$OUT/summary.txt"
