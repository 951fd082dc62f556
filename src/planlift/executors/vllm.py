"""vLLM's offline engine as the executor: one engine per process, `n` samples per prompt sharing the prompt.

`SamplingParams(n=k)` lets the k repeats of a prompt share its prefill, and prefix caching shares the
problem text between the with-reasoning and no-reasoning prompts. vLLM is imported lazily: the package and
every other backend work without it (`pip install planlift[vllm]`, or `make venv-vllm` for the CPU build).

Engine failures never leave `generate`: an exception from the engine, fewer outputs than prompts, an
output with fewer completions than asked, a completion without text or an aborted one fail only the
prompts they touch; those are generated again up to `max_retries` times, then masked
(`ExecutorResult(error=...)`) and counted by kind in `metrics()`. A request the engine refuses (a
prompt longer than `max_model_len`, which a long reasoning makes) fails alone and is not retried: the call
is split in halves down to that prompt (`split_on_refusal`). An empty string is an answer, not a failure.

Checkpoints whose tokenizer was saved as a generic `tokenizers` backend (our character tokenizer) get a
tokenizer-only directory: vLLM's AutoTokenizer would otherwise rebuild it as the model type's tokenizer and
drop spaces (the same trap `planlift.models.loading.load_tokenizer` avoids).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from planlift.errors import ConfigError
from planlift.executors.base import Executor, ExecutorResult, check_sampling, request_seed, split_on_refusal
from planlift.generation import cut_at_stop, encode_prompt, render_prompt
from planlift.models.loading import (
    GENERIC_TOKENIZER_CLASSES,
    load_tokenizer,
    locate_checkpoint,
    resolve_dtype,
)
from planlift.tasks.base import ChatPrompt

log = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def standalone_tokenizer_dir(checkpoint: str) -> str | None:
    """A directory with only the tokenizer files when `checkpoint` saved a generic tokenizers backend
    (so AutoTokenizer takes the declared class, not the model type's); None when vLLM can load it as is."""
    import json

    config = Path(checkpoint) / "tokenizer_config.json"
    if not config.is_file():
        return None
    if json.loads(config.read_text()).get("tokenizer_class") not in GENERIC_TOKENIZER_CLASSES:
        return None
    target = Path(tempfile.mkdtemp(prefix="planlift-tokenizer-"))
    for name in TOKENIZER_FILES:
        if (Path(checkpoint) / name).is_file():
            shutil.copy(Path(checkpoint) / name, target / name)
    return str(target)


def engine_args(
    source: str, gpu_memory_utilization: float, engine_kwargs: dict[str, Any] | None, **args: Any
) -> dict[str, Any]:
    """`vllm.LLM` arguments for the checkpoint `source`: `args`, then `engine_kwargs` over them; the GPU
    share on CUDA only; a tokenizer-only directory for a generic tokenizers backend."""
    out = {"model": source, **args, **(engine_kwargs or {})}
    if _has_cuda():
        out["gpu_memory_utilization"] = gpu_memory_utilization
    tokenizer_dir = standalone_tokenizer_dir(source)
    if tokenizer_dir is not None:
        out["tokenizer"] = tokenizer_dir
    return out


def import_vllm(choice: str = "executor=vllm") -> Any:
    """The vllm module; `choice`: the config choice that asked for it, named by the error without it."""
    try:
        import vllm
    except ImportError as error:
        raise ConfigError(
            f"{choice} needs vLLM: `pip install planlift[vllm]` on GPU machines, or `make venv-vllm` "
            f"for the CPU build in .venv-vllm ({error})"
        ) from None
    return vllm


class VLLMExecutor(Executor):
    """A frozen causal LM in vLLM's offline engine (`vllm.LLM`), created once per process.

    Args:
        pretrained: checkpoint directory, cached hub id, or `packaged:<name>`.
        temperature / top_p / max_new_tokens: sampling (authors: temperature 0.5).
        use_chat_template: None = the tokenizer's template when it has one.
        dtype: float32 on CPU (no AVX-512 bf16 here), bfloat16 on GPUs.
        seed: the engine's seed and the base of each request's seed (the run's seed; ranks add their rank
            so their streams differ).
        enable_prefix_caching / gpu_memory_utilization / max_model_len / tensor_parallel_size /
        enforce_eager: vLLM engine arguments; `engine_kwargs` passes any other.
        max_retries: engine calls after the first for the prompts whose generation failed (not for a
            request the engine refused: it would refuse it again).
        request_seeds: seed every sampled request from the run's seed and a counter kept across a resume,
            so a resumed run's executor samples as the uninterrupted run's; None = where CUDA is available
            (vLLM's CPU build fails seeded requests whose prefill is split: "CPU Generator does not use
            offset"), else the engine's generator, which restarts with a resumed run.
        llm: an engine already running `pretrained` to serve from instead of starting one (the planner's
            rollout engine when both share a base: `rollout.share_with_executor`).
    """

    # the seed counter too: a resumed run's executor samples as the uninterrupted run's would
    resume_fields = ("retried_prompts", "attempt_failures", "prompt_failures", "seed_counter")

    def __init__(
        self,
        pretrained: str,
        temperature: float = 0.5,
        top_p: float = 1.0,
        max_new_tokens: int = 16,
        dtype: str = "float32",
        use_chat_template: bool | None = None,
        seed: int = 0,
        enable_prefix_caching: bool = True,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        enforce_eager: bool = True,
        engine_kwargs: dict[str, Any] | None = None,
        allow_download: bool = False,
        max_retries: int = 1,
        request_seeds: bool | None = None,
        llm: Any = None,
    ) -> None:
        super().__init__()
        check_sampling(temperature, top_p, max_new_tokens)
        if max_retries < 0:
            raise ConfigError(f"executor.max_retries must be >= 0, got {max_retries}")
        if not 0 < gpu_memory_utilization <= 1:
            raise ConfigError(
                f"executor.gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}"
            )
        resolve_dtype(dtype, "executor.dtype")
        vllm = import_vllm()
        self.source = locate_checkpoint(
            pretrained,
            "executor.pretrained",
            allow_download,
        )
        self.tokenizer = load_tokenizer(self.source, local_files_only=not allow_download)
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.use_chat_template = use_chat_template
        self.dtype = dtype
        self.max_retries = max_retries
        self.retried_prompts = 0
        self.attempt_failures: Counter[str] = Counter()  # prompts of every failed attempt, by kind
        self.prompt_failures: Counter[str] = Counter()  # prompts that failed after their retries, by kind
        self.seed = seed + int(os.environ.get("RANK", 0))
        self.seed_counter = 0  # replies sampled so far: each request's seed follows from it
        self.request_seeds = _has_cuda() if request_seeds is None else request_seeds
        if llm is not None:
            log.info("vllm executor: served by the planner's rollout engine (%s)", self.source)
            self.llm = llm
        else:
            log.info("vllm executor: starting the engine for %s", self.source)
            self.llm = vllm.LLM(
                **engine_args(
                    self.source,
                    gpu_memory_utilization,
                    engine_kwargs,
                    dtype=dtype,
                    seed=self.seed,
                    enable_prefix_caching=enable_prefix_caching,
                    max_model_len=max_model_len,
                    tensor_parallel_size=tensor_parallel_size,
                    enforce_eager=enforce_eager,
                )
            )
        self._sampling_params = vllm.SamplingParams
        self._refusals = refusal_errors(vllm)

    @property
    def identity(self) -> str:
        return (
            f"vllm:{self.source}:t={self.temperature}:p={self.top_p}:max={self.max_new_tokens}"
            f":chat={self.use_chat_template}:dtype={self.dtype}:prompt=ids"
        )

    def render(self, prompt: ChatPrompt) -> str:
        return render_prompt(self.tokenizer, prompt, self.use_chat_template)

    def _generate(self, prompts: Sequence[ChatPrompt], n: int, greedy: bool) -> list[ExecutorResult]:
        greedy = greedy or self.temperature == 0
        results: list[ExecutorResult | None] = [None] * len(prompts)
        pending = list(range(len(prompts)))
        failures: dict[int, tuple[str, str]] = {}
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.retried_prompts += len(pending)
            outcomes = self._attempt([prompts[i] for i in pending], n, greedy)
            for i, outcome in zip(pending, outcomes, strict=True):
                if isinstance(outcome, ExecutorResult):
                    results[i] = outcome
                    failures.pop(i, None)
                else:
                    failures[i] = outcome
                    self.attempt_failures[outcome[0]] += 1
            # the engine refuses the same request again: not retried
            pending = [i for i, (kind, _) in failures.items() if kind != "refused"]
            if not pending:
                break
        for i, (kind, detail) in failures.items():
            self.prompt_failures[kind] += 1
            results[i] = ExecutorResult(error=f"{kind}: {detail}")
        if failures:
            log.warning(
                "vllm executor: %d of %d prompts failed, retried up to %d times (a refused one not): %s",
                len(failures),
                len(prompts),
                self.max_retries,
                ", ".join(f"{k}={v}" for k, v in sorted(Counter(k for k, _ in failures.values()).items())),
            )
        return results

    def _attempt(
        self, prompts: Sequence[ChatPrompt], n: int, greedy: bool
    ) -> list[ExecutorResult | tuple[str, str]]:
        """One engine call: per prompt its result, or (failure kind, detail)."""
        asked = 1 if greedy else n  # greedy is deterministic: one sample, repeated
        params = [
            self._sampling_params(
                n=asked,
                temperature=0.0 if greedy else self.temperature,
                top_p=1.0 if greedy else self.top_p,
                max_tokens=self.max_new_tokens,
                stop=list(prompt.stop) or None,
                seed=self._next_seed(asked) if self.request_seeds and not greedy else None,
            )
            for prompt in prompts
        ]
        # token ids, not text: the engine would add the tokenizer's BOS to the chat template's own
        inputs = [{"prompt_token_ids": encode_prompt(self.tokenizer, self.render(p))} for p in prompts]

        def call(requests: Sequence[int]) -> list[ExecutorResult | tuple[str, str]]:
            outputs = list(
                self.llm.generate(
                    [inputs[i] for i in requests], [params[i] for i in requests], use_tqdm=False
                )
            )
            if len(outputs) != len(requests):  # which prompt an output belongs to is unknown: all fail
                return [("output_count", f"{len(outputs)} outputs for {len(requests)} prompts")] * len(
                    requests
                )
            return [
                self._read(prompts[i], output, asked, n, greedy)
                for i, output in zip(requests, outputs, strict=True)
            ]

        def refused(error: BaseException) -> tuple[str, str]:
            log.warning("vllm executor: the engine refused a prompt: %s: %s", type(error).__name__, error)
            return ("refused", f"{type(error).__name__}: {error}")

        try:
            # a request the engine validates and refuses (a prompt longer than max_model_len) fails alone,
            # not with the batch it came in
            return split_on_refusal(call, range(len(prompts)), refused, self._refusals)
        except Exception as error:  # a dead engine, ...: never raised
            log.exception("vllm executor: generate failed for %d prompts", len(prompts))
            return [("engine_error", f"{type(error).__name__}: {error}")] * len(prompts)

    def _next_seed(self, samples: int) -> int:
        """A request's seed (vLLM seeds its reply j with seed + j): from the run's seed and a counter that
        moves on by `samples` and is resumed, not from the engine's generator, which restarts with it."""
        first = self.seed_counter
        self.seed_counter += samples
        return request_seed(self.seed, first)

    @staticmethod
    def _read(
        prompt: ChatPrompt, output: Any, asked: int, n: int, greedy: bool
    ) -> ExecutorResult | tuple[str, str]:
        completions = list(getattr(output, "outputs", None) or [])[:asked]  # extra completions are dropped
        if len(completions) < asked:
            return ("short_reply", f"{len(completions)} of n={asked} completions")
        texts = [getattr(c, "text", None) for c in completions]
        if not all(isinstance(text, str) for text in texts):
            return ("no_text", "a completion has no text")
        if any(getattr(c, "finish_reason", None) == "abort" for c in completions):
            return ("aborted", "the engine aborted the request")
        found = [cut_at_stop(text, prompt.stop) for text in texts]
        return ExecutorResult(texts=tuple(found * n if greedy else found))

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        out["retried_prompts"] = float(self.retried_prompts)
        out.update({f"failed_attempts/{k}": float(v) for k, v in self.attempt_failures.items()})
        out.update({f"failed_prompts/{k}": float(v) for k, v in self.prompt_failures.items()})
        return out


def refusal_errors(vllm: Any) -> tuple[type[BaseException], ...]:
    """The errors with which `vllm.LLM.generate` refuses a request it validates: vLLM's client errors
    (vLLM 0.32: `VLLMValidationError`, "This model's maximum context length is ..."), ValueError
    and TypeError (older versions)."""
    client = getattr(getattr(vllm, "exceptions", None), "VLLMClientError", None)
    return (ValueError, TypeError, *([client] if isinstance(client, type) else []))


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
