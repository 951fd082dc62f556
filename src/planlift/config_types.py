"""Scalar config values checked against the annotations of the class they configure, before it is built.

A config node with a `_target_` is passed to that class's `__init__`; a value of the wrong kind
(`algorithm.num_generations=four`) used to fail inside it, as a TypeError that Hydra reports for the
whole group (`full_key: algorithm`). `check_targets` reads the annotations (`int`, `float`, `bool`
and `X | None`) and names the key instead. Only clear mismatches are refused: text where a number or a
flag is wanted, a fraction where an integer is wanted, a number where a flag is wanted. A whole number
written as a float where only an integer is wanted (`trainer.max_steps=1e4`) becomes that integer in the
config, so that the class gets the type it declares. Other annotations (sequences, callables, models)
are left to the class.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from planlift.errors import ConfigError

# The kinds checked; any other hint (text, whose value may be written as a number; sequences ...) is not.
_KINDS = {int: "an integer", float: "a number", bool: "true or false"}


def check_targets(cfg: DictConfig, keys: Iterable[str]) -> None:
    """Check every scalar of the config nodes at `keys` (e.g. "algorithm", "reward") that name a
    `_target_`, and of the target nodes inside them (`algorithm.optimizer`, `callbacks.*`); a key that is
    absent or null, or a target that does not import, is left to Hydra."""
    for key in keys:
        node = OmegaConf.select(cfg, key, default=None)
        if isinstance(node, DictConfig):
            _check_node(node, key)


def _check_node(node: DictConfig, path: str) -> None:
    if "_target_" in node:
        hints = _init_hints(str(node._target_))
        try:
            values = OmegaConf.to_container(node, resolve=True)
        except Exception:  # an interpolation that does not resolve: Hydra names it when it builds the node
            return
        for name, value in values.items():
            if name in hints and (checked := check_value(f"{path}.{name}", value, hints[name])) is not value:
                node[name] = checked
    for name, child in node.items():
        if isinstance(child, DictConfig):
            _check_node(child, f"{path}.{name}")


def _init_hints(target: str) -> dict[str, Any]:
    """The annotations of the target's parameters, each evaluated on its own: one that names a type the
    module imports only for type checkers is skipped, not the whole class."""
    module_name, _, attribute = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        function = getattr(module, attribute)
    except (ImportError, AttributeError):  # Hydra reports it when it instantiates the node
        return {}
    function = function.__init__ if inspect.isclass(function) else function
    hints = {}
    for name, annotation in inspect.get_annotations(function).items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, vars(inspect.getmodule(function) or module))
            except Exception:  # a name the module imports for type checkers only
                continue
        hints[name] = annotation
    return hints


def check_value(key: str, value: Any, hint: Any) -> Any:
    """`value` as the class gets it (a whole float where only an integer is wanted: that int); a
    ConfigError naming `key` when it is not of a kind `hint` allows."""
    allowed = _scalar_kinds(hint)
    if allowed is None or (value is None and type(None) in allowed):
        return value
    if _fits(value, allowed):
        only_integer = int in allowed and float not in allowed
        return int(value) if isinstance(value, float) and only_integer else value
    wanted = " or ".join(_KINDS[kind] for kind in allowed if kind in _KINDS)
    if type(None) in allowed:
        wanted += " (or null)"
    raise ConfigError(f"{key} must be {wanted}, got {value!r}")


def _scalar_kinds(hint: Any) -> tuple[type, ...] | None:
    """The scalar types a hint allows (`int | None` -> (int, NoneType)); None for any other hint."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    members = typing.get_args(hint) if union else (hint,)
    if all(member in _KINDS or member is type(None) for member in members):
        return tuple(members)
    return None


def _fits(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    if isinstance(value, float):
        return float in allowed or (int in allowed and value.is_integer())
    return False
