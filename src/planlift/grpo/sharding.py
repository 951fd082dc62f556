"""FSDP2 for the planner: `fully_shard` on every decoder layer and the root, inside `configure_model`.

Lightning's `ModelParallelStrategy` builds the device mesh and calls `GRPOModule.configure_model`, which
calls `shard_planner`. The same code path runs on GPUs (hardware=fsdp) and on CPU with gloo
(hardware=fsdp_sim), where Lightning's FSDPStrategy refuses to run.

Generation on a sharded planner: every rank must run the same number of forward passes (each one
all-gathers the parameters), so `generate` keeps stepping until all ranks are done (`synced_gpus`);
transformers turns that on for modules marked `_is_fsdp_managed_module`.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


def shard_planner(model: torch.nn.Module, mesh, param_dtype: torch.dtype | None = None) -> int:
    """Shard each decoder layer (the model's `_no_split_modules`), then the root. Returns the layer count.

    `param_dtype` (e.g. bf16 on GPUs) is the compute dtype: each shard keeps its own dtype (float32 weights
    stay the optimizer's) and is cast when gathered; gradients are reduced in float32 and kept in the shard's.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from transformers import PreTrainedModel

    policy = (
        MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if param_dtype else None
    )
    kwargs = {"mesh": mesh, **({"mp_policy": policy} if policy else {})}
    block_names: set[str] = set()
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            block_names |= set(getattr(module, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in block_names]
    if not layers:
        raise RuntimeError(
            f"no decoder layers ({sorted(block_names)}) found to shard in {type(model).__name__}"
        )
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            module._is_fsdp_managed_module = True  # generate(synced_gpus=True)
    stored = next(model.parameters()).dtype
    log.info(
        "sharded the planner: %d %s blocks + root over %s (weights %s, compute %s)",
        len(layers),
        "/".join(sorted(block_names)),
        mesh,
        str(stored).removeprefix("torch."),
        str(param_dtype or stored).removeprefix("torch."),
    )
    return len(layers)


def full_state_dict(model: torch.nn.Module, every_rank: bool = False) -> dict[str, torch.Tensor]:
    """The unsharded state dict (a collective: every rank calls it). By default on CPU and for rank 0 only
    (the others get an empty dict: torch's way of not holding one copy per rank in host memory);
    `every_rank`: every rank gets the full tensors, on its device (an engine per rank loads them)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=not every_rank)
    return get_model_state_dict(model, options=options)
