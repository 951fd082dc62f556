"""The reward-model entry points' configs: every option of their groups composes and every `_target_`
binds its keys (tests/test_configs.py does the same for src/train.py's config)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tests.test_configs import CONF, check_targets

# primary config -> the groups it selects options from
PRIMARIES = {
    "build_groups": ("groups", "labeler"),
    "train_rm": ("rm_backbone", "rm_data", "hardware", "trainer", "logger"),
    "eval_rm": (),
    "serve_rm": (),
}


def compose_primary(name: str, overrides: list[str], tmp_path: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.runtime.output_dir = str(tmp_path)
    cfg.hydra.job.override_dirname = ",".join(overrides)
    HydraConfig.instance().set_config(cfg)
    OmegaConf.set_readonly(cfg.hydra, False)
    OmegaConf.resolve(cfg)
    return cfg


def cases():
    found = [(primary, None, None) for primary in PRIMARIES]
    for primary, groups in PRIMARIES.items():
        for group in groups:
            found += [(primary, group, path.stem) for path in sorted((CONF / group).glob("*.yaml"))]
    return found


@pytest.mark.parametrize(("primary", "group", "option"), cases())
def test_every_option_composes_and_binds(primary, group, option, tmp_path):
    overrides = [f"{group}={option}"] if group else []
    cfg = compose_primary(primary, overrides, tmp_path)
    assert check_targets(cfg) >= 1
    if group:
        assert HydraConfig.get().runtime.choices[group] == option


def test_backbone_options_set_their_learning_rate(tmp_path):
    rates = {
        option: compose_primary("train_rm", [f"rm_backbone={option}"], tmp_path).module.optimizer.lr
        for option in ("tiny", "smollm2", "qwen2_5_7b")
    }
    assert rates == {"tiny": 1e-3, "smollm2": 1e-4, "qwen2_5_7b": 1e-4}
    cfg = compose_primary("train_rm", ["trainer.max_steps=7"], tmp_path)
    assert cfg.module.scheduler.num_training_steps == 7 and cfg.trainer.val_check_interval == 250


def test_procedural_groups_reuse_the_task_config(tmp_path):
    cfg = compose_primary("build_groups", ["groups.sizes.train=50", "groups.task.length=9"], tmp_path)
    assert cfg.groups.task._target_ == "planlift.tasks.ProceduralTask"
    assert cfg.groups.task.sizes.train == 50 and cfg.groups.task.length == 9
    assert cfg.output_dir.endswith("groups/procedural")
