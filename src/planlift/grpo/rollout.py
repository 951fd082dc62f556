"""Rollouts: G completions per problem sampled from the planner, with everything the update needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from planlift.grpo.engines import HFEngine, RolloutEngine
from planlift.models.policy import Policy
from planlift.tasks.base import Problem, Task


@dataclass
class Rollout:
    """G completions for each of P problems; B = P x G rows, grouped per problem."""

    problems: list[Problem]  # [P]
    group_size: int  # G
    prompt_ids: torch.Tensor  # [B, Tp] left-padded
    prompt_mask: torch.Tensor  # [B, Tp]
    completion_ids: torch.Tensor  # [B, Tc]
    completion_mask: torch.Tensor  # [B, Tc] 1 up to and including the first EOS / stop
    texts: list[str]  # [B] decoded completions
    # [B, Tc] log pi_rollout(token) as the engine sampled it (vLLM); None for the planner's own generate
    sampler_logprobs: torch.Tensor | None = None

    @property
    def completion_lengths(self) -> torch.Tensor:  # [B]
        return self.completion_mask.sum(dim=1)

    def to(self, device: torch.device | str) -> Rollout:
        """The same rollout with its tensors on `device` (an engine such as vLLM returns them on the CPU)."""
        sampler = self.sampler_logprobs
        return replace(
            self,
            prompt_ids=self.prompt_ids.to(device),
            prompt_mask=self.prompt_mask.to(device),
            completion_ids=self.completion_ids.to(device),
            completion_mask=self.completion_mask.to(device),
            sampler_logprobs=None if sampler is None else sampler.to(device),
        )


def sample_rollout(
    policy: Policy,
    task: Task,
    problems: Sequence[Problem],
    group_size: int,
    *,
    greedy: bool = False,
    temperature: float = 0.7,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    engine: RolloutEngine | None = None,
    seed: int = 0,
) -> Rollout:
    """G completions per problem from `engine` (default: the planner's own `generate`)."""
    prompts = [task.planner_prompt(p) for p in problems]
    stops = sorted({s for p in prompts for s in p.stop})
    out = (engine or HFEngine()).sample(
        policy,
        policy.render(prompts),
        group_size,
        greedy=greedy,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        stop=stops,
        seed=seed,
    )
    return Rollout(
        problems=list(problems),
        group_size=group_size,
        prompt_ids=out.prompt_ids,
        prompt_mask=out.prompt_mask,
        completion_ids=out.completion_ids,
        completion_mask=out.completion_mask,
        texts=out.texts,
        sampler_logprobs=out.logprobs,
    )


def completion_logprobs(
    model: torch.nn.Module, rollout: Rollout, rows: torch.Tensor | slice, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(completion token) and entropy for some rows: ([b, Tc], [b, Tc]).

    Only the completion positions' logits are materialised (`logits_to_keep`), which matters for large
    vocabularies.
    """
    from planlift.grpo.objective import token_logprobs

    prompt_ids, prompt_mask = rollout.prompt_ids[rows], rollout.prompt_mask[rows]
    completion_ids = rollout.completion_ids[rows]
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, torch.ones_like(completion_ids)], dim=1)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    length = completion_ids.shape[1]
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        logits_to_keep=length + 1,
    ).logits[:, :-1]
    return token_logprobs(logits, completion_ids, temperature)
