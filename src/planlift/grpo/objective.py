"""GRPO math on tensors: group advantages, token log-probs, KL estimators and the clipped loss.

Shapes: B = P problems x G samples (rows grouped per problem), T = completion length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

AGGREGATIONS = ("token_mean", "sequence_mean", "dr_grpo")
KL_ESTIMATORS = ("k2", "k3")  # as loss terms; k1's gradient is zero in expectation (kl_divergence)


def group_advantages(
    rewards: torch.Tensor, mask: torch.Tensor, group_size: int, scale_by_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """A_i = (r_i - mean_g) / (std_g + eps) within each group, over unmasked samples only.

    rewards [B] float, mask [B] bool -> advantages [B] float32. Masked samples, groups with fewer than two
    unmasked samples and groups whose unmasked rewards are all equal get 0. std is the unbiased sample std
    (torch's default, as the authors' code). Dr. GRPO: scale_by_std=False leaves r_i - mean_g.
    In float64: a float32 mean of equal rewards can miss them by an ulp, and that 1e-8 over (std + eps)
    made advantages of +-0.05 (G=3) to 0.1 (G=8), all of one sign, in a group that carries no signal.
    """
    r = rewards.view(-1, group_size).double()
    m = mask.view(-1, group_size).bool()
    count = m.sum(dim=1, keepdim=True)
    mean = torch.where(m, r, 0.0).sum(dim=1, keepdim=True) / count.clamp(min=1)
    centered = torch.where(m, r - mean, 0.0)
    advantages = centered
    if scale_by_std:
        std = ((centered**2).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)).sqrt()
        advantages = centered / (std + eps)  # groups with std 0 are not informative: zeroed below
    highest = torch.where(m, r, -torch.inf).amax(dim=1, keepdim=True)
    lowest = torch.where(m, r, torch.inf).amin(dim=1, keepdim=True)
    informative = (count >= 2) & (highest > lowest)
    return torch.where(informative, advantages, 0.0).float().view(-1)


def token_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(target) and the entropy of pi at each position, pi = softmax(logits / temperature).

    logits [B, T, V], targets [B, T] -> (logprobs [B, T], entropy [B, T]), in float32. The entropy is a
    metric, computed without gradient: in the graph it kept two [B, T, V] float32 tensors alive until the
    backward (about 2.5 GB for a 152k vocabulary, 4 x 512 tokens).
    """
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    logprobs = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logprobs, entropy


def kl_divergence(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token KL penalty from samples of pi (Schulman's estimators), differentiated as a loss term.
    [B, T] -> [B, T]. With r = pi_ref / pi, what the gradient follows in expectation over pi:

    k2 = (log r)^2 / 2: grad KL(pi || pi_ref);
    k3 = r - log r - 1 (the default, as TRL's and DeepSeek's GRPO): grad KL(pi_ref || pi), the reverse
         KL; it is the lower-variance estimate of KL(pi || pi_ref)'s value, not of its gradient.
    k1 = -log r is not offered: E_pi[grad log pi] = 0, so as a loss term it penalises nothing.
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.exp(log_ratio) - log_ratio - 1
    raise ValueError(f"unknown KL estimator {estimator!r}; known: {KL_ESTIMATORS}")


@dataclass(frozen=True)
class LossNormalizer:
    """Full-batch constants, so micro-batch losses add up to the loss of the whole batch.

    token_mean: sum over tokens / total unmasked tokens (DAPO);
    sequence_mean: mean over sequences of the per-sequence token mean (original GRPO);
    dr_grpo: sum over tokens / (rows x max completion length) (Dr. GRPO): a constant of the batch's shape,
             masked and empty rows included, so that a step's size does not grow as samples are masked.

    Over several ranks (DDP, FSDP) the totals are those of every rank's batch (`counts` summed by the
    caller) and the loss is multiplied by the number of ranks: the gradients are averaged over the ranks,
    so the result is the loss of the global batch. With per-rank totals a token on a rank whose completions
    are short would weigh more than one on a rank whose completions are long.
    """

    aggregation: str
    total_tokens: float
    total_sequences: float
    total_rows: float
    max_length: int
    ranks: int = 1

    @staticmethod
    def counts(token_mask: torch.Tensor) -> tuple[float, float, float]:
        """(unmasked tokens, sequences with at least one, rows) of this batch."""
        tokens, sequences = token_mask.sum(), (token_mask.sum(dim=1) > 0).sum()
        return float(tokens.item()), float(sequences.item()), float(token_mask.shape[0])

    @classmethod
    def for_batch(
        cls,
        aggregation: str,
        token_mask: torch.Tensor,
        max_length: int,
        global_counts: tuple[float, float, float] | None = None,
        ranks: int = 1,
    ) -> LossNormalizer:
        """global_counts: `counts` summed over the `ranks` ranks (None: this batch is the whole batch)."""
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown loss aggregation {aggregation!r}; known: {AGGREGATIONS}")
        tokens, sequences, rows = global_counts if global_counts is not None else cls.counts(token_mask)
        return cls(aggregation, max(tokens, 1.0), max(sequences, 1.0), max(rows, 1.0), max_length, ranks)

    def reduce(self, per_token: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        masked = per_token * token_mask
        if self.aggregation == "token_mean":
            total = masked.sum() / self.total_tokens
        elif self.aggregation == "sequence_mean":
            lengths = token_mask.sum(dim=1).clamp(min=1)
            total = (masked.sum(dim=1) / lengths).sum() / self.total_sequences
        else:
            total = masked.sum() / (self.total_rows * self.max_length)
        return total * self.ranks


@dataclass
class LossTerms:
    loss: torch.Tensor  # scalar, differentiable
    policy_loss: torch.Tensor  # scalar
    kl: torch.Tensor | None  # scalar, aggregated like the loss
    clip_fraction: torch.Tensor  # scalar: share of unmasked tokens whose gradient the clip removed


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    token_mask: torch.Tensor,
    normalizer: LossNormalizer,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    is_weights: torch.Tensor | None = None,
) -> LossTerms:
    """Clipped surrogate with an optional KL penalty.

    logprobs / old_logprobs / ref_logprobs / token_mask / is_weights: [B, T]; advantages: [B].
    per-token loss = -w min(rho A, clip(rho, 1 - clip_low, 1 + clip_high) A) + kl_coef * KL,
    rho = exp(logprobs - old_logprobs), w = the truncated importance weight of a token sampled by another
    engine (`truncated_is_weights`; 1 when None). With one update per rollout (old = logprobs.detach())
    rho = 1 and the gradient is -A * grad log pi, the authors' update.
    """
    mask = token_mask.float()
    # positions past a completion's end take no part: their log-ratios are set to 0 before any exp, so an
    # overflow there cannot reach the loss or its gradient as inf * 0 = nan
    valid = token_mask.bool()
    old_logprobs = torch.where(valid, old_logprobs, logprobs.detach())
    if ref_logprobs is not None:
        ref_logprobs = torch.where(valid, ref_logprobs, logprobs.detach())
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages.unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * adv
    per_token_policy = -torch.min(unclipped, clipped)
    if is_weights is not None:
        per_token_policy = per_token_policy * is_weights
    per_token = per_token_policy
    kl = None
    if ref_logprobs is not None:
        kl_tokens = kl_divergence(logprobs, ref_logprobs, kl_estimator)
        if kl_coef > 0:
            per_token = per_token + kl_coef * kl_tokens
        kl = normalizer.reduce(kl_tokens.detach(), mask)
    # the clipped branch wins the min and cuts the gradient: ratio above 1 + clip_high with A > 0, or
    # below 1 - clip_low with A < 0 (a ratio out of bounds on the other side keeps its gradient)
    was_clipped = ((ratio > 1 + clip_high) & (adv > 0)) | ((ratio < 1 - clip_low) & (adv < 0))
    clip_fraction = (was_clipped.float() * mask).sum() / mask.sum().clamp(min=1)
    return LossTerms(
        loss=normalizer.reduce(per_token, mask),
        policy_loss=normalizer.reduce(per_token_policy.detach(), mask),
        kl=kl,
        clip_fraction=clip_fraction.detach(),
    )


def truncated_is_weights(
    train_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, cap: float
) -> torch.Tensor:
    """min(pi_train / pi_sampler, cap) per token, without gradient: corrects for tokens sampled by an
    engine whose distribution differs from the trained model's (vLLM kernels, a stale sync). [B, T]."""
    return torch.exp(train_logprobs.detach() - sampler_logprobs).clamp(max=cap)
