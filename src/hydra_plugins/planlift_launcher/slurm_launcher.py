"""submitit's SLURM launcher with per-job resources that follow each job's trainer.

Hydra's submitit launcher submits a whole sweep as one job array with one set of resources. A sweep over
`hardware=cpu,ddp_sim` needs 1 task for one job and 2 for the other: with Lightning on SLURM every rank
is a SLURM task (`SLURMEnvironment`), and Lightning refuses `devices=2` in a 1-task allocation. This
launcher composes every job's config first and submits one array per distinct resource set:

    tasks_per_node = trainer.devices        (one SLURM task per rank)
    gpus_per_node  = trainer.devices when trainer.accelerator is gpu/cuda, else the launcher's value
    nodes          = trainer.num_nodes
    cpus_per_task  = torch_threads when the launcher leaves cpus_per_task unset

Everything else (partition, account, timeout, setup lines ...) comes from `hydra.launcher` as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from omegaconf import DictConfig, OmegaConf

try:
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # without the `slurm` extra: Hydra imports every plugin module at each run, and one
    # that fails to import gets a warning that it is "incompatible or buggy". The launcher below is then a
    # plain class Hydra does not register; `hydra/launcher=slurm` stops at its `submitit_slurm` default.
    BaseQueueConf = SlurmLauncher = None

log = logging.getLogger(__name__)

GPU_ACCELERATORS = ("gpu", "cuda")


def job_resources(job_cfg: DictConfig, defaults: dict[str, Any]) -> dict[str, Any]:
    """SLURM resources for one job's composed config."""
    trainer = job_cfg.get("trainer") or {}
    devices = trainer.get("devices", 1)
    if not isinstance(devices, int) or devices < 1:  # "auto" / -1: the launcher's gpus_per_node decides
        devices = int(defaults.get("gpus_per_node") or 1)
    accelerator = str(trainer.get("accelerator", "cpu"))
    resources = {
        "tasks_per_node": devices,
        "nodes": int(trainer.get("num_nodes", 1) or 1),
        "gpus_per_node": devices if accelerator in GPU_ACCELERATORS else defaults.get("gpus_per_node"),
    }
    if defaults.get("cpus_per_task") is None and job_cfg.get("torch_threads"):
        resources["cpus_per_task"] = int(job_cfg.torch_threads)
    return resources


class PlanliftSlurmLauncher(SlurmLauncher or object):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None and self.hydra_context is not None
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster="slurm",
            folder=self.params["submitit_folder"],
            slurm_max_num_timeout=self.params.get("max_num_timeout", 0),
        )
        base_keys = set(OmegaConf.structured(BaseQueueConf).keys())

        def submitit_params(params: dict[str, Any]) -> dict[str, Any]:
            return {k if k in base_keys else f"slurm_{k}": v for k, v in params.items() if k not in init_keys}

        sweep_dir = self.config.hydra.sweep.dir
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        from pathlib import Path

        Path(str(sweep_dir)).mkdir(parents=True, exist_ok=True)

        groups: dict[tuple, list[tuple]] = {}
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            resources = job_resources(job_cfg, self.params)
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}  ({resources})")
            key = tuple(sorted(resources.items()))
            groups.setdefault(key, []).append(
                (
                    offset,
                    (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()),
                )
            )

        jobs: list[Any] = [None] * len(job_overrides)
        for key, members in groups.items():
            executor.update_parameters(**submitit_params({**self.params, **dict(key)}))
            submitted = executor.map_array(self, *zip(*[params for _, params in members], strict=True))
            for (offset, _), job in zip(members, submitted, strict=True):
                jobs[offset] = job
        return [job.results()[0] for job in jobs]
