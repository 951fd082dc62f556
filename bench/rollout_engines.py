"""Rollout engines side by side: Hugging Face `generate` (rollout=hf), vLLM in the training process
(rollout=vllm) and, with `--engines hf,vllm,vllm_server`, a vLLM server in its own process
(rollout=vllm_server; the bench starts it on 127.0.0.1 and stops it by PID).

1. Rollout stage: the same P GSM8K planner prompts x G samples x max tokens from the SmolLM2-135M planner
   (LoRA, as `model=smollm2`), each engine in turn for `--rounds` interleaved rounds; generated tokens per
   second (completion tokens up to EOS), median over rounds. vLLM's time includes loading the planner's
   weights (the per-step sync) as a separate column.
2. One full GRPO step: `src/train.py experiment=gsm8k_smollm2 rollout=<engine>` for `--steps` steps,
   the engines alternating for `--step-rounds` rounds; the per-phase times it logs (train/time/*), median
   over the steps after the first of each run.

Run from the vLLM venv (CPU ratios understate GPU ones: vLLM's paged attention and CUDA kernels are
where its lead comes from on GPUs):

    .venv-vllm/bin/python bench/rollout_engines.py [--problems 8] [--group 4] [--max-tokens 128]

Ratios are against HF (`ratio_tokens_per_s` / `ratio_step_time`: > 1 means faster than HF).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VLLM_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
}


@contextlib.contextmanager
def rollout_server(args):
    """`planlift.executors.serve --rollouts` on the SmolLM2 base (the LoRA planner's) on a free port."""
    if "vllm_server" not in args.engines:
        yield None
        return
    from tests.executors.conftest import serving
    from tests.test_configs import compose_with

    from planlift.models.loading import locate_checkpoint

    cfg = compose_with(["experiment=gsm8k_smollm2"], Path(tempfile.mkdtemp()))
    checkpoint = str(locate_checkpoint(cfg.model.pretrained, "model.pretrained"))
    log_path = Path(tempfile.mkdtemp()) / "server.log"
    with serving(checkpoint, ["--rollouts"], log_path, threads=args.threads, timeout_s=900) as base:
        yield base


def make_engine(name: str, server: str | None):
    from planlift.grpo.engines import HFEngine
    from planlift.grpo.vllm_engine import VLLMEngine
    from planlift.grpo.vllm_server import VLLMServerEngine

    if name == "hf":
        return HFEngine()
    if name == "vllm":
        return VLLMEngine(seed=0)
    return VLLMServerEngine(server)


def rollout_stage(args, server: str | None) -> dict:
    import hydra
    import torch
    from tests.test_configs import compose_with

    from planlift import runtime
    from planlift.grpo.rollout import sample_rollout
    from planlift.models import load_policy

    runtime.configure_threads(args.threads)
    cfg = compose_with(["experiment=gsm8k_smollm2"], Path(tempfile.mkdtemp()))
    task = hydra.utils.instantiate(cfg.task)
    policy = load_policy(**{k: v for k, v in cfg.model.items() if k != "_target_"})
    problems = list(task.problems("train"))[: args.problems]
    engines = {name: make_engine(name, server) for name in args.engines}
    times: dict[str, list[float]] = {name: [] for name in engines}
    tokens: dict[str, list[int]] = {name: [] for name in engines}
    syncs: dict[str, list[float]] = {name: [] for name in engines}
    for round_ in range(args.rounds + 1):  # round 0 warms every engine up (start, first kernels)
        for name, engine in engines.items():
            if engine.holds_weights:
                start = time.perf_counter()
                engine.load_weights(policy)
                if round_:
                    syncs[name].append(time.perf_counter() - start)
            torch.manual_seed(round_)
            start = time.perf_counter()
            rollout = sample_rollout(
                policy,
                task,
                problems,
                args.group,
                temperature=0.7,
                max_new_tokens=args.max_tokens,
                engine=engine,
                seed=round_,
            )
            if round_:
                times[name].append(time.perf_counter() - start)
                tokens[name].append(int(rollout.completion_mask.sum()))
    out = {}
    for name in engines:
        rate = [t / s for t, s in zip(tokens[name], times[name], strict=True)]
        out[name] = {"tokens_per_s": statistics.median(rate), "seconds": statistics.median(times[name])}
        if syncs[name]:
            out[name]["sync_seconds"] = statistics.median(syncs[name])
    for name in engines:
        if name != "hf" and "hf" in out:
            out[name]["ratio_tokens_per_s"] = out[name]["tokens_per_s"] / out["hf"]["tokens_per_s"]
    return out


def grpo_step(args, server: str | None) -> dict:
    from tbparse import SummaryReader

    steps: dict[str, dict[str, list[float]]] = {name: {} for name in args.engines}
    for round_, engine in [(r, e) for r in range(args.step_rounds) for e in args.engines]:
        run_dir = Path(tempfile.mkdtemp()) / f"{engine}{round_}"
        command = [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            "experiment=gsm8k_smollm2",
            f"rollout={engine}",
            f"trainer.max_steps={args.steps}",
            "trainer.val_check_interval=100000",
            "validate_before_training=false",
            f"algorithm.num_generations={args.group}",
            f"algorithm.max_new_tokens={args.max_tokens}",
            f"torch_threads={args.threads}",
            "callbacks.rich_progress_bar=null",
            f"hydra.run.dir={run_dir}",
            *([f"rollout.base_url={server}"] if engine == "vllm_server" else []),
        ]
        subprocess.run(command, check=True, env={**os.environ, **VLLM_ENV}, cwd=ROOT, capture_output=True)
        frame = SummaryReader(str(run_dir / "tensorboard")).scalars
        for tag, group in frame[frame.tag.str.startswith("train/time/")].groupby("tag"):
            values = [v for s, v in zip(group.step, group.value, strict=True) if s > 0]  # step 0 warms up
            steps[engine].setdefault(tag.removeprefix("train/time/"), []).extend(values)
    out = {}
    for engine, phases in steps.items():
        out[engine] = {phase: statistics.median(values) for phase, values in phases.items()}
        out[engine]["step"] = sum(out[engine].values())
    for engine in args.engines:
        if engine != "hf" and "hf" in out:
            out[engine]["ratio_step_time"] = out["hf"]["step"] / out[engine]["step"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--step-rounds", type=int, default=2)
    parser.add_argument("--only", choices=["rollout", "step"], help="one of the two parts")
    parser.add_argument("--engines", default="hf,vllm", help="comma-separated: hf, vllm, vllm_server")
    args = parser.parse_args()
    args.engines = args.engines.split(",")
    if unknown := set(args.engines) - {"hf", "vllm", "vllm_server"}:
        parser.error(f"unknown engines {sorted(unknown)}")
    os.environ.update(VLLM_ENV)
    sys.path.insert(0, str(ROOT))
    result = {"settings": vars(args)}
    with rollout_server(args) as server:
        if args.only != "step":
            result["rollout_stage"] = rollout_stage(args, server)
        if args.only != "rollout":
            result["grpo_step"] = grpo_step(args, server)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
