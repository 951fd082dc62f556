"""Build TraceLift-Groups, the reasoning RM's data: a positive and localized negatives per problem.

    python src/build_groups.py                          # procedural task, rule labels
    python src/build_groups.py groups=gsm8k             # GSM8K train split
    python src/build_groups.py groups=gsm8k groups.limit=20 labeler=judge   # an executor as judge

Writes <output_dir>/{train,dev}.jsonl and summary.json (default outputs/groups/<name>/).
"""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig

from planlift import runtime
from planlift.rm_groups import build_groups

log = logging.getLogger("planlift.build_groups")


@hydra.main(version_base="1.3", config_path="../conf", config_name="build_groups")
def main(cfg: DictConfig) -> None:
    with runtime.user_errors():
        runtime.configure_threads(cfg.torch_threads)
        runtime.check_value_kinds(cfg)  # a value of the wrong kind names its key
        runtime.quiet_libraries()
        source = hydra.utils.instantiate(cfg.groups)
        labeler = hydra.utils.instantiate(cfg.labeler)
        summary = build_groups(source, cfg.output_dir, cfg.seed, labeler, cfg.min_negatives)
        log.info("groups written to %s", cfg.output_dir)
        print(json.dumps(summary, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
