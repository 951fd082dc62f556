"""Reward-stage throughput: one grounded GRPO batch, planlift's batched scheme vs the authors' scheme.

Both score the same P x G planner completions with the same frozen tiny executor (the bootstrap's):
- authors: one sequential executor call per sample — e2e as its own call, k calls for w, and the
  no-reasoning baseline re-sampled (k calls) for every completion: G * (1 + 2k) calls per problem;
- planlift: `ExecutorGroundedReward` — one batched call for every completion's k + 1 samples, one for
  the baseline of uncached problems (then cached).
Runs are interleaved in one process and reported as ratios.

    python bench/reward_throughput.py [--problems 8] [--group 4] [--repeats 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from planlift import runtime
from planlift.executors import HFExecutor
from planlift.models import load_policy
from planlift.rewards import ExecutorGroundedReward
from planlift.rewards.formulas import grounded_reward, uplift
from planlift.rm import OracleRM, RMItem


def authors_scheme(executor, task, rm, problems, completions, group, k):
    """Sequential: per completion, e2e (1 call), w (k calls), b (k calls), RM (1 call)."""
    finals = []
    for i, completion in enumerate(completions):
        problem = problems[i // group]
        reasoning = task.extract_reasoning(completion)
        with_prompt = task.executor_prompt(problem, reasoning)
        bare_prompt = task.executor_prompt(problem, None)
        e2e = task.verify(problem, executor.generate([with_prompt], 1)[0].texts[0]).correct
        w = (
            sum(
                task.verify(problem, executor.generate([with_prompt], 1)[0].texts[0]).correct
                for _ in range(k)
            )
            / k
        )
        b = (
            sum(
                task.verify(problem, executor.generate([bare_prompt], 1)[0].texts[0]).correct
                for _ in range(k)
            )
            / k
        )
        score = rm.score([RMItem(problem, reasoning, task.name, task.task_type)])[0]
        finals.append(grounded_reward(float(e2e), score, uplift(w, b)))
    return finals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pool-e2e", action="store_true", help="e2e is the first of the k repeats")
    parser.add_argument(
        "--bootstrap", default=None, help="bootstrap directory (default: train/load conf's tiny)"
    )
    args = parser.parse_args()
    runtime.configure_threads(args.threads)
    runtime.quiet_libraries()

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(runtime.PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["bootstrap.progress_bar=false"])
    task = instantiate(cfg.task)
    directory = args.bootstrap or str(
        instantiate(
            cfg.bootstrap, task=task, cache_dir=str(runtime.PROJECT_ROOT / "outputs" / "cache" / "bootstrap")
        )
        .ensure()
        .directory
    )
    executor = HFExecutor(f"{directory}/executor", temperature=0.5, max_new_tokens=8, device="cpu")
    planner = load_policy(f"{directory}/planner")
    rm = OracleRM()

    from planlift.grpo.rollout import sample_rollout

    problems = list(task.problems("train"))[: args.problems * args.rounds]
    rows = {"planlift": [], "planlift_cached": [], "authors": []}
    generations = {}
    for r in range(args.rounds):
        batch = problems[r * args.problems : (r + 1) * args.problems]
        torch.manual_seed(r)
        completions = sample_rollout(planner, task, batch, args.group, max_new_tokens=64).texts
        reward = ExecutorGroundedReward(
            executor, task, rm=rm, repeats=args.repeats, baseline_samples=args.repeats, pool_e2e=args.pool_e2e
        )
        for name in ("planlift", "planlift_cached", "authors"):
            before = executor.stats.generations
            start = time.perf_counter()
            if name == "authors":
                authors_scheme(executor, task, rm, batch, completions, args.group, args.repeats)
            else:
                reward(batch, completions, args.group)  # the second call finds the baseline cached
            rows[name].append(time.perf_counter() - start)
            generations[name] = (executor.stats.generations - before) / len(batch)
    median = {name: statistics.median(times) for name, times in rows.items()}
    samples = args.repeats if args.pool_e2e else args.repeats + 1
    result = {
        "problems": args.problems,
        "group": args.group,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "pool_e2e": args.pool_e2e,
        "seconds_median": median,
        "speedup_vs_authors": median["authors"] / median["planlift"],
        "speedup_vs_authors_cached": median["authors"] / median["planlift_cached"],
        "executor_generations_per_problem": generations,
        "bound_first_step": args.group * samples + args.repeats,
        "bound_cached": args.group * samples,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
