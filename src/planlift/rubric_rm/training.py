"""Training the rubric RM with Lightning: the authors' loss (docs/reasoning_rm.md) and the dev-group metrics.

    loss = dim_weight * sum_d CE(logits_d, label_d)                       (1.0)
         + total_weight * Huber(sigmoid(total), gold total)               (0.5; derived without a total head)
         + posneg_weight * mean -log sigmoid(score_pos - score_neg)       (0.7)
         + negneg_weight * ranking of negatives by gold total (margin)    (0.0)
         + lm_weight * next-token CE of the positives (training only)     (0.0; not in the authors' loss;
                                                                           lm_span: all tokens | reasoning)
         + prefix_weight * the rubric of every reasoning prefix (training only) (0.0; not in the authors'
                                        loss: the positive's labels until a candidate departs from it,
                                        the candidate's own from there; losses.prefix_rubric)

Logged: train/loss and train/loss/<term>, train/pairwise_acc; on the dev groups (fixed negatives)
val/loss, val/pairwise_acc, val/group_acc, val/score_mae, val/score_rmse (the score against the one the gold
rubric gives), val/total_mae, val/total_rmse (the total head against the gold total), val/dim_acc/<dimension>,
val/pair_acc/<negative kind>.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from planlift.callbacks.export import check_best_weights, checked_weights, weights_to_export, write_provenance
from planlift.distributed import gather_objects, rank, world_size
from planlift.errors import ConfigError
from planlift.rng import rng_states, set_rng_states
from planlift.rubric_rm import losses, metrics
from planlift.rubric_rm.model import RubricOutput, RubricRewardModel

log = logging.getLogger(__name__)

LM_SPANS = ("all", "reasoning")


class RubricRMModule(pl.LightningModule):
    """Args: the model (injected by src/train_rm.py), an optimizer factory (partial), an optional
    scheduler factory (partial, stepped every optimizer step), and the loss weights."""

    def __init__(
        self,
        model: RubricRewardModel,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        dim_weight: float = 1.0,
        total_weight: float = 0.5,
        posneg_weight: float = 0.7,
        negneg_weight: float = 0.0,
        negneg_margin: float = 0.15,
        huber_delta: float = 1.0,
        lm_weight: float = 0.0,
        lm_span: str = "all",
        prefix_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if lm_span not in LM_SPANS:
            raise ConfigError(f"module.lm_span must be one of {LM_SPANS}, got {lm_span!r}")
        for key, value in (
            ("dim_weight", dim_weight),
            ("total_weight", total_weight),
            ("posneg_weight", posneg_weight),
            ("negneg_weight", negneg_weight),
            ("lm_weight", lm_weight),
            ("prefix_weight", prefix_weight),
        ):
            if value < 0:
                raise ConfigError(f"module.{key} must be >= 0, got {value}")
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.weights = {
            "dim": dim_weight,
            "total": total_weight,
            "posneg": posneg_weight,
            "negneg": negneg_weight,
            "lm": lm_weight,
            "prefix": prefix_weight,
        }
        self.lm_span = lm_span
        self.negneg_margin = negneg_margin
        self.huber_delta = huber_delta
        self._val: list[dict[str, Any]] = []
        # the data position a resumed run continues from (rubric_rm.data.TrainingBatches)
        self.batches_seen = 0

    def losses(self, batch: dict[str, Any], out: RubricOutput) -> dict[str, torch.Tensor]:
        k = batch["group_size"]
        scores = out.score.view(-1, k)
        gold = batch["gold_total"]
        predicted_total = out.total if out.total is not None else out.derived
        terms = {
            "dim": losses.dimension_ce(out.dimension_logits, batch["dimension_labels"]),
            "total": losses.total_huber(predicted_total, gold, self.huber_delta),
            "posneg": losses.pairwise_pos_neg(scores),
            "negneg": losses.neg_neg_ranking(scores, gold.view(-1, k), self.negneg_margin)
            if self.weights["negneg"] > 0
            else scores.new_zeros(()),
        }
        if out.hidden is not None and self.weights["lm"] > 0:  # training only (validation: no hidden)
            terms["lm"] = losses.positive_lm(
                out.hidden,
                batch["input_ids"],
                batch["attention_mask"],
                self.model.model.get_input_embeddings().weight,
                k,
                batch["reasoning_mask"] if self.lm_span == "reasoning" else None,
            )
        if out.hidden is not None and self.weights["prefix"] > 0:
            token_logits, token_total = self.model.heads(out.hidden)
            terms["prefix"] = losses.prefix_rubric(
                token_logits,
                token_total,
                batch["dimension_labels"],
                gold,
                batch["reasoning_mask"] * batch["attention_mask"],
                batch["departs_at"],
                k,
            )
        terms["loss"] = sum(self.weights[name] * value for name, value in terms.items())
        return terms

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.batches_seen += 1
        dense = self.weights["lm"] > 0 or self.weights["prefix"] > 0
        out = self.model(batch["input_ids"], batch["attention_mask"], return_hidden=dense)
        terms = self.losses(batch, out)
        groups = out.score.shape[0] // batch["group_size"]
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=groups)
        for name in ("dim", "total", "posneg", "negneg", "lm", "prefix"):
            if name in terms:
                self.log(f"train/loss/{name}", terms[name], batch_size=groups)
        scores = out.score.detach().view(-1, batch["group_size"])
        self.log("train/pairwise_acc", metrics.pairwise_accuracy(scores), batch_size=groups)
        return terms["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self.model(batch["input_ids"], batch["attention_mask"])
        terms = self.losses(batch, out)
        self._val.append(
            {
                "loss": terms["loss"].item(),
                "groups": out.score.shape[0] // batch["group_size"],
                "scores": out.score.float().cpu(),
                "gold_scores": self.model.gold_score(batch["dimension_labels"], batch["gold_total"])
                .float()
                .cpu(),
                "totals": out.total.float().cpu() if out.total is not None else None,
                "logits": out.dimension_logits.float().cpu(),
                "labels": batch["dimension_labels"].cpu(),
                "gold": batch["gold_total"].cpu(),
                "kinds": batch["kinds"],
                "k": batch["group_size"],
            }
        )

    def on_validation_epoch_end(self) -> None:
        """The dev metrics over every rank's share (each rank computes them from all shares, so the
        checkpoint monitor and the logs see the whole dev set, not rank 0's part)."""
        self._val = [entry for share in gather_objects(self._val) for entry in share]
        if not self._val:
            return
        totals = [v["totals"] for v in self._val]
        summary = metrics.summarize_group_scores(
            torch.cat([v["scores"] for v in self._val]),
            torch.cat([v["gold_scores"] for v in self._val]),
            torch.cat(totals) if totals[0] is not None else None,
            torch.cat([v["gold"] for v in self._val]),
            torch.cat([v["logits"] for v in self._val]),
            torch.cat([v["labels"] for v in self._val]),
            [kind for v in self._val for kind in v["kinds"]],
            self._val[0]["k"],
            self.model.dimension_names,
        )
        # weighted by groups: a mean over the dev groups however the ranks and batches split them
        summary["loss"] = sum(v["loss"] * v["groups"] for v in self._val) / sum(
            v["groups"] for v in self._val
        )
        self._val.clear()
        for name, value in summary.items():
            self.log(
                f"val/{name}", value, prog_bar=name == "pairwise_acc", sync_dist=True
            )  # equal on all ranks

    def setup(self, stage: str) -> None:
        """Each rank its own torch stream for dropout: `seed_everything` seeds every rank alike, and with
        one stream all ranks would drop the same units of different examples. Rank 0 keeps the seeded
        stream, rank r moves to seed + r. A resumed run then restores each rank's saved streams
        (`on_load_checkpoint` runs after this hook)."""
        if stage == "fit" and self.global_rank > 0:
            torch.manual_seed(torch.initial_seed() + self.global_rank)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Beyond weights, optimizer, scheduler and loop state (Lightning's): the data position and every
        rank's random streams (LoRA dropout draws from torch's); saving is collective."""
        checkpoint["planlift"] = {"batches_seen": self.batches_seen, "ranks": gather_objects(rng_states())}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("planlift")
        if state is None:  # checkpoints from before resuming existed: the data restarts from its first batch
            log.warning("the checkpoint has no data position: training batches start again from the first")
            return
        self.batches_seen = state["batches_seen"]
        ranks = state["ranks"]
        if len(ranks) == world_size():
            set_rng_states(ranks[rank()])
        else:
            log.warning(
                "the checkpoint holds the random streams of %d ranks and this run has %d: each rank "
                "continues rank 0's, so the run does not repeat an uninterrupted one",
                len(ranks),
                world_size(),
            )
            set_rng_states(ranks[0])

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"},
        }


class ExportRewardModel(pl.Callback):
    """Writes the trained RM (LoRA merged) in the authors' layout, with its tokenizer, when fitting ends:
    the last step's weights, or with `weights="best"` those of the ModelCheckpoint's best checkpoint (by
    `val/pairwise_acc` in the shipped config); `planlift_export.json` beside them says which."""

    KEY = "callbacks.export_reward_model.weights"

    def __init__(self, dirpath: str, weights: str = "last") -> None:
        self.dirpath = Path(dirpath)
        self.weights = checked_weights(weights, self.KEY)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.weights == "best":
            check_best_weights(trainer, self.KEY)

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        provenance = weights_to_export(trainer, pl_module, self.weights, self.KEY)
        model: RubricRewardModel = pl_module.model
        model.merge_lora()
        model.save_pretrained(self.dirpath)
        write_provenance(self.dirpath, provenance)
        log.info(
            "exported the reward model (%s weights, step %d) to %s",
            provenance["weights"],
            provenance["step"],
            self.dirpath,
        )
