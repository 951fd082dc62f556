"""Reward records: every term of every sample, and the batch statistics a run logs."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch

TERMS = ("e2e", "w", "b", "uplift", "rm", "leakage", "exec", "coeff", "final")
# why a sample is masked (planlift.rewards.grounded; rm_non_finite: the RM scored NaN or inf; sandbox_error:
# the sandbox could not run one of its programs, with or without the reasoning); each count is logged every
# step, zeros included: Lightning repeats a step metric's last value in steps that do not log it
MASK_REASONS = (
    "executor_error",
    "baseline_executor_error",
    "sandbox_error",
    "rm_error",
    "rm_non_finite",
    "leakage",
)


@dataclass(frozen=True)
class RewardRecord:
    """All terms for one planner sample. A term the mode does not use is None.

    e2e: the first executor sample with the reasoning is correct (0/1); w / b: success rates with / without
    the reasoning; uplift: clamp(w - b); rm: rubric score; leakage: the reasoning states the answer (0/1);
    exec / coeff: the code formula's execution score and uplift coefficient; final: the reward.
    A masked sample (failed executor, sandbox or RM call, or the leakage policy "mask") has final=None.
    """

    e2e: float | None = None
    w: float | None = None
    b: float | None = None
    uplift: float | None = None
    rm: float | None = None
    leakage: float | None = None
    exec: float | None = None
    coeff: float | None = None
    final: float | None = None
    mask_reason: str | None = None

    @property
    def masked(self) -> bool:
        return self.mask_reason is not None

    def terms(self) -> dict[str, float]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name in TERMS and getattr(self, f.name) is not None
        }


@dataclass
class RewardBatch:
    """Rewards for P problems x G samples, rows grouped per problem.

    stats: what computing them cost, logged as `<prefix>/<key>`: `time/executor`, `time/verify`,
    `time/rm` (seconds), `executor_generations_per_problem`, `baseline_cache_size`, and the RM's counters
    `rm/<name>` (cumulative: `rm/failed_items`, `rm/failed_requests/<kind>` for an HTTP service).
    reasonings: the scored reasonings as the executor read them (`judging.reasonings_as_read`), one per
    record: the reward fills them, and the GRPO module's trace metrics read them (a batch built without
    them, as in unit tests of these statistics, cannot be logged by the module).
    """

    records: list[RewardRecord]
    group_size: int
    stats: dict[str, float] = field(default_factory=dict)
    reasonings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.records) % self.group_size:
            raise ValueError(f"{len(self.records)} records do not split into groups of {self.group_size}")
        if self.reasonings and len(self.reasonings) != len(self.records):
            raise ValueError(f"{len(self.reasonings)} reasonings for {len(self.records)} records")

    @property
    def rewards(self) -> torch.Tensor:  # [B] float; masked samples hold 0 and must be ignored via `mask`
        return torch.tensor(
            [r.final if r.final is not None else 0.0 for r in self.records], dtype=torch.float32
        )

    @property
    def mask(self) -> torch.Tensor:  # [B] bool, True = the sample enters statistics and loss
        return torch.tensor([not r.masked for r in self.records], dtype=torch.bool)

    def metrics(self, prefix: str = "train", counts: dict[str, float] | None = None) -> dict[str, float]:
        """Per-term mean/std over every sample that has the term (a masked sample keeps the terms judged
        before it was masked: under leakage_policy=mask, `leakage` and `e2e` count the leaking samples),
        group health (TRL's reward_std and frac_reward_zero_std over the groups with two or more unmasked
        samples; frac_groups_without_signal over all, a group with fewer counting as one) and mask counts. `uplift` is the term the
        formula used (clamped to `uplift_bounds`: [0, 1] under grounded_guarded); `uplift_raw` is w - b
        before the clamp, the quantity val/uplift reports. `counts`, when given, receives how many values
        each mean is over (samples, or groups), for combining the ranks' (`distributed.reduce_over_ranks`)."""
        out: dict[str, float] = {}
        counts = {} if counts is None else counts
        terms = [r.terms() for r in self.records]
        for term in TERMS:
            values = [t[term] for t in terms if term in t]
            if values:
                out[f"{prefix}/reward/{term}"] = _mean(values)
                out[f"{prefix}/reward/{term}_std"] = _std(values)
                counts[f"{prefix}/reward/{term}"] = len(values)
        raw = [t["w"] - t["b"] for t in terms if "w" in t and "b" in t]
        if raw:
            out[f"{prefix}/reward/uplift_raw"] = _mean(raw)
            counts[f"{prefix}/reward/uplift_raw"] = len(raw)
        group_stds, flat, silent = [], [], []
        for start in range(0, len(self.records), self.group_size):
            finals = [r.final for r in self.records[start : start + self.group_size] if not r.masked]
            if len(finals) >= 2:
                group_stds.append(_std(finals))
                # equal rewards, as group_advantages tests them: a float std of equal values can be 1e-17
                flat.append(float(max(finals) == min(finals)))
            # every advantage 0: equal rewards, or fewer than two samples left unmasked to compare
            silent.append(float(len(finals) < 2 or max(finals) == min(finals)))
        out[f"{prefix}/frac_groups_without_signal"] = _mean(silent)
        counts[f"{prefix}/frac_groups_without_signal"] = len(silent)
        if group_stds:
            out[f"{prefix}/reward_std"] = _mean(group_stds)
            out[f"{prefix}/frac_reward_zero_std"] = _mean(flat)
            counts[f"{prefix}/reward_std"] = counts[f"{prefix}/frac_reward_zero_std"] = len(group_stds)
        masked = Counter(r.mask_reason for r in self.records if r.masked)
        out[f"{prefix}/reward/masked"] = float(sum(masked.values()))
        out[f"{prefix}/reward/masked_frac"] = sum(masked.values()) / len(self.records)
        counts[f"{prefix}/reward/masked_frac"] = len(self.records)
        for reason in dict.fromkeys([*MASK_REASONS, *masked]):
            out[f"{prefix}/reward/masked/{reason}"] = float(masked[reason])
        out.update({f"{prefix}/{key}": value for key, value in self.stats.items()})
        return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation, n - 1 as group_advantages and TRL's reward_std (0 for a single value)."""
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
