"""Train the rubric reasoning RM on TraceLift-Groups (Lightning under Hydra).

    python src/train_rm.py                                           # tiny Qwen2, procedural groups
    python src/train_rm.py rm_backbone=tiny_pretrained              # the bootstrap's tiny planner as backbone
    python src/train_rm.py rm_data=gsm8k rm_backbone=smollm2         # SmolLM2-135M on GSM8K groups

Exports the trained RM (authors' layout) to <run dir>/reward_model; returns `optimized_metric`. Resumes
from <run dir>/checkpoints/last.ckpt when it exists (`auto_resume`; a requeued SLURM job) or from
`ckpt_path=...`, continuing exactly as the uninterrupted run.
"""

from __future__ import annotations

import logging

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from planlift import runtime
from planlift.callbacks.requeue import RequeueSignal
from planlift.checkpoints import config_resolver, resolve_checkpoints

log = logging.getLogger("planlift.train_rm")


def train_rm(cfg: DictConfig) -> float | None:
    RequeueSignal.install_for(cfg)  # under SLURM the requeue signal waits for a step boundary
    runtime.configure_threads(cfg.torch_threads)
    runtime.check_value_kinds(cfg)  # a value of the wrong kind names its key
    runtime.quiet_libraries()
    pl.seed_everything(runtime.check_seed(cfg.seed), workers=True, verbose=False)
    runtime.check_learning_rate(cfg, "module.optimizer.lr")  # set by the rm_backbone option
    # a requeued SLURM job continues from its last.ckpt; a planner-training checkpoint is refused here
    ckpt_path = runtime.checkpoint_to_resume(cfg, kind="rm")

    # rm_backbone=tiny_pretrained starts from the bootstrap's tiny planner (`bootstrap:planner`)
    resolve_checkpoints(cfg, config_resolver(cfg), skip=("bootstrap",))
    model = hydra.utils.instantiate(cfg.rm_backbone)
    datamodule = hydra.utils.instantiate(
        cfg.rm_data, tokenizer=model.tokenizer, dimension_names=model.dimension_names
    )
    module = hydra.utils.instantiate(cfg.module, model=model)
    trainer: pl.Trainer = runtime.build_trainer(cfg, resume_from=ckpt_path)
    if cfg.validate_before_training and not ckpt_path:
        trainer.validate(module, datamodule=datamodule, verbose=False)
        runtime.leave_this_second()  # the fit's event file sorts after this one (see there)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metric = runtime.metric_value(trainer.callback_metrics, cfg.optimized_metric)
    log.info("%s = %s; outputs in %s", cfg.optimized_metric, metric, cfg.paths.output_dir)
    return metric


@hydra.main(version_base="1.3", config_path="../conf", config_name="train_rm")
def main(cfg: DictConfig) -> float | None:
    with runtime.user_errors():
        return train_rm(cfg)


if __name__ == "__main__":
    main()
