"""Rollout engines: where the planner's completions are sampled (`rollout=hf` | `rollout=vllm`).

`HFEngine` samples with the training model itself (`planlift.generation.generate`): nothing to sync, the
CPU default. `planlift.grpo.vllm_engine.VLLMEngine` samples with a vLLM engine that holds a copy of the
planner's weights, loaded after every optimizer step, and returns the log-probs of the sampled tokens so
the update can measure (and correct) how far the sampler's distribution is from the trained one.
"""

from __future__ import annotations

from collections.abc import Sequence

from planlift.generation import Generation, generate
from planlift.models.policy import Policy


class RolloutEngine:
    """Samples `n` completions per prompt text; rows grouped per prompt ([p0s0, p0s1, ..., p1s0, ...])."""

    #: whether the engine holds its own copy of the weights (then `load_weights` runs after each step)
    holds_weights = False

    def sample(
        self,
        policy: Policy,
        texts: Sequence[str],
        n: int,
        *,
        greedy: bool,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        stop: Sequence[str],
        seed: int,
    ) -> Generation:
        raise NotImplementedError

    def load_weights(self, policy: Policy) -> None:
        """Make the engine sample from the planner's current weights."""

    def metrics(self) -> dict[str, float]:
        return {}


class HFEngine(RolloutEngine):
    """The training model's own `generate` (the sampling stream is torch's global RNG, seeded by the caller)."""

    def sample(self, policy, texts, n, *, greedy, temperature, top_p, max_new_tokens, stop, seed):
        return generate(
            policy.model,
            policy.tokenizer,
            texts,
            n,
            do_sample=not greedy,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            stop=stop,
        )
