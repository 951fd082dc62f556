"""Evaluate a reasoning planner with a frozen executor: planner reasoning vs executor alone vs gold reasoning.

    python src/evaluate.py task=gsm8k model=smollm2 executor=smollm2 limit=200
    python src/evaluate.py task=humaneval executor.max_new_tokens=256 limit=164
    python src/evaluate.py task=gsm8k ~model arms=[alone,gold]

Writes problems.jsonl, summary.json and TensorBoard logs to the run directory; returns the e2e accuracy.
"""

from __future__ import annotations

import json
import logging

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from planlift import runtime
from planlift.checkpoints import config_resolver, resolve_checkpoints
from planlift.offline_eval import OfflineEvaluation

log = logging.getLogger("planlift.evaluate")


def evaluate(cfg: DictConfig) -> float | None:
    runtime.configure_threads(cfg.torch_threads)
    runtime.check_value_kinds(cfg)  # a value of the wrong kind names its key
    runtime.quiet_libraries()
    pl.seed_everything(runtime.check_seed(cfg.seed), workers=True, verbose=False)

    task = hydra.utils.instantiate(cfg.task)
    resolve_checkpoints(cfg, config_resolver(cfg, task), skip=("bootstrap",))
    policy = hydra.utils.instantiate(cfg.model) if cfg.get("model") else None
    executor = hydra.utils.instantiate(cfg.executor)
    evaluator = OfflineEvaluation(
        task=task,
        executor=executor,
        policy=policy,
        output_dir=cfg.paths.output_dir,
        split=cfg.split,
        limit=cfg.limit,
        arms=list(cfg.arms),
        executor_samples=cfg.executor_samples,
        executor_greedy=cfg.executor_greedy,
        planner_greedy=cfg.planner_greedy,
        planner_temperature=cfg.planner_temperature,
        planner_top_p=cfg.planner_top_p,
        planner_max_new_tokens=cfg.planner_max_new_tokens,
        batch_size=cfg.batch_size,
        cache_dir=cfg.paths.cache_dir,
        progress_bar=cfg.progress_bar,
    )
    summary = evaluator.run()
    headline = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    log.info("summary: %s", json.dumps(headline))
    log.info("outputs in %s", cfg.paths.output_dir)
    return summary.get("e2e_acc")


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    with runtime.user_errors():
        return evaluate(cfg)


if __name__ == "__main__":
    main()
