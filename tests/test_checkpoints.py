"""Named checkpoints (`bootstrap:<role>`, `packaged:<name>`) are resolved in the config, before loading."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from planlift.checkpoints import CheckpointResolver, resolve_checkpoints
from planlift.errors import ConfigError
from planlift.models.loading import locate_checkpoint


class FakeBootstrap:
    """Plumbing only: counts how often the stage is asked for, hands out a directory per role."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ensured = 0

    def ensure(self):
        self.ensured += 1
        return self

    def checkpoint(self, role: str) -> Path:
        return self.root / role


def test_every_named_value_is_rewritten_and_the_bootstrap_built_once(tmp_path):
    made = []

    def make():
        made.append(FakeBootstrap(tmp_path))
        return made[-1]

    cfg = OmegaConf.create(
        {
            "model": {"pretrained": "bootstrap:planner", "dtype": "float32"},
            "executor": {"pretrained": "bootstrap:executor", "tokenizers": ["x", "bootstrap:planner"]},
            "root": str(tmp_path),
            "rm": {"path": "${root}/rm"},
            "hydra": {"pretrained": "bootstrap:ignored"},
            "missing": "???",
        }
    )
    rewritten = resolve_checkpoints(cfg, CheckpointResolver(make), skip=("hydra",))

    assert rewritten == ["model.pretrained", "executor.pretrained", "executor.tokenizers[1]"]
    assert cfg.model.pretrained == str(tmp_path / "planner")
    assert cfg.executor.pretrained == str(tmp_path / "executor")
    assert list(cfg.executor.tokenizers) == ["x", str(tmp_path / "planner")]
    assert cfg.rm.path == f"{tmp_path}/rm" and cfg.hydra.pretrained == "bootstrap:ignored"
    assert len(made) == 1 and made[0].ensured == 3


def test_no_bootstrap_is_built_when_none_is_named(tmp_path):
    resolver = CheckpointResolver(lambda: pytest.fail("the bootstrap must not be built"))
    cfg = OmegaConf.create({"model": {"pretrained": str(tmp_path)}})
    assert resolve_checkpoints(cfg, resolver) == []
    assert resolver.bootstrap is None


def test_a_bootstrap_name_without_a_bootstrap_node_names_the_key():
    cfg = OmegaConf.create({"executor": {"pretrained": "bootstrap:executor"}})
    with pytest.raises(ConfigError, match=r"executor.pretrained='bootstrap:executor'.*no `bootstrap` node"):
        resolve_checkpoints(cfg, CheckpointResolver())


def test_unknown_packaged_checkpoint_is_a_config_error():
    cfg = OmegaConf.create({"model": {"pretrained": "packaged:nope"}})
    with pytest.raises(ConfigError, match="unknown packaged checkpoint 'nope'"):
        resolve_checkpoints(cfg, CheckpointResolver())


def test_loaders_refuse_an_unresolved_bootstrap_name():
    with pytest.raises(ConfigError, match=r"model.pretrained='bootstrap:planner'.*resolve it first"):
        locate_checkpoint("bootstrap:planner", "model.pretrained")
