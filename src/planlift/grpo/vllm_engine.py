"""Planner rollouts through vLLM (`rollout=vllm`): an engine colocated in the training process.

The engine starts from the planner's checkpoint (the base model's for a LoRA planner) the first time it is
needed; before each rollout the GRPO module loads the planner's current weights into it
(`load_weights`: full weights, or base + LoRA delta for a LoRA planner, `planlift.grpo.weights`), through
a worker extension (`planlift.grpo.vllm_worker`) called with `LLM.collective_rpc`, so the engine never
restarts. Prompts go in as the policy tokenizer's token ids (the same ids the update scores); each sampled
token comes back with its log-prob under the engine's sampling distribution (`logprobs_mode=
processed_logprobs`: after temperature), which the update compares with its own.

Colocated mode runs the engine in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, so weights pass by
reference); under DDP each rank holds its own engine (`distributed_executor_backend=external_launcher`).
`sleep: true` frees the engine's GPU memory between rollouts (vLLM's sleep mode, CUDA only).

One engine for planner and executor (`share_with_executor: true`, with `executor=vllm`): when the planner
is a LoRA adapter on the executor's base model, the engine holds the base once; the executor's requests
are plain, the planner's carry its adapter (`LoRARequest`), saved after every optimizer step under a new
adapter id (a new id also keeps the prefix cache from serving the old adapter's entries). On GPUs this
saves a whole copy of the base weights.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import torch

from planlift.errors import ConfigError
from planlift.generation import Generation, cut_at_stop
from planlift.grpo.engines import RolloutEngine
from planlift.grpo.weights import planner_weights
from planlift.models.policy import Policy

log = logging.getLogger(__name__)

WORKER_EXTENSION = "planlift.grpo.vllm_worker.WeightLoader"


class VLLMEngine(RolloutEngine):
    """A vLLM engine that samples the planner's rollouts with the planner's current weights.

    Args:
        dtype: the engine's dtype; null = the planner's (vLLM's `auto` would run a float32 checkpoint in
            bfloat16 on CPU, far from the float32 planner the update scores with).
        gpu_memory_utilization: the share of GPU memory vLLM may take (weights + KV cache); the trained
            planner, its optimizer state and the executor need the rest.
        max_model_len: the engine's context (default: the checkpoint's).
        enforce_eager / enable_prefix_caching: vLLM engine arguments; `engine_kwargs` passes any other.
        sleep: put the engine to sleep after each rollout and wake it before the next (CUDA only).
        sync_weights: false never loads the trained weights (the engine keeps sampling the starting
            planner): only for measuring what a missing sync does to the rollout-training mismatch.
        seed: the engine's seed (each request also gets its own, from the step's sampling seed).
        share_with_executor: serve the executor from this engine too (a LoRA planner on the executor's
            base; `executor=vllm`); `max_lora_rank` bounds the adapter's rank.
    """

    holds_weights = True

    def __init__(
        self,
        dtype: str | None = None,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int | None = None,
        enforce_eager: bool = True,
        enable_prefix_caching: bool = True,
        sleep: bool = False,
        sync_weights: bool = True,
        seed: int = 0,
        share_with_executor: bool = False,
        max_lora_rank: int = 64,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not 0 < gpu_memory_utilization <= 1:
            raise ConfigError(
                f"rollout.gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}"
            )
        if sleep and not torch.cuda.is_available():
            raise ConfigError("rollout.sleep needs CUDA (vLLM's sleep mode): set rollout.sleep=false on CPU")
        self.dtype = dtype
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len
        self.enforce_eager = enforce_eager
        self.enable_prefix_caching = enable_prefix_caching
        self.sleep = sleep
        self.sync_weights = sync_weights
        self.seed = seed + int(os.environ.get("RANK", 0))
        self.share_with_executor = share_with_executor
        self.max_lora_rank = max_lora_rank
        self.engine_kwargs = dict(engine_kwargs or {})
        self.llm: Any = None
        self._lora: Any = None  # the planner's current LoRARequest (shared engine)
        self._adapter_root: str | None = None
        self.syncs = 0
        self.sync_seconds = 0.0
        self.generated_tokens = 0

    # ---- the engine -------------------------------------------------------------------------------

    def start(self, policy: Policy) -> None:
        """Start the engine from the planner's checkpoint (once per process)."""
        if self.llm is not None:
            return
        from planlift.executors.vllm import engine_args, import_vllm
        from planlift.models.loading import locate_checkpoint

        source = locate_checkpoint(policy.source, "model.pretrained")
        if self.share_with_executor and not policy.lora:
            raise ConfigError(
                "rollout.share_with_executor needs a LoRA planner (model.lora) on the executor's base model"
            )
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: weights by reference
        vllm = import_vllm()
        args = engine_args(
            source,
            self.gpu_memory_utilization,
            self.engine_kwargs,
            dtype=self.dtype or str(next(policy.model.parameters()).dtype).removeprefix("torch."),
            seed=self.seed,
            max_model_len=self.max_model_len,
            enforce_eager=self.enforce_eager,
            enable_prefix_caching=self.enable_prefix_caching,
            worker_extension_cls=WORKER_EXTENSION,
            logprobs_mode="processed_logprobs",
        )
        if torch.cuda.is_available():
            args["enable_sleep_mode"] = self.sleep
        if self.share_with_executor:
            args.update(enable_lora=True, max_lora_rank=self.max_lora_rank, max_loras=1)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed and torch.distributed.get_world_size() > 1:
            args["distributed_executor_backend"] = "external_launcher"  # one engine per rank
        log.info("vllm rollouts: starting the engine for %s", source)
        with torch.inference_mode(False):  # Lightning's validation loop may be the first caller: weights
            self.llm = vllm.LLM(**args)  # made in inference mode could not be updated in place later
        self._vllm = vllm
        self._asleep = False

    def load_weights(self, policy: Policy) -> None:
        self.start(policy)
        if not self.sync_weights:
            if self.syncs == 0:
                log.warning(
                    "vllm rollouts: rollout.sync_weights=false: the engine keeps the starting weights"
                )
            self.syncs += 1
            return
        start = time.perf_counter()
        self._wake()
        if self.share_with_executor:
            self._load_adapter(policy)
        else:
            weights = list(planner_weights(policy))  # every rank gathers (FSDP), then loads its own engine
            self.llm.collective_rpc("load_planner_weights", args=(weights,))
            self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights
        self.syncs += 1
        self.sync_seconds += time.perf_counter() - start

    def _load_adapter(self, policy: Policy) -> None:
        """Save the planner's adapter and serve it under a new id (the old one is dropped)."""
        import shutil
        import tempfile

        from vllm.lora.request import LoRARequest

        if self._adapter_root is None:
            self._adapter_root = tempfile.mkdtemp(prefix="planlift-adapter-")
        version = self.syncs + 1
        path = os.path.join(self._adapter_root, f"v{version}")
        policy.model.save_pretrained(path)
        previous = self._lora
        self._lora = LoRARequest(f"planner-v{version}", version, path)
        if previous is not None:
            self.llm.llm_engine.remove_lora(previous.lora_int_id)
            shutil.rmtree(previous.lora_path, ignore_errors=True)

    def shared_llm(self, policy: Policy) -> Any:
        """The running engine, for `VLLMExecutor(llm=...)` (share_with_executor)."""
        if not self.share_with_executor:
            raise ConfigError("rollout.share_with_executor is false: the executor starts its own engine")
        self.start(policy)
        return self.llm

    def _wake(self) -> None:
        if self.sleep and self._asleep:
            self.llm.wake_up()
            self._asleep = False

    # ---- sampling ---------------------------------------------------------------------------------

    def sample(self, policy, texts, n, *, greedy, temperature, top_p, max_new_tokens, stop, seed):
        self.start(policy)
        self._wake()
        tokenizer = policy.tokenizer
        prompt_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        asked = 1 if greedy else n  # greedy samples are identical: one, repeated
        params = [
            self._vllm.SamplingParams(
                n=asked,
                temperature=0.0 if greedy else temperature,
                top_p=1.0 if greedy else top_p,
                max_tokens=max_new_tokens,
                stop=list(stop) or None,
                logprobs=0,  # the sampled token's log-prob only
                seed=(seed + i) % (2**31),
            )
            for i in range(len(texts))
        ]
        prompts = [{"prompt_token_ids": ids} for ids in prompt_ids]
        if self.share_with_executor and self._lora is None:
            self.load_weights(policy)  # the planner is its adapter: never sample the bare base for it
        outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=self._lora)
        if len(outputs) != len(texts):
            raise RuntimeError(f"vllm rollouts: {len(outputs)} outputs for {len(texts)} prompts")
        if self.sleep:
            self.llm.sleep(level=1)  # weights to CPU, KV cache freed: the update gets the memory
            self._asleep = True
        rows, samples = [], []
        for ids, output in zip(prompt_ids, outputs, strict=True):
            completions = list(output.outputs)
            if len(completions) != asked:
                raise RuntimeError(f"vllm rollouts: {len(completions)} completions for n={asked}")
            for completion in completions * (n if greedy else 1):
                rows.append(ids)
                samples.append(completion)
        return self._generation(tokenizer, rows, samples, stop)

    def _generation(
        self, tokenizer, rows: list[list[int]], samples: list[Any], stop: Sequence[str]
    ) -> Generation:
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
            tokens = list(sample.token_ids)
            if not tokens:
                continue
            completion_ids[i, : len(tokens)] = torch.tensor(tokens)
            completion_mask[i, : len(tokens)] = 1
            logprobs[i, : len(tokens)] = torch.tensor(_sampled_logprobs(sample, tokens))
        self.generated_tokens += int(completion_mask.sum())
        return Generation(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            completion_ids=completion_ids,
            completion_mask=completion_mask,
            texts=[cut_at_stop(s.text, stop) for s in samples],
            logprobs=logprobs,
        )

    def metrics(self) -> dict[str, float]:
        return {
            "syncs": float(self.syncs),
            "sync_seconds_total": self.sync_seconds,
            "generated_tokens": float(self.generated_tokens),
        }


def _sampled_logprobs(sample: Any, tokens: list[int]) -> list[float]:
    """The log-prob vLLM reported for each sampled token (`SamplingParams(logprobs=0)`)."""
    found = sample.logprobs
    if found is None or len(found) < len(tokens):
        raise RuntimeError("vllm rollouts: the engine returned no log-prob for some sampled tokens")
    return [found[j][token].logprob for j, token in enumerate(tokens)]
