"""Dropout in the planner: which modules are active, and switching them off.

Rollouts are sampled in eval mode (no dropout) while the update recomputes log-probs in train mode, so
any active dropout (LoRA's 0.05 in the SmolLM2/Qwen presets) puts noise between the policy that sampled
and the one whose ratio, KL and importance weights are computed. `algorithm.disable_dropout=true` sets
every dropout probability to 0, which makes the first iteration's ratio exactly 1 under
`num_iterations > 1` and leaves the sampler/trainer mismatch to numerics alone.
"""

from __future__ import annotations

import torch

# float attributes that transformers' attention modules apply as dropout in train mode
_ATTENTION_DROPOUT_ATTRS = ("attention_dropout", "dropout")


def active_dropout(model: torch.nn.Module) -> list[str]:
    """Names of the modules that drop activations in train mode."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            if module.p > 0:
                names.append(name)
            continue
        for attr in _ATTENTION_DROPOUT_ATTRS:
            value = getattr(module, attr, None)
            if isinstance(value, float) and value > 0:
                names.append(f"{name}.{attr}")
    return names


def disable_dropout(model: torch.nn.Module) -> int:
    """Set every dropout probability in `model` to 0; returns how many were active."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            changed += module.p > 0
            module.p = 0.0
            continue
        for attr in _ATTENTION_DROPOUT_ATTRS:
            value = getattr(module, attr, None)
            if isinstance(value, float) and value > 0:
                setattr(module, attr, 0.0)
                changed += 1
    return changed
