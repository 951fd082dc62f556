"""The in-process Hugging Face executor: one batched, left-padded `generate` per call."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from planlift.errors import ConfigError
from planlift.executors.base import Executor, ExecutorResult, check_sampling, split_on_refusal
from planlift.generation import generate, render_prompt
from planlift.models.devices import resolve_device
from planlift.models.loading import load_model_and_tokenizer
from planlift.tasks.base import ChatPrompt

log = logging.getLogger(__name__)


class HFExecutor(Executor):
    """A frozen causal LM in this process (eval mode, no grad, parameters frozen).

    Args:
        pretrained: checkpoint directory, cached hub id, or `packaged:<name>`.
        temperature / top_p / max_new_tokens: sampling (authors: temperature 0.5).
        use_chat_template: None = use the tokenizer's template when it has one.
        max_batch_prompts: split a call into chunks of this many prompts (None = one generate).
        device: "auto" (this rank's GPU, else CPU) or a torch device string.
    """

    def __init__(
        self,
        pretrained: str,
        temperature: float = 0.5,
        top_p: float = 1.0,
        max_new_tokens: int = 16,
        dtype: str = "float32",
        use_chat_template: bool | None = None,
        max_batch_prompts: int | None = None,
        device: str = "auto",
        allow_download: bool = False,
    ) -> None:
        super().__init__()
        check_sampling(temperature, top_p, max_new_tokens)
        if max_batch_prompts is not None and max_batch_prompts < 1:
            raise ConfigError(f"executor.max_batch_prompts must be >= 1 or null, got {max_batch_prompts}")
        self.source = pretrained
        self.model, self.tokenizer = load_model_and_tokenizer(
            self.source, "executor.pretrained", dtype, allow_download
        )
        self.model.to(resolve_device(device, "executor.device"))
        self.model.eval()
        self.model.requires_grad_(False)
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.use_chat_template = use_chat_template
        self.dtype = dtype
        self.max_batch_prompts = max_batch_prompts

    @property
    def identity(self) -> str:
        return (
            f"hf:{self.source}:t={self.temperature}:p={self.top_p}:max={self.max_new_tokens}"
            f":chat={self.use_chat_template}:dtype={self.dtype}"
        )

    def render(self, prompt: ChatPrompt) -> str:
        return render_prompt(self.tokenizer, prompt, self.use_chat_template)

    def _generate(self, prompts: Sequence[ChatPrompt], n: int, greedy: bool) -> list[ExecutorResult]:
        chunk = self.max_batch_prompts or len(prompts)
        results: list[ExecutorResult] = []
        for start in range(0, len(prompts), chunk):
            results += self._generate_chunk(prompts[start : start + chunk], n, greedy)
        return results

    def _generate_chunk(self, prompts: Sequence[ChatPrompt], n: int, greedy: bool) -> list[ExecutorResult]:
        """One generate call; when it fails (out of memory, a prompt the model cannot take), each half again
        down to single prompts (`split_on_refusal`): only the prompts that fail alone are masked."""
        do_sample = not greedy and self.temperature > 0

        def call(part: Sequence[ChatPrompt]) -> list[ExecutorResult]:
            # one generate call stops (and cuts) at the union of the prompts' stop strings
            try:
                out = generate(
                    self.model,
                    self.tokenizer,
                    [self.render(p) for p in part],
                    n,
                    do_sample=do_sample,
                    temperature=self.temperature,
                    top_p=self.top_p,
                    max_new_tokens=self.max_new_tokens,
                    stop=sorted({s for p in part for s in p.stop}),
                )
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()  # the failed batch's blocks, before its halves are tried
                raise
            return [ExecutorResult(texts=tuple(out.texts[i * n : (i + 1) * n])) for i in range(len(part))]

        def failed(error: BaseException) -> ExecutorResult:
            log.warning("HF executor: generate failed for a prompt: %s: %s", type(error).__name__, error)
            return ExecutorResult(error=f"{type(error).__name__}: {error}")

        return split_on_refusal(call, prompts, failed, (RuntimeError, ValueError))
