"""GRPO: tensor math (`objective`), rollouts and the LightningModule."""

from planlift.grpo.module import GRPOModule
from planlift.grpo.objective import group_advantages, grpo_loss, kl_divergence, token_logprobs
from planlift.grpo.rollout import Rollout, sample_rollout

__all__ = [
    "GRPOModule",
    "Rollout",
    "group_advantages",
    "grpo_loss",
    "kl_divergence",
    "sample_rollout",
    "token_logprobs",
]
