"""Rollout engines: where the planner's completions are sampled (`rollout=hf` | `vllm` | `vllm_server`).

`HFEngine` samples with the training model itself (`planlift.generation.generate`): nothing to sync, the
CPU default. `SyncedEngine`s hold a copy of the planner's weights, loaded after every optimizer step, and
return the log-probs of the sampled tokens so the update can measure (and correct) how far the sampler's
distribution is from the trained one: `planlift.grpo.vllm_engine.VLLMEngine` (in the training process) and
`planlift.grpo.vllm_server.VLLMServerEngine` (a separate vLLM server).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from planlift.generation import Generation, cut_at_stop, generate
from planlift.grpo.sharding import is_sharded
from planlift.models.policy import Policy

log = logging.getLogger(__name__)


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

    def start(self, policy: Policy) -> None:
        """Start or reach the engine (once; not part of the logged weight-sync time)."""

    def load_weights(self, policy: Policy) -> None:
        """Make the engine sample from the planner's current weights."""

    def metrics(self) -> dict[str, float]:
        return {}


class HFEngine(RolloutEngine):
    """The training model's own `generate` (the sampling stream is torch's global RNG, seeded by the caller)."""

    def sample(self, policy, texts, n, *, greedy, temperature, top_p, max_new_tokens, stop, seed):
        # A planner sharded with FSDP2 allocates its gathered-weight buffers at its first forward and reuses
        # them for training: made under inference mode (Lightning's validation with NCCL) they break every
        # later forward ("Inference tensors do not track version counter"). No-grad is enough for sampling.
        with torch.inference_mode(False) if is_sharded(policy.model) else contextlib.nullcontext():
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


class SyncedEngine(RolloutEngine):
    """An engine with its own copy of the weights (vLLM, in process or a server): `load_weights` puts the
    planner's current weights into it (`_load`, the engine's own way) and counts what it did.

    `sync_weights=False` never loads the trained weights (the engine keeps sampling the starting planner):
    only for measuring what a missing sync does to the rollout-training mismatch."""

    holds_weights = True

    def __init__(self, sync_weights: bool = True) -> None:
        self.sync_weights = sync_weights
        self.syncs = 0
        self.sync_seconds = 0.0
        self.generated_tokens = 0

    def load_weights(self, policy: Policy) -> None:
        self.start(policy)
        if not self.sync_weights:
            if self.syncs == 0:
                log.warning("rollouts: rollout.sync_weights=false: the engine keeps the starting weights")
            self.syncs += 1
            return
        began = time.perf_counter()
        self._load(policy)
        self.syncs += 1
        self.sync_seconds += time.perf_counter() - began

    def _load(self, policy: Policy) -> None:
        raise NotImplementedError

    def _counted(self, generation: Generation) -> Generation:
        self.generated_tokens += int(generation.completion_mask.sum())
        return generation

    def metrics(self) -> dict[str, float]:
        return {
            "syncs": float(self.syncs),
            "sync_seconds_total": self.sync_seconds,
            "generated_tokens": float(self.generated_tokens),
        }


@dataclass
class Sampled:
    """One completion as a vLLM engine returns it: token ids, each token's log-prob, the decoded text."""

    token_ids: list[int]
    logprobs: list[float]
    text: str


def request_seed(seed: int, index: int, prompt_ids: Sequence[int], asked: int) -> int:
    """The seed of one prompt's request to vLLM, whose reply j samples with `seed + j`: a hash of the step's
    sampling seed, the prompt's position and its tokens. Seeds by position (`seed + index * asked`) gave
    rank r's reply j the stream of rank r - 1's reply j + 1 (the step seeds of two ranks differ by one), and
    every validation batch of a step the same streams; hashed, two requests' seed ranges overlap with
    probability about requests^2 * asked / 2^31."""
    digest = hashlib.blake2b(f"{seed}:{index}:{list(prompt_ids)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**31 - asked)


def requests_per_prompt(n: int, greedy: bool) -> int:
    """Greedy samples are identical: ask the engine for one and repeat it."""
    return 1 if greedy else n


def to_generation(
    tokenizer, prompts: list[list[int]], samples: list[Sampled], stop: Sequence[str], n: int, greedy: bool
) -> Generation:
    """Left-padded prompts and right-padded completions with the sampler's log-probs, one row per sample.

    `prompts[i]` is the i-th prompt's token ids, `samples` its completions in order (one per prompt when
    greedy: repeated `n` times here)."""
    asked = requests_per_prompt(n, greedy)
    if len(samples) != asked * len(prompts):
        raise RuntimeError(f"rollouts: {len(samples)} completions for {len(prompts)} prompts x n={asked}")
    rows = [ids for ids in prompts for _ in range(n)]
    samples = [s for i in range(len(prompts)) for s in samples[i * asked : (i + 1) * asked] * (n // asked)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width_p = max(len(ids) for ids in rows)
    width_c = max(max((len(s.token_ids) for s in samples), default=0), 1)
    prompt_ids = torch.full((len(rows), width_p), pad, dtype=torch.long)
    prompt_mask = torch.zeros((len(rows), width_p), dtype=torch.long)
    completion_ids = torch.full((len(rows), width_c), pad, dtype=torch.long)
    completion_mask = torch.zeros((len(rows), width_c), dtype=torch.long)
    logprobs = torch.zeros((len(rows), width_c), dtype=torch.float32)
    for i, (ids, sample) in enumerate(zip(rows, samples, strict=True)):
        prompt_ids[i, width_p - len(ids) :] = torch.tensor(ids)
        prompt_mask[i, width_p - len(ids) :] = 1
        if len(sample.logprobs) != len(sample.token_ids):
            raise RuntimeError("rollouts: the engine returned no log-prob for some sampled tokens")
        if not sample.token_ids:
            continue
        completion_ids[i, : len(sample.token_ids)] = torch.tensor(sample.token_ids)
        completion_mask[i, : len(sample.token_ids)] = 1
        logprobs[i, : len(sample.token_ids)] = torch.tensor(sample.logprobs)
    return Generation(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        texts=[cut_at_stop(s.text, stop) for s in samples],
        logprobs=logprobs,
    )
