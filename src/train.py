"""Train a reasoning planner with GRPO on an executor-grounded reward.

    python src/train.py                                      # CPU default: tiny planner + tiny executor
    python src/train.py executor=qwen reward=grounded        # a Qwen2.5 executor
    python src/train.py -m reward=exec_only,grounded seed=0,1,2

Returns the metric named by `optimized_metric` (for sweepers).
"""

from __future__ import annotations

import logging

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from planlift import rendezvous, runtime
from planlift.callbacks.requeue import RequeueSignal
from planlift.checkpoints import config_resolver, resolve_checkpoints
from planlift.hparams import final_metrics, run_hparams
from planlift.summary import RunSummary

log = logging.getLogger("planlift.train")


def train(cfg: DictConfig, executor=None, engine=None) -> float | None:
    """`executor` / `engine`: an already running executor / rollout engine to use instead of `cfg.executor` /
    `cfg.rollout` (a test session's: vLLM engines in one process share its distributed state)."""
    # under SLURM, LastCheckpoint takes the requeue signal (without it, Lightning's handler does): from here
    # on a signal is kept for the first step boundary
    RequeueSignal.install_for(cfg)
    runtime.configure_threads(cfg.torch_threads)
    runtime.check_value_kinds(cfg)  # a value of the wrong kind names its key
    runtime.check_devices(cfg)
    runtime.prepare_ddp_relaunch(__file__)
    # concurrent local runs (jobs of a submitit_local multirun) must not use the same MASTER_PORT
    rendezvous.reserve_for(cfg.trainer, multirun_job=runtime.local_multirun())
    runtime.quiet_libraries()
    pl.seed_everything(runtime.check_seed(cfg.seed), workers=True, verbose=False)
    runtime.check_learning_rate(cfg, "algorithm.optimizer.lr")
    # checked before any model loads (minutes at 7B); an RM training checkpoint is not resumable here
    ckpt_path = runtime.checkpoint_to_resume(cfg, kind="planner")

    summary = RunSummary()
    task = hydra.utils.instantiate(cfg.task)
    checkpoints = config_resolver(cfg, task)
    with summary.phase("models (bootstrap included)"):
        # the reward checks its settings against the task and the RM before the bootstrap trains or any
        # model loads (minutes on CPU, minutes at 7B): those two are resolved first, the rest after
        first = ("rm", "reward")
        resolve_checkpoints(cfg, checkpoints, only=first)  # `bootstrap:<role>` -> a directory
        rm = hydra.utils.instantiate(cfg.rm) if cfg.get("rm") else None
        reward = hydra.utils.instantiate(cfg.reward, executor=None, task=task, rm=rm)
        resolve_checkpoints(cfg, checkpoints, skip=("bootstrap", *first))
        policy = hydra.utils.instantiate(cfg.model)
        if engine is None:
            engine = hydra.utils.instantiate(cfg.rollout)
        if executor is None and getattr(engine, "share_with_executor", False):
            executor = hydra.utils.instantiate(cfg.executor, llm=engine.shared_llm(policy))  # one engine
        elif executor is None:
            executor = hydra.utils.instantiate(cfg.executor)
    reward.executor = executor
    module = hydra.utils.instantiate(
        cfg.algorithm, policy=policy, reward=reward, task=task, rollout_engine=engine
    )
    datamodule = hydra.utils.instantiate(cfg.data, task=task)
    trainer: pl.Trainer = runtime.build_trainer(cfg, resume_from=ckpt_path)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # the same stream whether or not bootstrap ran
    if cfg.validate_before_training and not ckpt_path:
        with summary.phase("step-0 validation"):
            trainer.validate(module, datamodule=datamodule, verbose=False)
            runtime.leave_this_second()  # the fit's event file sorts after this one (see there)
        summary.before = summary.validation_metrics(trainer.callback_metrics)
    with summary.phase("training"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    summary.after = summary.validation_metrics(trainer.callback_metrics)

    bootstrap_numbers = {}
    if checkpoints.bootstrap is not None:
        metrics = checkpoints.bootstrap.ensure().metrics
        bootstrap_numbers = {
            f"bootstrap/{k}": metrics[k] for k in ("executor_alone", "executor_gold", "planner_executor")
        }
    for logger in trainer.loggers:
        logger.log_hyperparams(
            run_hparams(cfg, HydraConfig.get().runtime.choices),
            final_metrics(trainer.callback_metrics, bootstrap_numbers),
        )
        # fit closed the writer at its end, so these went to a new one: close it too, or its buffered tail
        # (the last final/* metrics, the HParams entry) is lost when the process exits
        logger.finalize("success")
    if trainer.is_global_zero:
        log.info(summary.render(cfg.paths.output_dir, getattr(trainer.logger, "save_dir", None)))
    return runtime.metric_value(trainer.callback_metrics, cfg.optimized_metric)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with runtime.user_errors(), runtime.separate_job():
        return train(cfg)


if __name__ == "__main__":
    main()
