#!/usr/bin/env bash
# The GPU check: what a session with a lent GPU machine runs, in one call (docs/scale-out.md). That machine
# is bare and offline: python3.12 with a CUDA torch, transformers, pytorch-lightning, peft, ... but no
# hydra/omegaconf/math-verify/bitsandbytes and no planlift. `make gpu-wheels` puts the missing wheels in the
# git-ignored gpu_wheels/ here; the device tool carries that folder; this script installs them with
# `pip install --no-index --no-deps --target` into a temporary folder and runs with that folder and src/ on
# PYTHONPATH (no network, no editable install).
#
# Usage: bash scripts/gpu_check.sh [--cpu-dry-run] [OUT_DIR]      (default: $OUT, else outputs/gpu_check)
#   --cpu-dry-run  the same install, PYTHONPATH and version report, then a 2-step CPU run (debug=fast
#                  hardware=cpu) through it; no CUDA check (this is what the slow test runs without a GPU)
# Checks, in order, each bounded by `timeout` and all by GPU_CHECK_BUDGET_S (default 350 s, the script
# must finish within 6 minutes; the last 150 s are kept for the learning run): CUDA smoke test (bf16 matmul, bitsandbytes 4-bit), hardware=gpu,
# hardware=fsdp on 1 device, hardware=qlora4bit on the GPU, hardware=ddp (only with 2+ GPUs), the default
# learning configuration on the GPU (150 GRPO steps from the tiny bootstrap gpu_wheels/bootstrap carries,
# else trained first); if vLLM imports: executor=vllm, rollout=vllm (weight sync, mismatch) and the shared
# planner/executor engine with a LoRA planner.
# Writes to OUT: summary.txt (install, versions, then one line per check: rc, seconds, step-0 and final
# val/e2e_acc from the run summary table, peak GPU memory, bootstrap cached/built; for the learning run and
# the vLLM checks a line of step time / weight sync / log-prob mismatch from its events), versions.txt,
# <check>.log and <check>/ (Hydra config, TensorBoard events; checkpoints stay behind). Exit status 1 when
# a check failed or timed out.
# Environment: PYTHON (default python3), GPU_WHEELS_DIR (default gpu_wheels), PLANLIFT_CACHE (default: a
# temporary folder), PLANLIFT_BOOTSTRAP_CACHE (default: its bootstrap/), GPU_CHECK_BUDGET_S.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DRY_RUN=0
OUT_ARG=
for arg in "$@"; do
  case $arg in
    --cpu-dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) OUT_ARG=$arg ;;
  esac
done
START=$(date +%s)
DEADLINE=$((START + ${GPU_CHECK_BUDGET_S:-350}))
RESERVE_S=0  # seconds of the budget the checks before the learning run leave to it
OUT=${OUT_ARG:-${OUT:-outputs/gpu_check}}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
PY=${PYTHON:-python3}
WHEELS=${GPU_WHEELS_DIR:-gpu_wheels}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
SAMPLER_PID= PEAK=
pack_out() {  # the device tool brings back at most 8 files from $OUT: all but these two go in one archive
  local items=() path
  for path in "$OUT"/*; do
    case ${path##*/} in summary.txt | versions.txt | checks.tar.gz | "*") ;; *) items+=("${path##*/}") ;; esac
  done
  if ((${#items[@]})) && tar -czf "$OUT/checks.tar.gz" -C "$OUT" "${items[@]}"; then
    (cd "$OUT" && rm -rf "${items[@]}")
  fi
}
cleanup() {
  if [[ -n $SAMPLER_PID ]]; then kill "$SAMPLER_PID" 2>/dev/null; fi
  pack_out
  rm -rf "$WORK"
}
trap cleanup EXIT
export PLANLIFT_CACHE=${PLANLIFT_CACHE:-$WORK/cache}
# the bootstraps' folder, told to conf/paths (which reads this variable) rather than guessed from its default
export PLANLIFT_BOOTSTRAP_CACHE=${PLANLIFT_BOOTSTRAP_CACHE:-$PLANLIFT_CACHE/bootstrap}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
note() { echo "$*" | tee -a "$SUMMARY"; }

# 1. The wheels: "core" ones always, "fill" ones (gpu_wheels/manifest.txt) only where this python lacks
#    the package, so the machine's own copies of its dependencies are kept.
SITE=$WORK/site
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  mapfile -t selected < <("$PY" - "$WHEELS" <<'PYEOF'
import importlib.metadata as md
import os
import re
import sys

folder = sys.argv[1]
roles = {}
if os.path.exists(os.path.join(folder, "manifest.txt")):
    for line in open(os.path.join(folder, "manifest.txt")):
        if line.split():
            name, _version, role = line.split()
            roles[name] = role
for wheel in sorted(f for f in os.listdir(folder) if f.endswith(".whl")):
    name = re.sub(r"[-_.]+", "_", wheel.split("-")[0]).lower()
    if roles.get(name) == "fill":
        try:
            print(f"# {name}: this python has {md.version(name)}; its wheel is not installed", file=sys.stderr)
            continue
        except md.PackageNotFoundError:
            pass
    print(os.path.join(folder, wheel))
PYEOF
  )
  echo "installing ${#selected[@]} wheels from $WHEELS into $SITE"
  if "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --disable-pip-version-check --no-compile \
      --target "$SITE" "${selected[@]}" || { note "install rc=$? (pip install of the wheels failed)"; exit 1; }
  else  # no pip: a wheel is a zip of its import tree and .dist-info
    echo "no pip for $PY: unpacking the wheels"
    for whl in "${selected[@]}"; do "$PY" -m zipfile -e "$whl" "$SITE" || exit 1; done
  fi
  export PYTHONPATH=$SITE:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
  note "install rc=0 wheels=${#selected[@]} from $WHEELS (pip install --no-index --no-deps --target)"
else
  note "install none: no wheels in $WHEELS, running on this python's own packages"
  export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
fi
echo "PYTHONPATH=$PYTHONPATH"
# The tiny bootstrap `make gpu-wheels` packed (WHEELS/bootstrap/<key>/, the learning run's): into the cache,
# so that run starts from the CPU reference's weights; the debug=fast checks train their own here.
if compgen -G "$WHEELS/bootstrap/*/metrics.json" >/dev/null; then
  BOOTSTRAPS=$PLANLIFT_BOOTSTRAP_CACHE
  mkdir -p "$BOOTSTRAPS"
  keys=()
  for dir in "$WHEELS"/bootstrap/*/; do
    key=$(basename "$dir") && keys+=("$key")
    [[ -e $BOOTSTRAPS/$key ]] || cp -r "$dir" "$BOOTSTRAPS/$key"
  done
  # its step-0 accuracy as measured where it was packed (the CPU's vector kernels decide the warm start)
  built=$(timeout --kill-after=5 20 "$PY" - "$WHEELS"/bootstrap/*/metrics.json 2>&1 <<'PYEOF'
import json, sys
for path in sys.argv[1:]:
    metrics = json.load(open(path))
    built = metrics.get("built_with") or {}
    devices = "+".join(built.get("devices") or ["?"])
    print(f"planner_executor={metrics.get('planner_executor')} built_on={devices}/{built.get('cpu_capability', '?')}")
PYEOF
  )
  note "bootstrap carried=${keys[*]} into $BOOTSTRAPS (${built//$'\n'/; })"
fi

# 2. What it runs with (module locations show which copy: the wheels' folder or the machine's).
timeout --kill-after=5 60 "$PY" - "$SUMMARY" >"$OUT/versions.txt" 2>&1 <<'PYEOF'
import importlib.metadata as md
import importlib.util
import platform
import sys

dists = [
    ("torch", "torch"), ("transformers", "transformers"), ("pytorch-lightning", "pytorch_lightning"),
    ("lightning-utilities", "lightning_utilities"), ("torchmetrics", "torchmetrics"), ("peft", "peft"),
    ("accelerate", "accelerate"), ("tokenizers", "tokenizers"), ("hydra-core", "hydra"),
    ("omegaconf", "omegaconf"), ("antlr4-python3-runtime", "antlr4"), ("bitsandbytes", "bitsandbytes"),
    ("math-verify", "math_verify"), ("latex2sympy2_extended", "latex2sympy2_extended"),
    ("text2num", "text_to_num"), ("roman", "roman"),
    ("submitit", "submitit"), ("hydra-submitit-launcher", "hydra_plugins.hydra_submitit_launcher"),
    ("filelock", "filelock"), ("requests", "requests"), ("tbparse", "tbparse"), ("gguf", "gguf"),
    ("vllm", "vllm"), ("planlift", "planlift"),
]
print("python", platform.python_version(), sys.executable)
short = {}
for dist, module in dists:
    try:
        version = md.version(dist)
    except md.PackageNotFoundError:
        version = "-"
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    print(f"{dist:24} {version:20} {spec.origin if spec else 'NOT IMPORTABLE'}")
    short[dist] = version if spec else "missing"
import torch  # noqa: E402

cuda = torch.cuda.is_available()
gpus = torch.cuda.device_count() if cuda else 0
gpu = torch.cuda.get_device_name(0) if cuda else "none"
print("torch.version.cuda", torch.version.cuda, "cuda available", cuda, "gpus", gpus, "gpu", gpu)
keys = ["torch", "transformers", "pytorch-lightning", "hydra-core", "omegaconf", "bitsandbytes", "math-verify"]
line = " ".join(f"{k}={short[k]}" for k in keys)
with open(sys.argv[1], "a") as f:
    f.write(f"versions python={platform.python_version()} cuda={torch.version.cuda} {line} gpus={gpus} gpu={gpu!r}\n")
PYEOF
rc=$?
cat "$OUT/versions.txt"
if ((rc != 0)); then note "versions rc=$rc (see versions.txt)"; exit 1; fi
if grep -q "NOT IMPORTABLE" <(grep -E "^(hydra-core|omegaconf|math-verify|planlift) " "$OUT/versions.txt"); then
  note "imports rc=1: a package train.py needs is missing (versions.txt)"
  exit 1
fi

# 3. The checks. One summary line each: name, rc, seconds, step-0 and final val/e2e_acc, peak GPU memory.
peak_sampler_start() {
  : >"$WORK/mem"
  if ((DRY_RUN == 0)) && command -v nvidia-smi >/dev/null; then
    # one nvidia-smi per sample: each exits, so its line is written whatever the kill finds buffered
    while :; do
      nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null
      sleep 0.5
    done >>"$WORK/mem" &
    SAMPLER_PID=$!
  fi
}
peak_sampler_stop() {  # PEAK: the largest memory.used any GPU showed during the check (all its processes)
  if [[ -n $SAMPLER_PID ]]; then kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null; fi
  SAMPLER_PID=
  PEAK=$(awk '$1 ~ /^[0-9]+$/ && $1 + 0 > m + 0 {m = $1} END {if (m != "") print m "MiB"}' "$WORK/mem")
}
budget_for() {  # a check's own limit, cut to what is left of the script's budget (less RESERVE_S)
  local left=$((DEADLINE - RESERVE_S - $(date +%s)))
  ((left < $1)) && echo "$left" || echo "$1"
}
record() {  # name rc seconds log peak args...
  local name=$1 rc=$2 seconds=$3 log=$4 peak=$5
  shift 5
  local step0 final
  read -r step0 final < <(awk '$1 == "val/e2e_acc" && NF >= 3 {s = $2; f = $3} END {print s, f}' "$log")
  local metric="val/e2e_acc=no metric"
  if [[ -n $final && $final != "-" ]]; then metric="val/e2e_acc step0=${step0} final=${final}"; fi
  local status=$rc boot=
  ((rc == 124 || rc == 137)) && status="$rc(timeout)"
  if grep -q "bootstrap: using cached models" "$log"; then boot=" bootstrap=cached"
  elif grep -q "bootstrap: training tiny" "$log"; then boot=" bootstrap=built"; fi
  note "$name rc=$status seconds=$seconds $metric peak_gpu_mem=${peak:-n/a}$boot args: $*"
}
check() {  # name limit_s overrides... : one src/train.py run
  local name=$1 limit
  limit=$(budget_for "$2")
  shift 2
  if ((limit < 20)); then note "$name rc=skipped(budget) seconds=0 (time budget spent) args: $*"; return; fi
  local run=$WORK/runs/$name start rc
  start=$(date +%s)
  peak_sampler_start
  timeout --kill-after=10 "$limit" "$PY" src/train.py callbacks.rich_progress_bar=null hydra.run.dir="$run" \
    "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  peak_sampler_stop
  record "$name" "$rc" "$(($(date +%s) - start))" "$OUT/$name.log" "$PEAK" "$@"
  mkdir -p "$OUT/$name"  # the small outputs come back; checkpoints and exports stay behind
  cp "$run"/.hydra/{config,overrides}.yaml "$OUT/$name/" 2>/dev/null
  find "$run" -name "events.out.tfevents.*" -exec cp {} "$OUT/$name/" \; 2>/dev/null
}

rollout_numbers() {  # name: step time (all train/time/* phases), weight-sync time, rollout-training mismatch,
  # and val/e2e_acc at its first and last validation (there even when the run was cut before its summary)
  timeout --kill-after=5 60 "$PY" - "$WORK/runs/$1" <<'PY' | sed "s/^/$1 /" | tee -a "$SUMMARY"
import collections, glob, os, statistics, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
files = glob.glob(f"{sys.argv[1]}/**/events.out.tfevents.*", recursive=True)
if not files:
    print("no events"); raise SystemExit
events = EventAccumulator(os.path.dirname(files[0]), size_guidance={"scalars": 0})  # every file of the run
events.Reload()
tags = events.Tags()["scalars"]
def values(tag):
    return [e.value for e in events.Scalars(tag)] if tag in tags else []
per_step = collections.defaultdict(float)
for tag in (t for t in tags if t.startswith("train/time/")):
    for e in events.Scalars(tag):
        per_step[e.step] += e.value
fmt = lambda v: f"{statistics.median(v):.3g}" if v else "n/a"
acc = events.Scalars("val/e2e_acc") if "val/e2e_acc" in tags else []
ends = f"first@{acc[0].step}={acc[0].value:.3f} last@{acc[-1].step}={acc[-1].value:.3f}" if acc else "n/a"
print(f"step_s={fmt(list(per_step.values()))} weight_sync_s={fmt(values('train/time/weight_sync'))}"
      f" logprob_abs_diff_mean={fmt(values('train/rollout/logprob_abs_diff_mean'))}"
      f" logprob_abs_diff_max={max(values('train/rollout/logprob_abs_diff_max') or [float('nan')]):.3g}"
      f" val/e2e_acc {ends}")
PY
}
if ((DRY_RUN)); then
  check cpu_dry_run 240 debug=fast hardware=cpu torch_threads=1 trainer.max_steps=2
  rollout_numbers cpu_dry_run
  echo "total seconds $(($(date +%s) - START))" | tee -a "$SUMMARY"
  rc=$(awk '$1 == "cpu_dry_run" && $2 ~ /^rc=/ {sub("rc=", "", $2); print $2}' "$SUMMARY")
  [[ $rc == 0 ]]
  exit
fi

start=$(date +%s)
peak_sampler_start
RESERVE_S=150  # the learning run's limit, kept for it whatever the checks before it take
timeout --kill-after=5 "$(budget_for 45)" "$PY" - >"$OUT/cuda_smoke.log" 2>&1 <<'PYEOF'
import sys

import torch

ok = torch.cuda.is_available()
print("cuda available", ok, "devices", torch.cuda.device_count())
if not ok:
    sys.exit(1)
print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
bf16 = torch.cuda.is_bf16_supported()
a, b = torch.randn(1024, 1024, device="cuda"), torch.randn(1024, 1024, device="cuda")
ref = a @ b
err = ((a.bfloat16() @ b.bfloat16()).float() - ref).abs().max().item() / ref.abs().max().item()
torch.cuda.synchronize()
print(f"bf16 supported {bf16}; bf16 matmul max relative error {err:.4f}")
matmul_ok = err < 0.05
try:
    import bitsandbytes.functional as F

    w = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
    q, state = F.quantize_4bit(w, quant_type="nf4")
    back = F.dequantize_4bit(q, state)
    bnb_err = ((back - w).abs().mean() / w.abs().mean()).item()
    print(f"bitsandbytes nf4 round trip mean relative error {bnb_err:.3f}")
    bnb_ok = bnb_err < 0.2
except Exception as exc:
    print("bitsandbytes failed:", repr(exc))
    bnb_ok = False
print(f"SMOKE bf16={'yes' if bf16 else 'no'} matmul={'ok' if matmul_ok else 'bad'} bnb4bit={'ok' if bnb_ok else 'bad'}")
print("max_memory_allocated MiB", torch.cuda.max_memory_allocated() // 2**20)
sys.exit(0 if bf16 and matmul_ok and bnb_ok else 1)
PYEOF
rc=$?
peak_sampler_stop
smoke=$(grep -o "SMOKE .*" "$OUT/cuda_smoke.log" | sed 's/^SMOKE //')
note "cuda_smoke rc=$rc seconds=$(($(date +%s) - start)) ${smoke:-no result (cuda_smoke.log)} peak_gpu_mem=${PEAK:-n/a}"
GPUS=$(grep -o "devices [0-9]*" "$OUT/cuda_smoke.log" | awk '{print $2}')

check gpu 75 debug=fast torch_threads=4 hardware=gpu
check fsdp 75 debug=fast torch_threads=4 hardware=fsdp trainer.devices=1   # FSDP2 sharding, a mesh of 1
check qlora4bit 75 debug=fast torch_threads=4 hardware=qlora4bit trainer.accelerator=gpu
if ((${GPUS:-0} > 1)); then
  check ddp 120 debug=fast torch_threads=4 hardware=ddp trainer.devices="$GPUS"
fi
RESERVE_S=0
check default_config 150 hardware=gpu   # the learning run: the carried tiny bootstrap, 150 GRPO steps
rollout_numbers default_config
# the same run on this project's 2-core CPU box (torch 2.13 CPU build, and the lent machine's torch 2.11 /
# transformers 5.17 in .venv-twin: identical numbers), to read the line above against; its step 0 depends
# on the kernels the carried bootstrap was trained with (the `bootstrap carried` line: AVX2 or AVX512)
note "default_config cpu_reference (2 CPU cores, 2026-12-01): val/e2e_acc step0=0.155 final=0.295 step_s=0.437 with AVX2 kernels; step0=0.120 final=0.295 step_s=0.458 with AVX512"
if timeout 60 "$PY" -c "import vllm" 2>/dev/null; then
  check vllm 90 debug=fast hardware=gpu executor=vllm executor.dtype=bfloat16 executor.gpu_memory_utilization=0.3
  # planner rollouts through vLLM: full-weight sync, then a LoRA planner sharing one engine with the executor
  check vllm_rollouts 90 debug=fast hardware=gpu rollout=vllm rollout.gpu_memory_utilization=0.2
  rollout_numbers vllm_rollouts
  check vllm_shared_lora 90 debug=fast hardware=gpu rollout=vllm rollout.share_with_executor=true \
    executor=vllm executor.pretrained=bootstrap:planner executor.dtype=bfloat16 "model.lora={r:8,alpha:16,dropout:0.0}"
  rollout_numbers vllm_shared_lora
else
  note "vllm rc=skipped (vLLM is not installed here: the vLLM executor and planner rollouts on GPU stay unverified)"
fi
timeout 20 nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/nvidia-smi /' |
  tee -a "$SUMMARY"
echo "total seconds $(($(date +%s) - START))" | tee -a "$SUMMARY"
# the exit status: 1 when any check failed, timed out or found no time left (vLLM's absence is not a failure)
! grep -qE "^[a-z0-9_]+ rc=([1-9]|skipped\(budget\))" "$SUMMARY"
