"""HParams for TensorBoard: the flattened run config next to the run's final metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a/b": 1}; lists and None become strings (TensorBoard takes scalars only)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if str(key).startswith("_"):  # Hydra's _target_ / _convert_ / _partial_
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def run_hparams(cfg: DictConfig, choices: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The resolved config without Hydra's own node, plus the chosen option of every config group."""
    tree = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    tree.pop("hydra", None)
    params = flatten(tree)
    for group, option in (choices or {}).items():
        if not group.startswith("hydra") and option is not None:
            params[f"choice/{group}"] = str(option)
    return params


def final_metrics(
    callback_metrics: Mapping[str, Any], extra: Mapping[str, float] | None = None
) -> dict[str, float]:
    """`final/<metric>` for the validation metrics (kept apart from the curves' own tags)."""
    metrics = {f"final/{k}": float(v) for k, v in callback_metrics.items() if k.startswith("val/")}
    metrics.update({f"final/{k}": float(v) for k, v in (extra or {}).items()})
    return metrics
