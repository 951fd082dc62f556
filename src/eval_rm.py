"""Evaluate a trained reasoning RM: dev-group metrics and held-out AUROC; prints a table, writes JSON.

python src/eval_rm.py rm_path=<run>/reward_model dev_groups=outputs/groups/procedural/dev.jsonl
python src/eval_rm.py rm_path=... evaluation.heldout=[processbench_gsm8k] evaluation.limits.processbench_gsm8k=100
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from planlift import runtime
from planlift.rubric_rm.report import results_table

log = logging.getLogger("planlift.eval_rm")


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval_rm")
def main(cfg: DictConfig) -> None:
    with runtime.user_errors():
        runtime.configure_threads(cfg.torch_threads)
        runtime.check_value_kinds(cfg)  # a value of the wrong kind names its key
        runtime.quiet_libraries()
        results = hydra.utils.instantiate(cfg.evaluation).run()
        output = Path(cfg.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        from rich.console import Console

        Console().print(results_table(results))
        log.info("results written to %s", output)


if __name__ == "__main__":
    main()
