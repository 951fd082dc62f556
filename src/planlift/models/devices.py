"""Where a model goes: this rank's GPU (LOCAL_RANK under DDP/torchrun), else the CPU."""

from __future__ import annotations

import os

import torch

from planlift.errors import ConfigError

ACCEPTED = "auto, cpu, cuda or cuda:<index>"


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def resolve_device(device: str, key: str = "device") -> torch.device:
    """`auto` -> `default_device()`; anything else is a torch device string. `key` names the setting in
    errors: an unknown device, or a CUDA device this machine does not have."""
    if device == "auto":
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{key} must be one of {ACCEPTED}, got {device!r}") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (resolved.index or 0) >= count:
            raise ConfigError(f"{key} is {device!r}, but this machine sees {count} CUDA device(s)")
    return resolved
