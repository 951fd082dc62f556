"""Export the trained planner as a Hugging Face directory (LoRA merged) when fitting ends."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


class ExportPlanner(pl.Callback):
    """Writes `dirpath` with `save_pretrained` (model and tokenizer) on rank 0; an FSDP2-sharded planner
    is gathered first (every rank takes part).

    A LoRA planner is merged into its base weights in place: export is the last thing a run does.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from planlift.grpo.sharding import full_state_dict, is_sharded

        policy = pl_module.policy
        if is_sharded(policy.model):  # FSDP2: gather the full weights on every rank (a collective)
            state = full_state_dict(policy.model)
            if trainer.is_global_zero:
                self._save_gathered(policy, state)
            return
        if trainer.is_global_zero:
            model = policy.model.merge_and_unload() if policy.lora else policy.model
            model.save_pretrained(self.dirpath)
            policy.tokenizer.save_pretrained(self.dirpath)
            log.info("exported the planner to %s", self.dirpath)

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
