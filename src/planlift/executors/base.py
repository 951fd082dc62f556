"""The executor interface: prompts in, `n` sampled texts per prompt out.

An executor is frozen: it is never a submodule of the trained LightningModule and none of its
parameters reach an optimizer. Backends report failures per prompt (`ExecutorResult.error`) instead of
raising, so the reward can mask and count the affected samples.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from planlift.errors import ConfigError
from planlift.generation import strip_control_tokens
from planlift.resumable import Resumable
from planlift.tasks.base import ChatPrompt

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def check_sampling(temperature: float, top_p: float, max_new_tokens: int) -> None:
    """The sampling settings every backend shares: a clear error naming the key when one is invalid."""
    if temperature < 0:
        raise ConfigError(f"executor.temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"executor.top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        raise ConfigError(f"executor.max_new_tokens must be >= 1, got {max_new_tokens}")


@dataclass(frozen=True)
class ExecutorResult:
    """The `n` texts for one prompt, or the error that prevented them."""

    texts: tuple[str, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ExecutorStats:
    """Counters a run logs: how many calls, prompts and generations went to the executor."""

    calls: int = 0
    prompts: int = 0
    generations: int = 0
    failed_prompts: int = 0
    seconds: float = 0.0
    last_call_generations: int = 0


def split_on_refusal(
    call: Callable[[Sequence[T]], list[R]],
    items: Sequence[T],
    failed: Callable[[BaseException], R],
    refusals: tuple[type[BaseException], ...],
) -> list[R]:
    """`call(items)`; when it raises one of `refusals` for several items, each half again, down to single
    items, so that an item the backend refuses (a prompt longer than the engine's context, a batch too big
    for memory) fails alone instead of failing the batch it came in. A refused single item gets
    `failed(error)`. One refused item among n costs about 2 log2(n) further calls; an error outside
    `refusals` (a dead engine) is raised at once."""
    try:
        return call(items)
    except refusals as error:
        if len(items) == 1:
            return [failed(error)]
        half = len(items) // 2
        return split_on_refusal(call, items[:half], failed, refusals) + split_on_refusal(
            call, items[half:], failed, refusals
        )


def request_seed(base: int, index: int) -> int:
    """The seed of a request whose first reply is the run's `index`-th (vLLM seeds reply j with seed + j, so
    a caller moves `index` on by the replies each request asks for)."""
    return (base * 1_000_003 + index) % (2**31 - 1)


class Executor(Resumable, abc.ABC):
    """Turns (problem + reasoning) prompts into answers or programs."""

    def __init__(self) -> None:
        self.stats = ExecutorStats()

    @property
    def identity(self) -> str:
        """Names the frozen model, its prompt rendering, precision and sampling settings; keys the
        no-reasoning baseline cache, so every setting that can change a reply must be in it."""
        return type(self).__name__

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue this executor: its counters (`resume_fields` too)."""
        return {"stats": asdict(self.stats), **super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats = ExecutorStats(**state["stats"])
        super().load_state_dict(state)

    def visible_text(self, text: str) -> str:
        """What of `text`, a reasoning inside this executor's prompt, reaches the model: prompts are rendered
        without any control-token spelling (`strip_control_tokens` with this executor's tokenizer, or the
        common chat formats' without one). Judging reads every reasoning through it, so that the leakage
        detectors, the RM and the trace metrics read the text the executor reads: "7<|x|>2" would hide a 72
        from them and show it to the executor."""
        return strip_control_tokens(text, getattr(self, "tokenizer", None))

    def metrics(self) -> dict[str, float]:
        """Counters for the training log (`train/executor/<name>`): cumulative over the run."""
        return {
            "calls": float(self.stats.calls),
            "failed_prompts": float(self.stats.failed_prompts),
            "prompt_failure_rate": self.stats.failed_prompts / max(self.stats.prompts, 1),
        }

    @abc.abstractmethod
    def _generate(self, prompts: Sequence[ChatPrompt], n: int, greedy: bool) -> list[ExecutorResult]:
        """Backend call; one result per prompt."""

    def generate(self, prompts: Sequence[ChatPrompt], n: int, greedy: bool = False) -> list[ExecutorResult]:
        """`n` texts for each prompt. `greedy=True` overrides the configured sampling."""
        import time

        if n < 1:
            raise ValueError(f"executor sample count must be >= 1, got {n}")
        if not prompts:
            return []
        start = time.perf_counter()
        results = list(self._generate(prompts, n, greedy))
        if len(results) != len(prompts):
            raise RuntimeError(
                f"{type(self).__name__} returned {len(results)} results for {len(prompts)} prompts"
            )
        # a backend bug or a truncated batch: the prompt failed, masked and counted like any failure
        short = [i for i, r in enumerate(results) if r.ok and len(r.texts) != n]
        if short:
            counts = "/".join(str(c) for c in sorted({len(results[i].texts) for i in short}))
            error = f"{type(self).__name__} returned {counts} texts for a prompt, asked for {n}"
            log.warning("executor: %d of %d prompts failed: %s", len(short), len(prompts), error)
            for i in short:
                results[i] = ExecutorResult(error=error)
        self.stats.calls += 1
        self.stats.prompts += len(prompts)
        self.stats.generations += len(prompts) * n
        self.stats.failed_prompts += sum(not r.ok for r in results)
        self.stats.seconds += time.perf_counter() - start
        self.stats.last_call_generations = len(prompts) * n
        return results
