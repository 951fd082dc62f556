"""This process's place in the default process group, and gathering plain objects across it."""

from __future__ import annotations

from typing import Any

import torch


def world_size() -> int:
    """Processes in the default process group (1 when there is none)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_world_size() if distributed else 1


def rank() -> int:
    return torch.distributed.get_rank() if world_size() > 1 else 0


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` in rank order (collective: every rank calls it); `[obj]` without a process group."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered
