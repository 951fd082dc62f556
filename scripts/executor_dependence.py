"""Does the executor do work with the planner's reasoning, or copy it? (docs/learning.md, section 1)

Samples R reasonings per validation problem from the run's (bootstrap) planner, then S executor samples per
reasoning at the executor's temperature, and reports P(executor correct | the reasoning's last planned state
is right / wrong), the share of reasonings whose executor samples disagree (work with variance), the
executor alone, and the mixture of trace kinds the planner samples.

    python scripts/executor_dependence.py                          # the reference testbed (conf defaults)
    python scripts/executor_dependence.py task.executor_steps=0 bootstrap.planner_mixture=null \
        bootstrap.executor_mixture=null bootstrap.shared_base=false      # the old testbed (copy the answer)

Any train.py override works; `problems=`, `reasonings=`, `executor_samples=` set the sizes.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from planlift import runtime  # noqa: E402
from planlift.checkpoints import config_resolver, resolve_checkpoints  # noqa: E402
from planlift.grpo.rollout import sample_rollout  # noqa: E402


def main(argv: list[str]) -> dict:
    sizes = {"problems": 64, "reasonings": 4, "executor_samples": 16}
    overrides = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in sizes:
            sizes[key] = int(value)
        else:
            overrides.append(arg)
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    # the run-directory keys (trainer.default_root_dir, ...) read Hydra's runtime: the working directory here
    # (nothing is written), as under `@hydra.main`; then the config is the job's, without Hydra's node
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.runtime.output_dir = str(Path.cwd())
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    runtime.configure_threads(cfg.torch_threads)
    runtime.quiet_libraries()
    task = hydra.utils.instantiate(cfg.task)
    resolve_checkpoints(cfg, config_resolver(cfg, task), skip=("bootstrap",))
    policy = hydra.utils.instantiate(cfg.model)
    executor = hydra.utils.instantiate(cfg.executor)

    problems = list(task.problems("validation"))[: sizes["problems"]]
    r, s = sizes["reasonings"], sizes["executor_samples"]
    torch.manual_seed(cfg.seed)  # both samplers draw from it: the report depends on the config alone
    rollout = sample_rollout(
        policy, task, problems, r, temperature=cfg.algorithm.temperature, max_new_tokens=64
    )
    rows = [p for p in problems for _ in range(r)]
    reasonings = [task.extract_reasoning(t) for t in rollout.texts]
    results = executor.generate(
        [task.executor_prompt(p, x) for p, x in zip(rows, reasonings, strict=True)], s
    )
    alone = executor.generate([task.executor_prompt(p, None) for p in problems], s)

    by_state: dict[bool, list[float]] = {True: [], False: []}
    mixed = 0
    kinds = Counter()
    for problem, reasoning, result in zip(rows, reasonings, results, strict=True):
        analysis = task.analyze(problem, reasoning)
        kinds[analysis.kind] += 1
        correct = [task.verify(problem, text).correct for text in result.texts]
        by_state[analysis.final_state_correct].append(sum(correct) / len(correct))
        mixed += 0 < sum(correct) < len(correct)
    alone_rate = [
        task.verify(p, t).correct for p, res in zip(problems, alone, strict=True) for t in res.texts
    ]
    report = {
        "executor_steps": task.executor_steps,
        "reasonings": len(rows),
        "executor_samples": s,
        "p_correct_given_last_state_right": _mean(by_state[True]),
        "p_correct_given_last_state_wrong": _mean(by_state[False]),
        "reasonings_with_last_state_right": len(by_state[True]),
        "share_of_reasonings_with_mixed_outcomes": mixed / len(rows),
        "executor_alone": _mean(alone_rate),
        "sampled_kinds": {k: v / len(rows) for k, v in sorted(kinds.items())},
    }
    print(json.dumps(report, indent=2))
    return report


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


if __name__ == "__main__":
    main(sys.argv[1:])
