"""Serve a trained reasoning RM over HTTP on the authors' contract (FastAPI + uvicorn).

    python src/serve_rm.py rm_path=<run>/reward_model port=8000
    curl -s localhost:8000/score -H 'content-type: application/json' \\
      -d '{"items": [{"problem": "...", "reasoning": "...", "task_name": "math", "task_type": "math"}]}'

Then train with it: python src/train.py rm=http rm.url=http://127.0.0.1:8000/score
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from planlift import runtime

log = logging.getLogger("planlift.serve_rm")


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve_rm")
def main(cfg: DictConfig) -> None:
    with runtime.user_errors():
        runtime.configure_threads(cfg.torch_threads)
        runtime.check_value_kinds(cfg)  # a value of the wrong kind names its key
        runtime.quiet_libraries()
        import uvicorn

        from planlift.rubric_rm.service import create_app

        scorer = hydra.utils.instantiate(cfg.scorer)
        app = create_app(scorer, cfg.max_batch_size, cfg.max_length_limit)
        log.info(
            "serving %s on http://%s:%d/score (device %s)", scorer.path, cfg.host, cfg.port, scorer.device
        )
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)


if __name__ == "__main__":
    main()
