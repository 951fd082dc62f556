"""Supervised fine-tuning used by the bootstrap: (prompt, target) pairs, loss on the target only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

IGNORE_INDEX = -100


@dataclass(frozen=True)
class SFTExample:
    prompt: str  # rendered prompt, prefill included
    target: str  # what the model should write next (EOS is appended)


class SFTDataset(Dataset):
    def __init__(self, examples: Sequence[SFTExample], tokenizer, max_length: int) -> None:
        self.rows = []
        for example in examples:
            prompt = tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
            target = tokenizer(example.target, add_special_tokens=False)["input_ids"] + [
                tokenizer.eos_token_id
            ]
            ids = (prompt + target)[-max_length:]
            labels = ([IGNORE_INDEX] * len(prompt) + target)[-max_length:]
            self.rows.append((ids, labels))
        self.pad_id = tokenizer.pad_token_id

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[list[int], list[int]]:
        return self.rows[index]

    def collate(self, rows: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        """Right-padded input_ids / attention_mask / labels, each [b, T]."""
        length = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, (ids, labs) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(labs)] = torch.tensor(labs)
            attention_mask[i, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def loader(self, batch_size: int, seed: int) -> DataLoader:
        return DataLoader(
            self,
            batch_size=batch_size,
            shuffle=True,
            collate_fn=self.collate,
            generator=torch.Generator().manual_seed(seed),
            drop_last=len(self) >= batch_size,
        )


class SupervisedFineTuning(pl.LightningModule):
    """Next-token cross-entropy on target tokens; AdamW with linear warm-up and cosine decay."""

    def __init__(
        self,
        model: torch.nn.Module,
        lr: float,
        max_steps: int,
        warmup_steps: int = 0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.lr = lr
        self.max_steps = max_steps
        self.warmup_steps = warmup_steps
        self.weight_decay = weight_decay

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log("sft/loss", loss, prog_bar=True, on_step=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)

        def schedule(step: int) -> float:
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            progress = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
            return 0.5 * (1 + torch.cos(torch.tensor(min(progress, 1.0) * torch.pi)).item())

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
