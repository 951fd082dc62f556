"""The RM's training losses (the authors' terms and weights, docs/reasoning_rm.md), as pure functions of its outputs.

Shapes: N = G * K rows grouped per problem (G groups of K candidates, the positive in column 0),
D dimensions, L labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dimension_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over dimensions of the mean cross-entropy. logits [N, D, L], labels [N, D]."""
    return sum(F.cross_entropy(logits[:, d], labels[:, d]) for d in range(logits.shape[1]))


def total_huber(predicted: torch.Tensor, gold: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Huber(delta) between the predicted total in [0, 1] and the gold total. Both [N]."""
    return F.huber_loss(predicted, gold, delta=delta)


def pairwise_pos_neg(scores: torch.Tensor) -> torch.Tensor:
    """mean over groups and negatives of -log sigmoid(s_pos - s_neg). scores [G, K]."""
    return -F.logsigmoid(scores[:, :1] - scores[:, 1:]).mean()


def neg_neg_ranking(scores: torch.Tensor, gold: torch.Tensor, margin: float = 0.15) -> torch.Tensor:
    """Rank negatives by their gold totals: mean over pairs whose gold gap >= margin of
    -log sigmoid(s_higher - s_lower); 0 when no pair qualifies. scores, gold [G, K]."""
    neg_scores, neg_gold = scores[:, 1:], gold[:, 1:]
    score_gap = neg_scores.unsqueeze(2) - neg_scores.unsqueeze(1)  # [G, K-1, K-1]: s_i - s_j
    gold_gap = neg_gold.unsqueeze(2) - neg_gold.unsqueeze(1)
    pairs = gold_gap >= margin  # i should score above j (each unordered pair counted once)
    if not pairs.any():
        return scores.new_zeros(())
    return -F.logsigmoid(score_gap[pairs]).mean()


def positive_lm(
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    embeddings: torch.Tensor,
    group_size: int,
    target_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy of the positives (column 0 of every group), read out through the
    backbone's input embeddings (no new parameters; the LM head itself of tied-embedding backbones such
    as the tiny Qwen2 and SmolLM2). Teaches the body what a correct trace predicts
    token by token, which the sequence-level terms alone give too weakly to a small model.
    hidden [N, T, H], input_ids / attention_mask [N, T], embeddings [V, H]; `target_mask` [N, T]
    (optional) keeps only the targets where it is 1, e.g. the reasoning span."""
    rows = torch.arange(0, hidden.shape[0], group_size, device=hidden.device)
    logits = hidden[rows, :-1].float() @ embeddings.float().T  # [G, T-1, V]
    # a target needs a real token before it too: under left padding, the last pad predicts no first token
    keep = (attention_mask[rows, 1:] == 1) & (attention_mask[rows, :-1] == 1)
    if target_mask is not None:
        keep &= target_mask[rows, 1:] == 1
    targets = input_ids[rows, 1:].masked_fill(~keep, -100)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def prefix_rubric(
    dimension_logits: torch.Tensor,
    total_logit: torch.Tensor | None,
    labels: torch.Tensor,
    gold_total: torch.Tensor,
    reasoning_mask: torch.Tensor,
    departs_at: torch.Tensor,
    group_size: int,
) -> torch.Tensor:
    """The rubric of every reasoning prefix: at each reasoning token of each candidate, the heads read
    the hidden state and are taught the positive's rubric while the candidate still equals its group's
    positive, and the candidate's own rubric from the first token in which it departs (where its flaw
    is introduced). Mean over those tokens of sum_d CE + BCE(total logit, gold total). At the last
    token this is the usual label of the whole candidate; before it, a dense, per-token form of the
    same labels that the localized negatives make available.
    dimension_logits [N, T, D, L], total_logit [N, T] or None, labels [N, D], gold_total [N],
    reasoning_mask [N, T], departs_at [N]."""
    n, t = reasoning_mask.shape
    positive = torch.arange(n, device=labels.device) // group_size * group_size
    before = torch.arange(t, device=labels.device)[None, :] < departs_at[:, None]  # [N, T]
    token_labels = torch.where(before[..., None], labels[positive][:, None, :], labels[:, None, :])
    token_total = torch.where(before, gold_total[positive][:, None], gold_total[:, None])
    counted = reasoning_mask == 1
    logits = dimension_logits[counted]  # [M, D, L]
    loss = F.cross_entropy(logits.flatten(0, 1), token_labels[counted].flatten(), reduction="none")
    loss = loss.view(-1, logits.shape[1]).sum(dim=1)
    if total_logit is not None:
        loss = loss + F.binary_cross_entropy_with_logits(
            total_logit[counted], token_total[counted], reduction="none"
        )
    return loss.mean()
