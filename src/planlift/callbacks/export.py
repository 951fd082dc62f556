"""Export the trained planner as a Hugging Face directory (LoRA merged) when fitting ends."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)


class ExportPlanner(pl.Callback):
    """Writes `dirpath` with `save_pretrained` (model and tokenizer) on rank 0.

    A LoRA planner is merged into its base weights in place: export is the last thing a run does.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        policy = pl_module.policy
        model = policy.model.merge_and_unload() if policy.lora else policy.model
        model.save_pretrained(self.dirpath)
        policy.tokenizer.save_pretrained(self.dirpath)
        log.info("exported the planner to %s", self.dirpath)
