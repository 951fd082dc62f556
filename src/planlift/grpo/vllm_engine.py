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
from typing import Any

import torch

from planlift.distributed import rank, world_size
from planlift.errors import ConfigError
from planlift.generation import encode_prompt, pad_as_end
from planlift.grpo.engines import Sampled, SyncedEngine, request_seed, requests_per_prompt, to_generation
from planlift.grpo.weights import planner_dtype, planner_weights
from planlift.models.policy import Policy

log = logging.getLogger(__name__)

WORKER_EXTENSION = "planlift.grpo.vllm_worker.WeightLoader"


class VLLMEngine(SyncedEngine):
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
        super().__init__(sync_weights)
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
        self.seed = seed + int(os.environ.get("RANK", 0))
        self.share_with_executor = share_with_executor
        self.max_lora_rank = max_lora_rank
        self.engine_kwargs = dict(engine_kwargs or {})
        self.llm: Any = None
        self._lora: Any = None  # the planner's current LoRARequest (shared engine)
        self._adapter_root: str | None = None

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
        vllm = import_vllm("rollout=vllm")
        args = engine_args(
            source,
            self.gpu_memory_utilization,
            self.engine_kwargs,
            dtype=self.dtype or planner_dtype(policy),
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
        if world_size() > 1:
            args["distributed_executor_backend"] = "external_launcher"  # one engine per rank
            # vLLM reads the rank from the environment, which Lightning leaves unset on rank 0
            os.environ.setdefault("RANK", str(rank()))
            os.environ.setdefault("WORLD_SIZE", str(world_size()))
            os.environ.setdefault("LOCAL_RANK", str(int(os.environ.get("LOCAL_RANK", 0))))
        log.info("vllm rollouts: starting the engine for %s", source)
        with torch.inference_mode(False):  # Lightning's validation loop may be the first caller: weights
            self.llm = vllm.LLM(**args)  # made in inference mode could not be updated in place later
        self._vllm = vllm
        self._asleep = False

    def _load(self, policy: Policy) -> None:
        self._wake()
        if self.share_with_executor:
            self._load_adapter(policy)
        else:
            # every rank gathers (FSDP) and gets every weight, then loads its own engine
            weights = list(planner_weights(policy, every_rank=True))
            self.llm.collective_rpc("load_planner_weights", args=(weights,))
            self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights

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
        prompt_ids = [encode_prompt(tokenizer, text) for text in texts]
        asked = requests_per_prompt(n, greedy)
        params = [
            self._vllm.SamplingParams(
                n=asked,
                temperature=0.0 if greedy else temperature,
                top_p=1.0 if greedy else top_p,
                max_tokens=max_new_tokens,
                stop=list(stop) or None,
                stop_token_ids=pad_as_end(tokenizer, [tokenizer.eos_token_id]) or None,
                logprobs=0,  # the sampled token's log-prob only
                seed=request_seed(seed, i, prompt_ids[i], asked),
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
        samples = [
            Sampled(list(c.token_ids), _sampled_logprobs(c), c.text) for o in outputs for c in o.outputs
        ]
        return self._counted(to_generation(tokenizer, prompt_ids, samples, stop, n, greedy))


def _sampled_logprobs(completion: Any) -> list[float]:
    """The log-prob vLLM reported for each sampled token (`SamplingParams(logprobs=0)`)."""
    found = completion.logprobs or []
    return [found[j][token].logprob for j, token in enumerate(completion.token_ids) if j < len(found)]
