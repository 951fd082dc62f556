"""GRPO: tensor math (`objective`), rollouts and the LightningModule."""

from planlift.lazy import lazy_exports

EXPORTS = {
    "GRPOModule": "module",
    "Rollout": "rollout",
    "group_advantages": "objective",
    "grpo_loss": "objective",
    "kl_divergence": "objective",
    "sample_rollout": "rollout",
    "token_logprobs": "objective",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
