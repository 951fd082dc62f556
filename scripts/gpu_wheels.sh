#!/usr/bin/env bash
# Wheels for a bare, offline lent GPU machine: the packages planlift needs at train time that such a machine
# lacks (it has python3.12 with torch+CUDA, transformers, pytorch-lightning, peft, accelerate, tensorboard,
# rich, safetensors, tokenizers, numpy, scipy, matplotlib, pytest). They travel inside the working tree
# (git-ignored gpu_wheels/, passed in `carry`) and scripts/gpu_check.sh installs them with
# `pip install --no-index --no-deps --target`. docs/scale-out.md has the whole procedure.
#
# Usage: bash scripts/gpu_wheels.sh [--dest DIR] [--python-version X.Y] [--bootstrap OVERRIDES] [--check]
#   --dest DIR            where the wheels go (default: $GPU_WHEELS_DIR, else gpu_wheels)
#   --python-version X.Y  the target interpreter (default 3.12: the lent machine; the slow test uses its own)
#   --bootstrap OVERRIDES the train.py overrides whose tiny bootstrap models travel too, in DIR/bootstrap/
#                         (default "hardware=gpu": the check's learning run, ~4 MB; trained here on the CPU
#                         once, ~3 min, or taken from the cache). The GPU run then starts from the same
#                         weights as the CPU reference and spends its minutes on GRPO; "" carries none
#   --check               download nothing: only the size check of the tree plus DIR
# Environment: GPU_WHEELS_LIMIT_MIB (default 64: what the device tool carries in all), PYTHON (runs pip;
# default .venv/bin/python, else python3).
#
# One pinned version per package (the versions the project venv is tested with; hydra-core 1.3 needs
# omegaconf 2.2-2.3 and antlr4 4.9.*). "core" wheels are always installed on the lent machine; "fill"
# wheels only where its python does not have the package already (they are dependencies of what it has,
# or may have, so its own copies are kept).
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=${GPU_WHEELS_DIR:-gpu_wheels}
PYVER=3.12
CHECK_ONLY=0
BOOTSTRAP=hardware=gpu
while (($#)); do
  case $1 in
    --dest) DEST=$2; shift 2 ;;
    --python-version) PYVER=$2; shift 2 ;;
    --bootstrap) BOOTSTRAP=$2; shift 2 ;;
    --check) CHECK_ONLY=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu_wheels.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
LIMIT_MIB=${GPU_WHEELS_LIMIT_MIB:-64}
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# name==version role. Binary wheels are fetched for CPython $PYVER on manylinux x86_64.
PINS=(
  "hydra-core==1.3.8 core"
  "omegaconf==2.3.1 core"
  "antlr4-python3-runtime==4.9.3 core"      # sdist only on PyPI: built here with `pip wheel`
  "hydra-submitit-launcher==1.2.0 core"     # hydra's plugin scan imports src/hydra_plugins, which needs it
  "submitit==1.5.4 core"
  "math-verify==0.9.0 core"
  "latex2sympy2_extended==1.11.0 core"
  "text2num==3.1.0 core"                    # GSM8K leak detection: numbers written in words
  "roman==5.2 core"                         # GSM8K leak detection: Roman numerals
  "bitsandbytes==0.50.2 core"               # ~43 MB, py3-none-manylinux_2_24: hardware=qlora4bit
  "tbparse==0.0.9 core"                     # src/compare.py only (its pandas is not carried)
  "gguf==0.19.0 core"                       # model=smollm2 only
  "filelock==4.3.1 fill"
  "requests==2.34.2 fill"
  "urllib3==2.8.0 fill"
  "idna==3.20 fill"
  "certifi==2026.10.19.post1 fill"
  "charset-normalizer==3.5.3 fill"
  "cloudpickle==3.1.3 fill"
  "torchmetrics==1.9.0 fill"
  "lightning-utilities==0.15.3 fill"
)
SDIST_ONLY=" antlr4-python3-runtime "

# this machine's pip config lists local file indexes that lack most names: drop those warnings
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
norm() { echo "$1" | tr 'A-Z' 'a-z' | sed -E 's/[-_.]+/_/g'; }

if ((!CHECK_ONLY)); then
  mkdir -p "$DEST"
  binary=() sdist=()
  for pin in "${PINS[@]}"; do
    spec=${pin%% *}
    if [[ $SDIST_ONLY == *" ${spec%%==*} "* ]]; then sdist+=("$spec"); else binary+=("$spec"); fi
  done
  echo "downloading ${#binary[@]} wheels for CPython $PYVER manylinux x86_64 into $DEST"
  # pip does not widen a manylinux_2_Y platform to older glibc tags: list them (bitsandbytes is 2_24)
  platforms=()
  for y in $(seq 28 -1 17); do platforms+=(--platform "manylinux_2_${y}_x86_64"); done
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --implementation cp --python-version "$PYVER" \
    "${platforms[@]}" --platform manylinux2014_x86_64 -d "$DEST" "${binary[@]}" 2> >(quiet >&2)
  for spec in "${sdist[@]}"; do
    name=$(norm "${spec%%==*}") version=${spec##*==}
    if compgen -G "$DEST/${name}-${version}-*.whl" >/dev/null; then continue; fi
    echo "building a wheel of $spec from its sdist"
    "$PYTHON" -m pip wheel -q --no-deps -w "$DEST" "$spec" 2> >(quiet >&2)
  done

  # exactly the pinned versions: drop wheels of other versions (an older run), then one wheel per pin
  : >"$DEST/manifest.txt"
  for pin in "${PINS[@]}"; do
    spec=${pin%% *} role=${pin##* }
    echo "$(norm "${spec%%==*}") ${spec##*==} $role" >>"$DEST/manifest.txt"
  done
  for whl in "$DEST"/*.whl; do
    base=$(basename "$whl")
    name=$(norm "${base%%-*}") rest=${base#*-} version=${rest%%-*}
    if ! awk -v n="$name" -v v="$version" '$1 == n && $2 == v {f = 1} END {exit !f}' "$DEST/manifest.txt"; then
      echo "removing $base (not a pinned version)"
      rm -f "$whl"
    fi
  done
  while read -r name version role; do
    n=$(compgen -G "$DEST/${name}-*.whl" | wc -l)
    if ((n != 1)); then
      echo "error: $n wheels of $name in $DEST (want exactly $name $version)" >&2
      exit 1
    fi
  done <"$DEST/manifest.txt"
fi

# The tiny bootstrap of the learning run (`--bootstrap`): its models and metrics, keyed as the cache keys
# them (the key is the bootstrap config's hash: the same on any device), without the SFT logs.
if ((!CHECK_ONLY)); then
  rm -rf "$DEST/bootstrap"
  if [[ -n $BOOTSTRAP ]]; then
    echo "packing the tiny bootstrap of: $BOOTSTRAP"
    read -r -a overrides <<<"$BOOTSTRAP"
    PROJECT_ROOT=$PWD "$PYTHON" - "$DEST/bootstrap" "${overrides[@]}" <<'PYEOF'
import os
import shutil
import sys

import hydra
from hydra import compose, initialize_config_dir

dest, overrides = sys.argv[1], sys.argv[2:]
with initialize_config_dir(config_dir=os.path.join(os.environ["PROJECT_ROOT"], "conf"), version_base="1.3"):
    cfg = compose("train", overrides=overrides)
if not cfg.get("bootstrap"):
    sys.exit(f"error: the config of {overrides} has no bootstrap node: nothing to pack")
bootstrap = hydra.utils.instantiate(cfg.bootstrap, task=hydra.utils.instantiate(cfg.task))
bootstrap.progress_bar = False
bootstrap.ensure()
shutil.copytree(bootstrap.directory, os.path.join(dest, bootstrap.key), ignore=shutil.ignore_patterns("logs"))
print(f"bootstrap {bootstrap.key} (from {bootstrap.directory}) -> {dest}")
PYEOF
  fi
fi

if ! compgen -G "$DEST/*.whl" >/dev/null; then
  echo "error: no wheels in $DEST (run: make gpu-wheels)" >&2
  exit 1
fi

# What travels to the device machine: the working tree (tracked files and untracked ones git does not
# ignore) plus the carried wheel folder, at most LIMIT_MIB in all.
git ls-files -z --cached --others --exclude-standard | "$PYTHON" -c '
import os, sys
dest, limit_mib = os.path.realpath(sys.argv[1]), float(sys.argv[2])
mib = 1024 * 1024
tree = 0
for path in map(os.fsdecode, sys.stdin.buffer.read().split(b"\0")):
    if path and os.path.isfile(path) and not os.path.realpath(path).startswith(dest + os.sep):
        tree += os.path.getsize(path)
files = [os.path.join(top, f) for top, _, names in os.walk(dest) for f in names]
wheels = sum(os.path.getsize(f) for f in files if os.path.isfile(f))
total = tree + wheels
print(f"working tree (tracked + untracked, not ignored): {tree / mib:.2f} MiB")
n_wheels = sum(f.endswith(".whl") for f in files)
boot = sum(os.path.getsize(f) for f in files if os.sep + "bootstrap" + os.sep in f[len(dest) :])
print(f"wheels ({sys.argv[1]}, {n_wheels} wheels, bootstrap {boot / mib:.2f} MiB): {wheels / mib:.2f} MiB")
print(f"total: {total / mib:.2f} MiB of {limit_mib:g} MiB")
if total > limit_mib * mib:
    print(
        f"error: the tree plus the wheels is {total / mib:.2f} MiB, over the {limit_mib:g} MiB that travel to "
        "the device machine: drop a wheel (bitsandbytes, ~43 MB, serves hardware=qlora4bit only), carry no "
        "bootstrap (--bootstrap \"\"; ~4 MB) or shrink the working tree",
        file=sys.stderr,
    )
    sys.exit(1)
' "$DEST" "$LIMIT_MIB"
