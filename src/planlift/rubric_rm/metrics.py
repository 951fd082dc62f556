"""RM evaluation metrics. Scores are grouped [G, K] with the positive in column 0."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch


def pairwise_accuracy(scores: torch.Tensor) -> float:
    """Share of (positive, negative) pairs where the positive scores higher. scores [G, K]."""
    return (scores[:, :1] > scores[:, 1:]).float().mean().item()


def group_accuracy(scores: torch.Tensor) -> float:
    """Share of groups whose positive scores above every negative. scores [G, K]."""
    return (scores[:, 0] > scores[:, 1:].max(dim=1).values).float().mean().item()


def total_errors(predicted: torch.Tensor, gold: torch.Tensor) -> dict[str, float]:
    """MAE and RMSE of the RM score against the gold total. Both [N]."""
    error = predicted.float() - gold.float()
    return {"total_mae": error.abs().mean().item(), "total_rmse": error.pow(2).mean().sqrt().item()}


def dimension_accuracy(logits: torch.Tensor, labels: torch.Tensor, names: Sequence[str]) -> dict[str, float]:
    """Per dimension, the share of rows whose arg-max label is the gold label. logits [N, D, L]."""
    correct = (logits.argmax(dim=-1) == labels).float().mean(dim=0)
    return {f"dim_acc/{name}": correct[i].item() for i, name in enumerate(names)}


def pairwise_accuracy_by_kind(scores: torch.Tensor, kinds: Sequence[str]) -> dict[str, float]:
    """Pairwise accuracy per negative kind. kinds: [G * K] row kinds (column 0 is the positive)."""
    groups, size = scores.shape
    wins: dict[str, list[float]] = defaultdict(list)
    for g in range(groups):
        for k in range(1, size):
            wins[kinds[g * size + k]].append(float(scores[g, 0] > scores[g, k]))
    return {f"pair_acc/{kind}": sum(v) / len(v) for kind, v in sorted(wins.items())}


def auroc(scores: Sequence[float], correct: Sequence[bool]) -> float:
    """AUROC of the score separating correct traces (positives) from flawed ones (torchmetrics)."""
    from torchmetrics.functional.classification import binary_auroc

    target = torch.tensor([int(c) for c in correct])
    if target.min() == target.max():
        raise ValueError("AUROC needs both correct and flawed traces")
    return binary_auroc(torch.tensor(list(scores), dtype=torch.float32), target).item()


def summarize_group_scores(
    scores: torch.Tensor,
    gold: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    kinds: list[str],
    group_size: int,
    names: list[str],
) -> dict[str, float]:
    """Every dev-group metric from flat rows (N = G * K): scores/gold [N], logits [N, D, L], labels [N, D]."""
    grouped = scores.view(-1, group_size)
    return {
        "pairwise_acc": pairwise_accuracy(grouped),
        "group_acc": group_accuracy(grouped),
        **total_errors(scores, gold),
        **dimension_accuracy(logits, labels, names),
        **pairwise_accuracy_by_kind(grouped, kinds),
    }
