"""Train the rubric reasoning RM on TraceLift-Groups (Lightning under Hydra).

    python src/train_rm.py                                           # tiny Qwen2, procedural groups
    python src/train_rm.py rm_backbone=tiny_pretrained              # the bootstrap's tiny planner as backbone
    python src/train_rm.py rm_data=gsm8k rm_backbone=smollm2         # SmolLM2-135M on GSM8K groups

Exports the trained RM (authors' layout) to <run dir>/reward_model; returns `optimized_metric`.
"""

from __future__ import annotations

import logging

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from planlift import runtime

log = logging.getLogger("planlift.train_rm")


def instantiate_all(nodes: DictConfig | None) -> list:
    return [hydra.utils.instantiate(node) for node in (nodes or {}).values() if node is not None]


def train_rm(cfg: DictConfig) -> float | None:
    runtime.configure_threads(cfg.torch_threads)
    runtime.quiet_libraries()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    bootstrap = None
    if cfg.get("bootstrap"):  # rm_backbone=tiny_pretrained starts from the bootstrap's tiny planner
        bootstrap = hydra.utils.instantiate(cfg.bootstrap, task=hydra.utils.instantiate(cfg.task))
    model = hydra.utils.instantiate(cfg.rm_backbone, bootstrap=bootstrap)
    datamodule = hydra.utils.instantiate(
        cfg.rm_data, tokenizer=model.tokenizer, dimension_names=model.dimension_names
    )
    module = hydra.utils.instantiate(cfg.module, model=model)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=instantiate_all(cfg.get("logger")),
        callbacks=instantiate_all(cfg.get("callbacks")),
    )
    if cfg.validate_before_training:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.fit(module, datamodule=datamodule)
    metric = trainer.callback_metrics.get(cfg.optimized_metric)
    log.info(
        "%s = %s; outputs in %s",
        cfg.optimized_metric,
        None if metric is None else float(metric),
        cfg.paths.output_dir,
    )
    return None if metric is None else float(metric)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train_rm")
def main(cfg: DictConfig) -> float | None:
    with runtime.user_errors():
        return train_rm(cfg)


if __name__ == "__main__":
    main()
