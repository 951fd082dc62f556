"""Rollout engines side by side: Hugging Face `generate` (rollout=hf) vs vLLM (rollout=vllm).

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
"""

from __future__ import annotations

import argparse
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


def rollout_stage(args) -> dict:
    import hydra
    import torch
    from tests.test_configs import compose_with

    from planlift import runtime
    from planlift.grpo.engines import HFEngine
    from planlift.grpo.rollout import sample_rollout
    from planlift.grpo.vllm_engine import VLLMEngine
    from planlift.models import load_policy

    runtime.configure_threads(args.threads)
    cfg = compose_with(["experiment=gsm8k_smollm2"], Path(tempfile.mkdtemp()))
    task = hydra.utils.instantiate(cfg.task)
    policy = load_policy(**{k: v for k, v in cfg.model.items() if k != "_target_"})
    problems = list(task.problems("train"))[: args.problems]
    engines = {"hf": HFEngine(), "vllm": VLLMEngine(seed=0)}
    times: dict[str, list[float]] = {name: [] for name in engines}
    tokens: dict[str, list[int]] = {name: [] for name in engines}
    syncs: list[float] = []
    for round_ in range(args.rounds + 1):  # round 0 warms both up (engine start, first kernels)
        for name, engine in engines.items():
            if name == "vllm":
                start = time.perf_counter()
                engine.load_weights(policy)
                if round_:
                    syncs.append(time.perf_counter() - start)
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
    out["vllm"]["sync_seconds"] = statistics.median(syncs)
    out["ratio_tokens_per_s"] = out["vllm"]["tokens_per_s"] / out["hf"]["tokens_per_s"]
    return out


def grpo_step(args) -> dict:
    from tbparse import SummaryReader

    steps: dict[str, dict[str, list[float]]] = {"hf": {}, "vllm": {}}
    for round_, engine in [(r, e) for r in range(args.step_rounds) for e in ("hf", "vllm")]:
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
    out["ratio_step_time"] = out["hf"]["step"] / out["vllm"]["step"]
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
    args = parser.parse_args()
    os.environ.update(VLLM_ENV)
    sys.path.insert(0, str(ROOT))
    result = {"settings": vars(args)}
    if args.only != "step":
        result["rollout_stage"] = rollout_stage(args)
    if args.only != "rollout":
        result["grpo_step"] = grpo_step(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
