"""LoRA adapters (peft) for the planner and the rubric RM's backbone: one settings class, one setup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from planlift.errors import ConfigError


@dataclass
class LoraSettings:
    """peft LoRA hyper-parameters (the authors' math planner: r16 / alpha 32 / dropout 0.05, all projections).

    `key`: the config node the settings came from, named in errors."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    key: str = "model.lora"

    def __post_init__(self) -> None:
        if self.r <= 0 or self.alpha <= 0:
            raise ConfigError(
                f"{self.key}.r and {self.key}.alpha must be > 0, got r={self.r} alpha={self.alpha}"
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"{self.key}.dropout must be in [0, 1), got {self.dropout}")


def add_lora(model: torch.nn.Module, lora: dict[str, Any], task_type: str, key: str) -> torch.nn.Module:
    """`model` wrapped in a fresh LoRA adapter (only the adapter trains). task_type: peft's, e.g.
    CAUSAL_LM for the planner, FEATURE_EXTRACTION for the RM backbone."""
    from peft import LoraConfig, get_peft_model

    settings = LoraSettings(**lora, key=key)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type=task_type,
    )
    return get_peft_model(model, config)
