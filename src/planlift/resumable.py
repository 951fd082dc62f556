"""Counters and decisions a component keeps across a resume: checkpoints carry them.

A component lists the attributes in `resume_fields`; `state_dict()` returns them as plain Python values
(a Counter as a dict: checkpoints load with `weights_only=True`) and `load_state_dict()` puts them back
with their original types. Fields missing from an older checkpoint keep their fresh values.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


class Resumable:
    resume_fields: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name in self.resume_fields}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.resume_fields:
            if name in state:
                value = state[name]
                setattr(self, name, Counter(value) if isinstance(getattr(self, name), Counter) else value)


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, Counter) else value
