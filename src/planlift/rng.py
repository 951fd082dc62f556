"""Every random stream a run draws from, captured and restored (checkpoints carry them).

Training already reseeds torch from (seed, step, rank) at every step, so sampling does not depend on
history; these states make everything else that draws between steps (user code, libraries using the
global python / numpy / torch generators) continue as in an uninterrupted run.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _numpy_state() -> tuple:
    """numpy's global state as plain Python values (checkpoints load with weights_only=True)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return kind, keys.tolist(), int(position), int(has_gauss), float(gauss)
