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


def errors(predicted: torch.Tensor, gold: torch.Tensor, name: str) -> dict[str, float]:
    """`<name>_mae` and `<name>_rmse` of `predicted` against `gold`. Both [N]."""
    error = predicted.float() - gold.float()
    return {f"{name}_mae": error.abs().mean().item(), f"{name}_rmse": error.pow(2).mean().sqrt().item()}


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
    gold_scores: torch.Tensor,
    totals: torch.Tensor | None,
    gold_totals: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    kinds: list[str],
    group_size: int,
    names: list[str],
) -> dict[str, float]:
    """Every dev-group metric from flat rows (N = G * K): scores [N] against gold_scores [N] (the score the
    gold rubric gives: `score_mae`, zero for a perfect RM), the total head's totals [N] (None without one)
    against the gold totals [N] (`total_mae`), logits [N, D, L], labels [N, D]."""
    grouped = scores.view(-1, group_size)
    return {
        "pairwise_acc": pairwise_accuracy(grouped),
        "group_acc": group_accuracy(grouped),
        **errors(scores, gold_scores, "score"),
        **(errors(totals, gold_totals, "total") if totals is not None else {}),
        **dimension_accuracy(logits, labels, names),
        **pairwise_accuracy_by_kind(grouped, kinds),
    }
