"""The reward-model entry points' configs: every option of their groups composes and every `_target_`
binds its keys (tests/test_configs.py does the same for src/train.py's config)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from planlift import config_types
from planlift.errors import ConfigError
from planlift.runtime import check_learning_rate
from tests.test_configs import CONF, check_targets

# primary config -> the groups it selects options from
PRIMARIES = {
    "build_groups": ("groups", "labeler"),
    "train_rm": ("rm_backbone", "rm_data", "hardware", "trainer", "logger", "rm_stage"),
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
    config_types.check_targets(cfg, [key for key in cfg if key != "hydra"])  # what the entry point checks
    if group:
        assert HydraConfig.get().runtime.choices[group] == option


def test_backbone_options_set_their_learning_rate(tmp_path):
    rates = {
        option: compose_primary("train_rm", [f"rm_backbone={option}"], tmp_path).module.optimizer.lr
        for option in ("tiny", "smollm2", "qwen2_5_7b")
    }
    assert rates == {"tiny": 1e-3, "smollm2": 1e-4, "qwen2_5_7b": 1e-4}
    cfg = compose_primary("train_rm", ["module.optimizer.lr=0"], tmp_path)  # src/train_rm.py checks this key
    with pytest.raises(ConfigError, match=r"module\.optimizer\.lr must be > 0, got 0"):
        check_learning_rate(cfg, "module.optimizer.lr")
    cfg = compose_primary("train_rm", ["trainer.max_steps=7"], tmp_path)
    assert cfg.module.scheduler.num_training_steps == 7 and cfg.trainer.val_check_interval == 250


def test_procedural_groups_reuse_the_task_config(tmp_path):
    cfg = compose_primary("build_groups", ["groups.sizes.train=50", "groups.task.length=9"], tmp_path)
    assert cfg.groups.task._target_ == "planlift.tasks.ProceduralTask"
    assert cfg.groups.task.sizes.train == 50 and cfg.groups.task.length == 9
    assert cfg.output_dir.endswith("groups/procedural")


def test_stages_set_their_terms_and_override_the_backbone_rate(tmp_path):
    for stage, render in (("lm_reasoning", "reasoning"), ("lm_full", "full")):
        cfg = compose_primary("train_rm", [f"rm_stage={stage}"], tmp_path)
        module = cfg.module
        assert (module.dim_weight, module.total_weight, module.posneg_weight) == (0.0, 0.0, 0.0)
        assert (module.lm_weight, module.lm_span, cfg.rm_data.render) == (1.0, "reasoning", render)
        assert module.optimizer.lr == 1e-3  # after the backbone option, whichever backbone is chosen
        assert module.scheduler.num_cycles == 0.0  # constant after warm-up
    dense = compose_primary("train_rm", ["rm_stage=dense_rubric", "rm_backbone=smollm2"], tmp_path)
    assert (dense.module.prefix_weight, dense.module.lm_weight, dense.module.lm_span) == (
        1.0,
        1.0,
        "reasoning",
    )
    assert (dense.module.dim_weight, dense.module.posneg_weight, dense.rm_data.num_negatives) == (1.0, 0.7, 7)
    default = compose_primary("train_rm", [], tmp_path)
    assert (default.module.lm_weight, default.module.lm_span, default.rm_data.render) == (0.0, "all", "full")


def test_unknown_lm_span_and_negative_weights_name_their_key():
    import torch

    from planlift.errors import ConfigError
    from planlift.rubric_rm.training import RubricRMModule

    with pytest.raises(ConfigError, match="module.lm_span"):
        RubricRMModule(torch.nn.Linear(1, 1), torch.optim.AdamW, lm_span="problem")
    with pytest.raises(ConfigError, match="module.prefix_weight"):
        RubricRMModule(torch.nn.Linear(1, 1), torch.optim.AdamW, prefix_weight=-1.0)
