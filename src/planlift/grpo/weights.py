"""The planner's current weights as (Hugging Face name, tensor) pairs, for a rollout engine to load.

A LoRA planner yields its base weights with each adapter's delta added (W + scale * B A, computed by peft's
`get_delta_weight`, the model untouched: no merge/unmerge drift); an FSDP2-sharded planner is gathered
first (a collective: every rank calls it; LoRA under FSDP is refused).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from planlift.errors import ConfigError
from planlift.models.policy import Policy


def planner_dtype(policy: Policy) -> str:
    """The planner's parameter dtype as vLLM names it (`float32`, `bfloat16`)."""
    return str(next(policy.model.parameters()).dtype).removeprefix("torch.")


def planner_weights(policy: Policy, every_rank: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every weight of the planner as its base architecture names it (`model.layers.0...`).

    The checks and the FSDP gather run when this is called (on every rank); LoRA deltas are computed only
    as the iterator is consumed. A sharded planner's weights reach rank 0 only (the others get none)
    unless `every_rank`: each rank that loads an engine of its own needs them all."""
    from planlift.grpo.sharding import full_state_dict, is_sharded

    model = policy.model
    if any(getattr(p, "quant_state", None) is not None for p in model.parameters()):
        raise ConfigError(
            "rollout=vllm cannot load a 4-bit planner's weights (hardware=qlora4bit): use rollout=hf"
        )
    if is_sharded(model):
        if policy.lora:
            raise ConfigError(
                "rollout=vllm with an FSDP-sharded LoRA planner is not supported: use hardware=ddp"
            )
        state = full_state_dict(model, every_rank)
    else:
        state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    return _merged(model, state) if policy.lora else iter(state.items())


def _merged(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    deltas: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer):
                for adapter in module.active_adapters:
                    if adapter in module.lora_A or adapter in getattr(module, "lora_embedding_A", {}):
                        delta = module.get_delta_weight(adapter).detach()
                        key = f"{name}.base_layer.weight"
                        deltas[key] = deltas[key] + delta if key in deltas else delta
    for name, tensor in state.items():
        if "lora_" in name or ".original_module." in name:
            continue
        if name in deltas:
            tensor = tensor + deltas[name].to(tensor.dtype)
        name = (
            name.removeprefix(prefix).replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")
        )
        yield name, tensor
