"""GRPO for a reasoning planner trained with an executor-grounded reward.

The algorithm's choices, each a constructor argument (defaults follow the authors where they chose):
1. Rollouts: G = `num_generations` samples per problem from the current planner (temperature 0.7,
   top-p 1.0); the executor is frozen and outside this module (never in the optimizer).
2. Reward: `ExecutorGroundedReward` (exec_only | grounded | uplift_only | rm_only | code_gated).
   Samples whose executor or RM call failed are masked: out of the group statistics and the loss.
3. Advantages: A = (r - mean_group) / (std_group + 1e-6) over unmasked samples (`scale_rewards=True`);
   `scale_rewards=False` keeps r - mean_group (Dr. GRPO).
4. Surrogate: PPO-style clipped ratio to the rollout-time policy, bounds (1 - clip_low, 1 + clip_high).
   With `num_iterations=1` the ratio is exactly 1 and the update is -A * grad log pi (the authors').
   The rollout-time log-probs are recomputed in eval mode, as the rollout was sampled; active dropout
   (LoRA's) makes the update's differ from them, which `disable_dropout=True` removes.
5. KL to a reference policy: `kl_coef` (0.05 in conf/algorithm/grpo.yaml, see docs/learning.md; 0 in the
   authors' update, this class's default and the experiment presets). The reference is the
   adapter-disabled model under LoRA, else a frozen copy of the initial planner; estimator k3 (its
   gradient follows KL(pi_ref || pi), as TRL's) | k2 (KL(pi || pi_ref)): `objective.kl_divergence`.
6. Loss aggregation: token_mean (DAPO; the default, not the authors': their code loop took each
   sequence's token mean, `sequence_mean`) | sequence_mean | dr_grpo (sum / (B x max_len)). Totals are
   over every rank's batch, so DDP and FSDP optimise the loss of the global batch.
7. Masking: completion tokens after the first EOS (or stop string) never enter the loss (the authors'
   code included padding).
8. Log-probs are taken at the sampling temperature; micro-batches accumulate to the full-batch loss, and
   DDP all-reduces the gradients once per optimizer step (in the last micro-batch's backward).
9. Rollout engine: the planner's own `generate` (`rollout=hf`) or vLLM (`rollout=vllm` in process,
   `rollout=vllm_server` in its own), which gets the planner's weights after every optimizer step
   (`train/time/weight_sync`) and returns the log-probs it sampled with; their distance to the recomputed
   ones is logged (`train/rollout/logprob_abs_diff_*`) and, with `tis_cap: C`, each token's loss is
   weighted by min(pi_train / pi_rollout, C) (truncated importance sampling); pi_train is the
   eval-mode recompute of item 4 when `num_iterations` > 1 (no dropout noise), else the update's own.

Diagnostics: every step logs the trace metrics of the sampled completions (`train/trace/*`, including
the mixture of trace kinds `train/trace/kind/*` on the procedural task) next to the reward terms and
`frac_reward_zero_std`; every validation judges the greedy planner (`val/*`) and, with
`val_pass_samples: G`, G samples per problem at the training temperature (`val/pass@G`, the headroom
GRPO can select from, and `val/sampled/*`, what the policy samples).

`trainer.max_steps` counts optimizer steps: one per rollout batch when `num_iterations=1`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch

from planlift.distributed import gather_objects, rank, reduce_over_ranks, sum_over_ranks, world_size
from planlift.errors import ConfigError
from planlift.grpo.engines import HFEngine, RolloutEngine
from planlift.grpo.objective import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    LossNormalizer,
    group_advantages,
    grpo_loss,
    truncated_is_weights,
)
from planlift.grpo.rank_metrics import batch_reduction
from planlift.grpo.rollout import Rollout, completion_logprobs, sample_rollout
from planlift.judging import BaselineCache, add_tallies, failure_counts, judge_reasonings, pass_counts, tally
from planlift.models.dropout import active_dropout
from planlift.models.dropout import disable_dropout as disable_dropout_in
from planlift.models.loading import resolve_dtype
from planlift.models.policy import Policy
from planlift.rewards.grounded import ExecutorGroundedReward
from planlift.rewards.records import RewardBatch
from planlift.rng import rng_states, set_rng_states
from planlift.tasks.base import Problem, Task

log = logging.getLogger(__name__)


class GRPOModule(pl.LightningModule):
    def __init__(
        self,
        policy: Policy,
        reward: ExecutorGroundedReward,
        task: Task,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        num_generations: int = 4,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
        num_iterations: int = 1,
        micro_batch_size: int | None = None,
        scale_rewards: bool = True,
        clip_low: float = 0.2,
        clip_high: float = 0.2,
        kl_coef: float = 0.0,
        kl_estimator: str = "k3",
        loss_aggregation: str = "token_mean",
        max_grad_norm: float | None = 1.0,
        val_executor_samples: int = 1,
        val_pass_samples: int = 0,
        log_samples_every: int = 10,
        seed: int = 0,
        rollout_engine: RolloutEngine | None = None,
        tis_cap: float | None = None,
        disable_dropout: bool = False,
        fsdp_compute_dtype: str | None = None,
    ) -> None:
        super().__init__()
        if num_generations < 2:
            raise ConfigError(
                f"algorithm.num_generations must be >= 2 (group advantages), got {num_generations}"
            )
        if num_iterations < 1:
            raise ConfigError(f"algorithm.num_iterations must be >= 1, got {num_iterations}")
        if micro_batch_size is not None and micro_batch_size < 1:
            raise ConfigError(f"algorithm.micro_batch_size must be >= 1 or null, got {micro_batch_size}")
        if loss_aggregation not in AGGREGATIONS:
            raise ConfigError(
                f"algorithm.loss_aggregation must be one of {list(AGGREGATIONS)}, got {loss_aggregation!r}"
            )
        if kl_estimator not in KL_ESTIMATORS:
            why = " (k1's gradient is zero in expectation: as a loss term it penalises nothing)"
            raise ConfigError(
                f"algorithm.kl_estimator must be one of {list(KL_ESTIMATORS)}, got {kl_estimator!r}"
                + (why if kl_estimator == "k1" else "")
            )
        if kl_coef < 0 or clip_low < 0 or clip_high < 0:
            raise ConfigError("algorithm.kl_coef, clip_low and clip_high must be >= 0")
        if val_pass_samples < 0:
            raise ConfigError(f"algorithm.val_pass_samples must be >= 0, got {val_pass_samples}")
        if temperature <= 0:
            raise ConfigError(f"algorithm.temperature must be > 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ConfigError(f"algorithm.top_p must be in (0, 1], got {top_p}")
        if max_new_tokens < 1:
            raise ConfigError(f"algorithm.max_new_tokens must be >= 1, got {max_new_tokens}")
        if max_grad_norm is not None and not max_grad_norm > 0:  # Lightning skips clipping at <= 0
            raise ConfigError(
                f"algorithm.max_grad_norm must be > 0, or null to turn clipping off, got {max_grad_norm}"
            )
        if val_executor_samples < 1:
            raise ConfigError(f"algorithm.val_executor_samples must be >= 1, got {val_executor_samples}")
        if tis_cap is not None and tis_cap < 1:
            raise ConfigError(f"algorithm.tis_cap must be >= 1 or null, got {tis_cap}")
        if fsdp_compute_dtype is not None:
            resolve_dtype(fsdp_compute_dtype, "algorithm.fsdp_compute_dtype")
        self.automatic_optimization = False
        self.policy = policy
        self.planner = policy.model  # the only registered submodule: the executor is not part of this module
        self.reward = reward
        self.task = task
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_generations = num_generations
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.num_iterations = num_iterations
        self.micro_batch_size = micro_batch_size
        self.scale_rewards = scale_rewards
        self.clip_low = clip_low
        self.clip_high = clip_high
        self.kl_coef = kl_coef
        self.kl_estimator = kl_estimator
        self.loss_aggregation = loss_aggregation
        self.max_grad_norm = max_grad_norm
        self.val_executor_samples = val_executor_samples
        self.val_pass_samples = val_pass_samples
        self.log_samples_every = log_samples_every
        self.seed = seed
        self.engine = rollout_engine or HFEngine()
        self.tis_cap = tis_cap
        self.fsdp_compute_dtype = fsdp_compute_dtype
        if disable_dropout:
            log.info(
                "algorithm.disable_dropout: %d dropout modules set to p=0", disable_dropout_in(self.planner)
            )
        self._engine_step: int | None = None  # the optimizer step whose weights the engine holds
        self._sync_seconds = 0.0
        self.val_baseline_cache = BaselineCache()
        self._val_totals: dict[str, tuple[float, int]] = {}  # this rank's validation sums and counts
        self.batches_seen = 0  # the data position a resumed run continues from (planlift.data)
        self._reference: list[torch.nn.Module] = []  # a list keeps the copy out of state_dict and DDP

    # ---- one GRPO step ----------------------------------------------------------------------------

    def training_step(self, problems: list[Problem], batch_idx: int) -> None:
        self.batches_seen += 1
        torch.manual_seed(self._step_seed())
        timings: dict[str, float] = {}
        if self.engine.holds_weights:
            self.sync_engine()
            timings["weight_sync"] = self._sync_seconds  # this step's weights, loaded here or at validation
        with _timed(timings, "rollout"):
            rollout = self.sample(problems, self.num_generations)
        scores = self.reward(problems, rollout.texts, self.num_generations)
        advantages = group_advantages(scores.rewards, scores.mask, self.num_generations, self.scale_rewards)
        with _timed(timings, "update"):
            update, counts = self.update_policy(
                rollout, advantages.to(self.device), scores.mask.to(self.device)
            )
        self._log_step(rollout, scores, advantages, update, counts, timings)

    def sync_engine(self) -> None:
        """Load the planner's weights into the rollout engine once per optimizer step (a collective under
        FSDP: every rank calls it at the same step)."""
        if self.engine.holds_weights and self._engine_step != self.global_step:
            self.engine.start(self.policy)  # engine start-up is not sync time
            start = time.perf_counter()
            self.engine.load_weights(self.policy)
            self._sync_seconds = time.perf_counter() - start
            self._engine_step = self.global_step

    def sample(
        self, problems: list[Problem], group_size: int, greedy: bool = False, seed: int | None = None
    ) -> Rollout:
        self.sync_engine()
        rollout = sample_rollout(
            self.policy,
            self.task,
            problems,
            group_size,
            greedy=greedy,
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            engine=self.engine,
            seed=self._step_seed() if seed is None else seed,
        )
        return rollout.to(self.device)  # the update mixes it with tensors on the planner's device

    def update_policy(
        self, rollout: Rollout, advantages: torch.Tensor, sample_mask: torch.Tensor
    ) -> tuple[dict[str, float], dict[str, float]]:
        """`num_iterations` optimizer steps on the rollout, each accumulated over micro-batches. Returns the
        update's statistics and how many tokens each per-token mean among them is over."""
        token_mask = rollout.completion_mask * sample_mask.unsqueeze(1).long()
        counts = sum_over_ranks(LossNormalizer.counts(token_mask), self.device)  # the global batch's totals
        normalizer = LossNormalizer.for_batch(
            self.loss_aggregation, token_mask, self.max_new_tokens, tuple(counts), world_size()
        )
        batch = rollout.completion_ids.shape[0]
        size = self.micro_batch_size or batch
        chunks = [slice(start, start + size) for start in range(0, batch, size)]
        old = self._frozen_logprobs(rollout, chunks) if self.num_iterations > 1 else None
        ref = self._reference_logprobs(rollout, chunks) if self.kl_coef > 0 else None
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        stats: dict[str, float] = defaultdict(float)
        learning_rate = optimizer.param_groups[0]["lr"]  # this step's: the scheduler steps after it
        sampler = rollout.sampler_logprobs
        is_weights: list[torch.Tensor] = []  # per chunk, from the first pass (the rollout-time policy)
        for iteration in range(self.num_iterations):
            for index, rows in enumerate(chunks):
                # gradients accumulate over the micro-batches; DDP all-reduces them once, in the last one's
                # backward (FSDP reduce-scatters each backward's: its sync is never blocked)
                with optimizer.toggle_model(sync_grad=index == len(chunks) - 1):
                    logprobs, entropy = completion_logprobs(self.planner, rollout, rows, self.temperature)
                    if sampler is not None and iteration == 0:
                        # the rollout-time policy: the frozen pass if there is one (eval mode: no dropout noise)
                        policy = old[rows] if old is not None else logprobs.detach()
                        _mismatch_stats(stats, policy, sampler[rows], rollout.completion_mask[rows])
                        if self.tis_cap is not None:
                            is_weights.append(truncated_is_weights(policy, sampler[rows], self.tis_cap))
                    terms = grpo_loss(
                        logprobs,
                        old[rows] if old is not None else logprobs.detach(),
                        advantages[rows],
                        token_mask[rows],
                        normalizer,
                        clip_low=self.clip_low,
                        clip_high=self.clip_high,
                        ref_logprobs=ref[rows] if ref is not None else None,
                        kl_coef=self.kl_coef,
                        kl_estimator=self.kl_estimator,
                        is_weights=is_weights[index] if is_weights else None,
                    )
                    self.manual_backward(terms.loss)
                mask = token_mask[rows].float()
                stats["loss"] += terms.loss.item()
                stats["policy_loss"] += terms.policy_loss.item()
                if terms.kl is not None:
                    stats["kl"] += terms.kl.item()
                stats["clip_sum"] += (terms.clip_fraction * mask.sum()).item()
                stats["entropy_sum"] += (entropy.detach() * mask).sum().item()
                stats["tokens"] += mask.sum().item()
            if self.max_grad_norm is not None:
                self.clip_gradients(
                    optimizer, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm"
                )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
        counted = stats.pop("tokens")
        tokens = max(counted, 1.0)
        n = self.num_iterations
        out = {
            "loss": stats["loss"] / n,
            "policy_loss": stats["policy_loss"] / n,
            "clip_fraction": stats.pop("clip_sum") / tokens,
            "entropy": stats.pop("entropy_sum") / tokens,
            "lr": learning_rate,
        }
        counts = {"clip_fraction": counted, "entropy": counted}
        if ref is not None:  # without a KL term the reference is never evaluated: no value to log
            out["kl"] = stats["kl"] / n
        if sampler is not None:
            sampled = max(stats["sampled_tokens"], 1.0)
            out["rollout/logprob_abs_diff_mean"] = stats["abs_diff_sum"] / sampled
            counts["rollout/logprob_abs_diff_mean"] = stats["sampled_tokens"]
            out["rollout/logprob_abs_diff_max"] = stats["abs_diff_max"]
            if is_weights:
                mask = token_mask.float()  # the tokens whose loss the weights scale
                weights = torch.cat(is_weights)
                out["rollout/is_weight_mean"] = ((weights * mask).sum() / mask.sum().clamp(min=1)).item()
                out["rollout/is_capped_fraction"] = (
                    ((weights >= self.tis_cap).float() * mask).sum() / mask.sum().clamp(min=1)
                ).item()
                counts["rollout/is_weight_mean"] = counts["rollout/is_capped_fraction"] = mask.sum().item()
        return out, counts

    @torch.no_grad()
    def _frozen_logprobs(self, rollout: Rollout, chunks: list[slice]) -> torch.Tensor:
        """Log-probs of the policy that sampled: in eval mode, as the rollout was (no dropout noise)."""
        with _eval_mode(self.planner):
            return torch.cat(
                [completion_logprobs(self.planner, rollout, rows, self.temperature)[0] for rows in chunks]
            )

    @torch.no_grad()
    def _reference_logprobs(self, rollout: Rollout, chunks: list[slice]) -> torch.Tensor:
        if self.policy.lora:
            with self.planner.disable_adapter():
                return self._frozen_logprobs(rollout, chunks)
        reference = self._reference[0]
        return torch.cat(
            [completion_logprobs(reference, rollout, rows, self.temperature)[0] for rows in chunks]
        )

    def _step_seed(self) -> int:
        """Sampling depends on (seed, step, rank) only, so a resumed run samples like an uninterrupted one."""
        return (self.seed * 1_000_003 + self.global_step * 7919 + self.global_rank) % (2**63 - 1)

    # ---- validation -------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        # validation samples (val_pass_samples) depend on the step only, not on what ran before it
        torch.manual_seed(self._step_seed() ^ 0x5EED)
        self._val_totals = {}

    def validation_step(self, problems: list[Problem], batch_idx: int) -> None:
        """Greedy planner -> executor on held-out problems: e2e, baseline, uplift, leakage, trace metrics."""
        rollout = self.sample(problems, 1, greedy=True, seed=self._step_seed() ^ 0x5EED)
        reasonings = [self.task.extract_reasoning(text) for text in rollout.texts]
        records = judge_reasonings(
            self.task,
            self.reward.executor,
            problems,
            reasonings,
            self.val_baseline_cache,
            samples=self.val_executor_samples,
            greedy=True,
        )
        self._add_val(tally(records))
        self._add_val({key: (value, 0) for key, value in failure_counts(records).items()})
        self._add_val({"completion_length": (rollout.completion_lengths.float().sum().item(), len(problems))})
        if self.val_pass_samples:
            self._validate_samples(problems)
        if batch_idx == 0:
            self._log_text(
                "val/samples",
                _samples_markdown(
                    problems,
                    rollout.texts,
                    [
                        f"e2e={r.with_reasoning} base={r.alone} step_acc={r.trace.get('trace/step_acc', float('nan')):.2f}"
                        for r in records
                    ],
                ),
            )

    def _validate_samples(self, problems: list[Problem]) -> None:
        """G samples per problem at the training temperature, each judged greedily: pass@G and the mixture."""
        g = self.val_pass_samples
        rollout = self.sample(problems, g, seed=(self._step_seed() ^ 0x5EED) + 1)
        records = judge_reasonings(
            self.task,
            self.reward.executor,
            [p for p in problems for _ in range(g)],
            [self.task.extract_reasoning(text) for text in rollout.texts],
            self.val_baseline_cache,
            samples=self.val_executor_samples,
            greedy=True,
        )
        self._add_val({f"sampled/{key}": totals for key, totals in tally(records).items()})
        self._add_val({f"sampled/{key}": (value, 0) for key, value in failure_counts(records).items()})
        passed, judged = pass_counts(records, g)
        self._add_val({f"pass@{g}": (passed, judged), f"pass@{g}_unjudged": (len(problems) - judged, 0)})

    def _add_val(self, totals: dict[str, tuple[float, int]]) -> None:
        """Add (sum, count) pairs to this rank's validation totals (a failure count's count is unused)."""
        add_tallies(self._val_totals, totals)

    def on_validation_epoch_end(self) -> None:
        """Every rank's sums and counts in one gather, then each metric over every judged record of every
        rank: sum / count (nan where none has a value), the failure counts as totals. Not Lightning's
        sync_dist mean: it pairs the ranks' values in each rank's own order of first logging (a key one
        record lacks, e.g. e2e_acc after a failed executor call, comes later on that rank alone), makes
        as many collectives as a rank has keys, and weights by a batch size it averages as an integer."""
        totals: dict[str, tuple[float, int]] = {}
        for share in gather_objects(self._val_totals):
            add_tallies(totals, share)
        self._val_totals = {}
        counts = {f"{prefix}{key}" for key in failure_counts([]) for prefix in ("", "sampled/")}
        counts.add(f"pass@{self.val_pass_samples}_unjudged")
        for key in sorted(totals):  # the same keys in the same order on every rank
            total, count = totals[key]
            self.log(
                f"val/{key}",
                total if key in counts else (total / count if count else math.nan),
                on_step=False,
                on_epoch=True,
                batch_size=1,
                # every rank holds the same value already (sync_dist keeps Lightning from warning that it
                # is not synced): the max of equal values is that value exactly, a mean only nearly
                sync_dist=True,
                reduce_fx="max",
            )

    # ---- Lightning plumbing -----------------------------------------------------------------------

    def configure_model(self) -> None:
        """Shard the planner with FSDP2 under ModelParallelStrategy (hardware=fsdp / fsdp_sim); no-op otherwise.

        The shards keep the planner's dtype (the optimizer's weights: float32 for a full fine-tune) and are
        cast to `fsdp_compute_dtype` when gathered for a forward pass; gradients are reduced in float32.
        """
        from planlift.grpo.sharding import is_sharded, shard_planner

        mesh = self.device_mesh
        if mesh is None:
            if self.fsdp_compute_dtype is not None:
                raise ConfigError(
                    f"algorithm.fsdp_compute_dtype={self.fsdp_compute_dtype} applies to a sharded planner "
                    "(hardware=fsdp / fsdp_sim: ModelParallelStrategy); under "
                    f"{type(self.trainer.strategy).__name__} trainer.precision=bf16-mixed computes in bf16"
                )
            return
        if is_sharded(self.planner):
            return
        self._make_reference()  # before sharding: an FSDP module cannot be deep-copied
        stored = next(self.planner.parameters()).dtype
        compute = (
            resolve_dtype(self.fsdp_compute_dtype, "algorithm.fsdp_compute_dtype")
            if self.fsdp_compute_dtype is not None
            else stored
        )
        both_float32 = compute == stored == torch.float32  # no cast, no policy
        for model in (self.planner, *self._reference):  # the reference is sharded like the planner
            shard_planner(model, mesh["data_parallel"], param_dtype=None if both_float32 else compute)

    def configure_optimizers(self):
        params = [p for p in self.planner.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer)},
        }

    def setup(self, stage: str) -> None:
        # the KL reference is the starting planner: copied before a checkpoint's weights are restored
        if stage == "fit":
            self._make_reference()

    def on_fit_start(self) -> None:
        self.planner.train()  # from_pretrained leaves models in eval mode (LoRA dropout needs train mode)
        dropout = active_dropout(self.planner)
        if dropout and (self.num_iterations > 1 or self.tis_cap is not None):
            log.warning(
                "%d dropout modules are active (e.g. %s): the update's log-probs carry dropout noise that the "
                "rollout's do not, so the PPO ratio (num_iterations=%d) moves with it, and so do the importance "
                "weights (tis_cap=%s) when num_iterations=1 (with more, they come from the frozen eval-mode "
                "pass); algorithm.disable_dropout=true removes it",
                len(dropout),
                dropout[0],
                self.num_iterations,
                self.tis_cap,
            )
        low = sorted(
            {str(p.dtype) for p in self.planner.parameters() if p.requires_grad and p.dtype != torch.float32}
        )
        if low:
            log.warning(
                "the planner's trainable weights are %s (model.dtype with lora=null): an optimizer step smaller "
                "than half a unit in their last place is rounded away (10 AdamW steps at lr 1e-6 changed 2%% of "
                "bf16 weights of scale 0.02, at 5e-6 8%%), so full fine-tuning may hardly move the planner; "
                "model.dtype=float32 keeps float32 weights (trainer.precision=bf16-mixed, or under FSDP "
                "algorithm.fsdp_compute_dtype=bfloat16, still computes in bf16)",
                "/".join(low),
            )
        if self.engine.holds_weights and self.top_p < 1:
            log.warning(
                "top_p=%s with a vLLM rollout: vLLM's log-probs are the nucleus's, renormalised, and the update's "
                "the full distribution's, so pi_train / pi_rollout is the nucleus's mass (< 1 where it cuts), "
                "train/rollout/logprob_abs_diff_* measures that mass as well as the engines' difference, and "
                "tis_cap=%s weights tokens at uncertain positions down; top_p=1 compares like with like",
                self.top_p,
                self.tis_cap,
            )
        if self._reference and self.device_mesh is None:  # a sharded reference is placed already
            self._reference[0].to(self.device)

    def _make_reference(self) -> None:
        """The frozen copy of the starting planner that the KL term compares with (full fine-tuning only:
        under LoRA the reference is the planner with its adapter disabled)."""
        if self.kl_coef > 0 and not self.policy.lora and not self._reference:
            reference = copy.deepcopy(self.planner).eval().requires_grad_(False)
            self._reference.append(reference.to(self.device))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Beyond weights, optimizer and loop state (Lightning's): everything the next step depends on. Ranks
        differ (each samples its own problems with its own streams): saving is collective, so every rank's
        state is gathered and rank 0 writes them all."""
        checkpoint["planlift"] = {
            "batches_seen": self.batches_seen,
            "ranks": gather_objects(self._rank_state()),
            "settings": self._settings(),
        }
        if self.policy.lora:  # keep only the adapter: the frozen base is the pretrained checkpoint
            trainable = {f"planner.{name}" for name, p in self.planner.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("planlift")
        if state is None:  # checkpoints from before it: weights, optimizer and baseline cache only
            self.reward.baseline_cache.load_state_dict(checkpoint.get("baseline_cache", {}))
        else:
            self._warn_changed_settings(state.get("settings"))
            self.batches_seen = state["batches_seen"]
            # checkpoints from before the per-rank state: one state, the baseline cache beside it
            ranks = state.get("ranks") or [{**state, "baseline_cache": checkpoint.get("baseline_cache", {})}]
            self._load_rank_state(ranks)
        if self.policy.lora:
            self.strict_loading = False

    def _settings(self) -> dict[str, Any]:
        """What the resumed steps depend on beyond the state: the task's settings (its problems, hence the
        batch stream's order) and the frozen executor (the cached baselines' key), as plain JSON values."""
        return json.loads(
            json.dumps(
                {"task": self.task.fingerprint(), "executor": self.reward.executor.identity},
                sort_keys=True,
                default=str,
            )
        )

    def _warn_changed_settings(self, saved: dict[str, Any] | None) -> None:
        """A resume under other task or executor settings is allowed (e.g. a larger split on purpose), but the
        run no longer repeats an uninterrupted one: say which settings changed (checkpoints from before
        settings were saved are not checked)."""
        if saved is None:
            return
        now = self._settings()
        changed = [
            f"task.{key}: {saved['task'].get(key)!r} -> {now['task'].get(key)!r}"
            for key in sorted(set(saved["task"]) | set(now["task"]))
            if saved["task"].get(key) != now["task"].get(key)
        ]
        if saved["executor"] != now["executor"]:
            changed.append(f"executor: {saved['executor']!r} -> {now['executor']!r}")
        if changed:
            log.warning(
                "resuming under settings other than the checkpoint's (%s): the batch order and the cached "
                "baselines follow the new settings, so the run does not repeat an uninterrupted one",
                "; ".join(changed),
            )

    def _rank_state(self) -> dict[str, Any]:
        return {
            "baseline_cache": self.reward.baseline_cache.state_dict(),
            "val_baseline_cache": self.val_baseline_cache.state_dict(),
            "executor": self.reward.executor.state_dict(),
            "rm": self.reward.rm.state_dict() if self.reward.rm is not None else {},
            "rng": rng_states(),
        }

    def _load_rank_state(self, ranks: list[dict[str, Any]]) -> None:
        """This rank's own state; under another number of ranks, rank 0's with every rank's cached
        baselines (valid for any rank: keyed by executor, task and problem)."""
        if len(ranks) == world_size():
            state = ranks[rank()]
        else:
            log.warning(
                "the checkpoint holds the state of %d ranks and this run has %d: every rank continues rank "
                "0's counters and random streams with all cached baselines, so the run does not repeat an "
                "uninterrupted one",
                len(ranks),
                world_size(),
            )
            state = {**ranks[0]}
            for cache in ("baseline_cache", "val_baseline_cache"):
                entries = {k: v for r in ranks for k, v in r[cache].get("entries", {}).items()}
                state[cache] = {**ranks[0][cache], "entries": entries}
        self.reward.baseline_cache.load_state_dict(state["baseline_cache"])
        self.val_baseline_cache.load_state_dict(state["val_baseline_cache"])
        self.reward.executor.load_state_dict(state["executor"])
        if self.reward.rm is not None:
            self.reward.rm.load_state_dict(state.get("rm", {}))
        set_rng_states(state["rng"])

    # ---- logging ----------------------------------------------------------------------------------

    def _log_step(
        self,
        rollout: Rollout,
        scores: RewardBatch,
        advantages: torch.Tensor,
        update: dict[str, float],
        update_counts: dict[str, float],
        timings: dict[str, float],
    ) -> None:
        counts: dict[str, float] = {}  # how many values each mean is over: the ranks' combine by them
        metrics = scores.metrics(prefix="train", counts=counts)
        metrics.update({f"train/{k}": v for k, v in update.items()})
        counts.update({f"train/{k}": v for k, v in update_counts.items()})
        metrics.update({f"train/time/{k}": v for k, v in timings.items()})
        lengths = rollout.completion_lengths.float()
        metrics["train/completion_length"] = lengths.mean().item()
        metrics["train/advantage_abs"] = advantages[scores.mask].abs().mean().nan_to_num().item()
        counts["train/advantage_abs"] = int(scores.mask.sum())
        metrics.update({f"train/executor/{k}": v for k, v in self.reward.executor.metrics().items()})
        metrics.update({f"train/rollout/{k}": v for k, v in self.engine.metrics().items()})
        metrics.update(self._sampled_trace_metrics(rollout, scores, counts))
        # DDP / FSDP: the whole batch's statistics
        metrics = reduce_over_ranks(metrics, batch_reduction, counts)
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=len(rollout.problems))
        self.log(
            "train/reward",
            metrics.get("train/reward/final", math.nan),  # nan: every sample masked (max_masked_fraction=1)
            prog_bar=True,
            on_step=True,
            batch_size=len(rollout.problems),
        )
        step = self.global_step - 1  # the optimizer step this training step has just taken
        if self.log_samples_every and step % self.log_samples_every == 0:
            notes = [
                " ".join(f"{k}={v:.2f}" for k, v in r.terms().items())
                + (f" masked={r.mask_reason}" if r.masked else "")
                for r in scores.records
            ]
            self._log_text(
                "train/samples",
                _samples_markdown(
                    [p for p in rollout.problems for _ in range(rollout.group_size)], rollout.texts, notes
                ),
                step,
            )

    def _sampled_trace_metrics(
        self, rollout: Rollout, scores: RewardBatch, counts: dict[str, float]
    ) -> dict[str, float]:
        """Means of the task's trace metrics over the sampled completions' reasonings, as the reward read
        them (`train/trace/*`); right for the wrong reasons = the e2e sample is correct while some state is
        wrong or missing, over the samples with an e2e verdict (as val/trace/right_wrong_reasons)."""
        rows = [p for p in rollout.problems for _ in range(rollout.group_size)]
        sums: dict[str, float] = defaultdict(float)
        wrong_reasons: list[float] = []
        for problem, reasoning, record in zip(rows, scores.reasonings, scores.records, strict=True):
            trace = self.task.trace_metrics(problem, reasoning, None)
            for key, value in trace.items():
                sums[key] += value
            if "trace/step_acc" in trace and record.e2e is not None:
                wrong_reasons.append(float(bool(record.e2e) and trace["trace/step_acc"] < 1))
        metrics = {f"train/{key}": total / len(rows) for key, total in sums.items()}
        if wrong_reasons:
            metrics["train/trace/right_wrong_reasons"] = sum(wrong_reasons) / len(wrong_reasons)
            counts["train/trace/right_wrong_reasons"] = len(wrong_reasons)
        return metrics

    def _log_text(self, tag: str, text: str, step: int | None = None) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if self.global_rank == 0 and hasattr(experiment, "add_text"):
            experiment.add_text(tag, text, global_step=self.global_step if step is None else step)


def _mismatch_stats(
    stats: dict[str, float], train: torch.Tensor, sampler: torch.Tensor, mask: torch.Tensor
) -> None:
    """Accumulate |log pi_train - log pi_rollout| over the sampled tokens (sum, count, max)."""
    diff = (train - sampler).abs() * mask
    stats["abs_diff_sum"] += diff.sum().item()
    stats["sampled_tokens"] += mask.sum().item()
    stats["abs_diff_max"] = max(stats["abs_diff_max"], diff.max().item() if diff.numel() else 0.0)


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[phase] = time.perf_counter() - start


def _samples_markdown(problems: list[Problem], texts: list[str], notes: list[str], limit: int = 8) -> str:
    rows = ["| problem | completion | scores |", "|---|---|---|"]
    for problem, text, note in list(zip(problems, texts, notes, strict=True))[:limit]:
        rows.append(f"| `{problem.text}` | `{_cell(text)}` | {note} |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    return text.replace("\n", "⏎").replace("|", "\\|")[:400]
