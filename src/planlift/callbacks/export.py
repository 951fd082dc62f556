"""Export the trained planner as a Hugging Face directory (LoRA merged) when fitting ends.

`weights`: "last" exports the planner as training left it; "best" first loads the trained weights of the
ModelCheckpoint's best checkpoint (by its monitor, `val/e2e_acc` in the shipped config: the checkpoint a
researcher selects by validation). `planlift_export.json` beside the weights says which: the step, and
for "best" the checkpoint, its monitor and score.

A LoRA planner also writes its adapter alone to `<dirpath>/adapter` (peft `save_pretrained`; not yet for
an FSDP-gathered one). A planner whose base is quantized by bitsandbytes (hardware=qlora4bit) is exported
unquantized in the dtype its base was loaded in (`model.dtype`, as an unquantized run's export): each
quantized weight dequantized plus the adapter's exact delta. The trained planner computes nf4 base + delta,
so this reproduces its function up to the rounding of its compute dtype and of the export dtype; peft's
`merge_and_unload` would re-quantize the sum to 4 bits and round most of the delta away.
"""

from __future__ import annotations

import json
import logging
from copy import deepcopy
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from planlift.errors import ConfigError

log = logging.getLogger(__name__)

WEIGHTS = ("last", "best")

QUANTIZED_PARAMETERS = ("Params4bit", "Int8Params")  # bitsandbytes 4-bit and 8-bit weights


class ExportPlanner(pl.Callback):
    """Writes `dirpath` with `save_pretrained` (model and tokenizer) on rank 0; an FSDP2-sharded planner
    is gathered first (every rank takes part).

    A LoRA planner is merged into its base weights in place (export is the last thing a run does), except
    over a quantized base: that merge is built in a copy and the trained planner is left as it was.
    """

    KEY = "callbacks.export_planner.weights"

    def __init__(self, dirpath: str, weights: str = "last") -> None:
        self.dirpath = Path(dirpath)
        self.weights = checked_weights(weights, self.KEY)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.weights == "best":
            check_best_weights(trainer, self.KEY)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from planlift.grpo.sharding import full_state_dict, is_sharded

        policy = pl_module.policy
        if is_sharded(policy.model):  # FSDP2: gather the full weights on every rank (a collective)
            state = full_state_dict(policy.model)
            if trainer.is_global_zero:  # weights=best is refused under FSDP (check_best_weights)
                self._save_gathered(policy, state)
                write_provenance(self.dirpath, {"weights": "last", "step": trainer.global_step})
            return
        if trainer.is_global_zero:
            provenance = weights_to_export(trainer, pl_module, self.weights, self.KEY)
            if policy.lora:
                policy.model.save_pretrained(self.dirpath / "adapter")
            if is_quantized(policy.model):
                model = dequantized_merge(policy.model, policy.lora)
            else:
                model = policy.model.merge_and_unload() if policy.lora else policy.model
            model.save_pretrained(self.dirpath)
            policy.tokenizer.save_pretrained(self.dirpath)
            write_provenance(self.dirpath, provenance)
            log.info(
                "exported the planner (%s weights, step %d) to %s",
                provenance["weights"],
                provenance["step"],
                self.dirpath,
            )

    def _save_gathered(self, policy, state: dict) -> None:
        """Rebuild an unsharded copy from the gathered weights and save it (LoRA merged)."""
        from transformers import AutoModelForCausalLM

        base = policy.model.get_base_model() if policy.lora else policy.model
        with torch.device("meta"):
            copy = AutoModelForCausalLM.from_config(base.config)
        if policy.lora:
            from peft import get_peft_model

            copy = get_peft_model(copy, policy.model.peft_config["default"])
        copy.load_state_dict(state, strict=True, assign=True)
        copy = copy.merge_and_unload() if policy.lora else copy
        copy.tie_weights()
        copy.save_pretrained(self.dirpath)
        policy.tokenizer.save_pretrained(self.dirpath)
        log.info("exported the planner (gathered from FSDP shards) to %s", self.dirpath)


def checked_weights(weights: str, key: str) -> str:
    """`weights` when it is one of `WEIGHTS`, else a ConfigError naming the config `key`."""
    if weights not in WEIGHTS:
        raise ConfigError(f"{key} must be one of {WEIGHTS}, got {weights!r}")
    return weights


def weights_to_export(trainer: pl.Trainer, pl_module: pl.LightningModule, weights: str, key: str) -> dict:
    """With weights="best", load the best checkpoint's trained weights into `pl_module` (`load_best_weights`);
    what the export holds: `planlift_export.json`'s record."""
    if weights == "best" and (found := load_best_weights(trainer, pl_module, key)) is not None:
        return found
    return {"weights": "last", "step": trainer.global_step}


def write_provenance(dirpath: Path, provenance: dict) -> None:
    """`<dirpath>/planlift_export.json`: which weights an export holds."""
    (dirpath / "planlift_export.json").write_text(json.dumps(provenance, indent=2) + "\n")


def check_best_weights(trainer: pl.Trainer, key: str) -> None:
    """weights=best (the callback's config `key`) needs a ModelCheckpoint with a monitor and a checkpoint
    in one file: a ConfigError before training otherwise."""
    best_selector(trainer, key)
    if type(trainer.strategy).__name__ == "ModelParallelStrategy":
        raise ConfigError(
            f"{key}=best reads the best checkpoint's weights from one file; an FSDP run's (hardware=fsdp) may "
            "be a sharded directory: export the last step's weights, or load the best checkpoint and export it"
        )


def best_selector(trainer: pl.Trainer, key: str) -> ModelCheckpoint:
    """The ModelCheckpoint whose best checkpoint weights=best exports (the first with a monitor)."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor:
            return callback
    raise ConfigError(
        f"{key}=best needs a ModelCheckpoint with a monitor (callbacks.model_checkpoint); this run has none"
    )


def load_best_weights(trainer: pl.Trainer, pl_module: pl.LightningModule, key: str) -> dict | None:
    """Copy the best checkpoint's trained weights into `pl_module` (those that require grad: under LoRA the
    adapter and heads, the frozen base being the pretrained one) and say where they came from: the step,
    checkpoint, monitor and score. None, with a warning, when no best checkpoint was saved (no validation
    ran): the module keeps the last step's weights."""
    selector = best_selector(trainer, key)
    path = selector.best_model_path
    if not path:
        log.warning("%s=best: no best checkpoint was saved; exporting the last step's weights", key)
        return None
    checkpoint = torch.load(path, map_location="cpu", mmap=True)
    state = checkpoint.get("state_dict", {})
    trained = {name: p for name, p in pl_module.named_parameters() if p.requires_grad}
    missing = sorted(trained.keys() - state.keys())
    if missing:
        raise ConfigError(
            f"the best checkpoint {path} lacks {len(missing)} trained weights, e.g. {missing[0]}"
        )
    with torch.no_grad():
        for name, parameter in trained.items():
            parameter.copy_(state[name].to(device=parameter.device, dtype=parameter.dtype))
    score = selector.best_model_score
    log.info("exporting the weights of %s (%s=%s)", path, selector.monitor, score)
    return {
        "weights": "best",
        "step": int(checkpoint.get("global_step", -1)),
        "checkpoint": str(path),
        "monitor": selector.monitor,
        "score": None if score is None else float(score),
    }


def is_quantized(model: torch.nn.Module) -> bool:
    return any(type(p).__name__ in QUANTIZED_PARAMETERS for p in model.parameters())


def dequantized_merge(model: torch.nn.Module, lora: bool) -> torch.nn.Module:
    """A plain (unquantized) copy of a bitsandbytes-quantized planner in its load dtype, on the CPU: every
    weight dequantized, plus the active LoRA adapters' delta (scale * B A, added in float32) where there is
    one. `model` is not modified; the copy's config has no `quantization_config`."""
    from peft.tuners.lora import LoraLayer
    from peft.utils.integrations import dequantize_module_weight
    from transformers import AutoModelForCausalLM

    trained = model.get_base_model() if lora else model
    dtype = loaded_dtype(trained)
    config = deepcopy(trained.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    with torch.device("meta"):
        merged = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = {}
    with torch.no_grad():
        for key in merged.state_dict():
            module_name, _, attribute = key.rpartition(".")
            module = trained.get_submodule(module_name)
            delta = None
            if isinstance(module, LoraLayer):
                if attribute == "weight":
                    deltas = [
                        module.get_delta_weight(a) for a in module.active_adapters if a in module.lora_A
                    ]
                    delta = sum(d.float() for d in deltas) if deltas else None
                module = module.get_base_layer()
            tensor = getattr(module, attribute)
            if type(tensor).__name__ in QUANTIZED_PARAMETERS:
                unpack_cpu_layout(tensor)
                tensor = dequantize_module_weight(module)
            tensor = tensor.detach().float()
            if delta is not None:
                tensor = tensor + delta
            state[key] = tensor.to(device="cpu", dtype=dtype)  # GPU memory may still hold the run
    merged.load_state_dict(state, strict=True, assign=True)
    for name, buffer in merged.named_buffers():  # non-persistent ones (rotary inv_freq) are still on meta
        if buffer.is_meta:
            module_name, _, attribute = name.rpartition(".")
            merged.get_submodule(module_name).register_buffer(
                attribute, trained.get_buffer(name).detach().cpu().clone(), persistent=False
            )
    merged.tie_weights()
    return merged


def loaded_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype the base was loaded (and quantized) from; its norms and embeddings are float32 now
    (prepare_model_for_kbit_training), its quantized linears compute in bnb_4bit_compute_dtype."""
    dtype = getattr(model.config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def unpack_cpu_layout(weight: torch.nn.Parameter) -> None:
    """bitsandbytes' CPU backend may repack a 4-bit weight for AVX512-BF16 inference (load_policy turns that
    off); dequantize_4bit reads the standard layout only, so undo the repacking as bitsandbytes does before
    it saves one (exact for the 4-bit codes; the block scales were rounded to bf16 by the repacking)."""
    state = getattr(weight, "quant_state", None)
    if state is not None and getattr(state, "packing_format_for_cpu", False):
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

        weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, state)
