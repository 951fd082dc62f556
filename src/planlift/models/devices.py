"""Where a model goes: this rank's GPU (LOCAL_RANK under DDP/torchrun), else the CPU."""

from __future__ import annotations

import os

import torch


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def resolve_device(device: str) -> torch.device:
    """`auto` -> `default_device()`; anything else is a torch device string."""
    return default_device() if device == "auto" else torch.device(device)
