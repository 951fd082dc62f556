"""Package namespaces that import a module only when one of its names is first used (PEP 562).

A package `__init__` lists what it offers (`name -> submodule`); `import planlift.rewards.grounded` then
loads only what that module imports, not every sibling the package re-exports (the vLLM executor, the
sandbox), and a submodule importing from its own package cannot close an import circle.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list]]:
    """`(__getattr__, __dir__)` for `package`: `exports` maps each public name to its submodule."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(vars(sys.modules[package])))

    return __getattr__, __dir__
