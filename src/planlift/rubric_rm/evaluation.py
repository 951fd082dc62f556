"""Evaluating a trained RM: dev groups (fixed negatives) and held-out sets.

`RMEvaluation.run()` returns {"dev": {...}, "heldout": {name: {...}}} and `src/eval_rm.py` prints it
as a table and writes it as JSON. Held-out AUROC: the RM score separating correct traces (positive
class) from flawed ones, computed with torchmetrics. Held-out first-error metrics (ProcessBench's F1 of
naming the earliest wrong step, `step_errors`), at a threshold chosen on the dev groups.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch

from planlift.errors import ConfigError
from planlift.rm.base import MATH_DIMENSIONS
from planlift.rm.learned import LearnedRM, RMInput
from planlift.rm_groups.schema import read_groups
from planlift.rubric_rm import metrics, step_errors
from planlift.rubric_rm.data import GroupCollator
from planlift.rubric_rm.heldout import HELDOUT_SETS, load_heldout, refuse_heldout
from planlift.rubric_rm.inputs import what_is_cut

log = logging.getLogger(__name__)


def evaluate_groups(
    scorer: LearnedRM,
    groups: Sequence[dict],
    num_negatives: int = 4,
    seed: int = 0,
    task_name: str | None = None,
) -> dict[str, float]:
    """Pairwise / group accuracy, score and total MAE / RMSE, per-dimension and per-kind accuracy on groups whose
    negatives are drawn from `Random(f"{seed}/{problem_id}")`."""
    names = scorer.model.dimension_names
    collator = GroupCollator(
        scorer.tokenizer, names, num_negatives, scorer.max_length, task_name, seed, fixed=True
    )
    inputs, labels, gold, kinds = [], [], [], []
    for group in groups:
        for candidate, kind in collator.choose(group):
            inputs.append(
                RMInput(
                    group["problem"],
                    candidate["reasoning"],
                    task_name or group["task_type"],
                    group["task_type"],
                )
            )
            labels.append([int(candidate["rubric"][n]) for n in names])
            gold.append(float(candidate["rubric"]["total"]))
            kinds.append(kind)
    sequences = scorer.encode(inputs)
    scores, totals, logits = [], [], []
    for start in range(0, len(sequences), scorer.batch_size):
        out = scorer.forward(sequences[start : start + scorer.batch_size])
        scores.append(out.score.float().cpu())
        totals.append(out.total.float().cpu() if out.total is not None else None)
        logits.append(out.dimension_logits.float().cpu())
    labels, gold = torch.tensor(labels), torch.tensor(gold)
    return metrics.summarize_group_scores(
        torch.cat(scores),
        scorer.model.gold_score(labels.to(scorer.device), gold.to(scorer.device)).float().cpu(),
        torch.cat(totals) if totals[0] is not None else None,
        gold,
        torch.cat(logits),
        labels,
        kinds,
        1 + num_negatives,
        names,
    )


def first_error_on_dev(scorer: LearnedRM, groups: Sequence[dict]) -> dict[str, float]:
    """The first-error threshold chosen on dev groups (`step_errors`), with the dev traces' metrics at it;
    without both correct and flawed dev traces, no threshold (a warning; the held-out sets skip the metric)."""
    traces, left_out = step_errors.dev_traces(groups)
    counts = {
        "first_error/traces": len(traces),
        "first_error/left_out": sum(left_out.values()),
        **{f"first_error/left_out/{reason}": count for reason, count in sorted(left_out.items())},
    }
    first_errors = [trace.first_error for trace in traces]
    if None not in first_errors or all(error is None for error in first_errors):
        log.warning(
            "first-error threshold not chosen: the %d dev traces need both correct and flawed ones",
            len(traces),
        )
        return counts
    scores = step_errors.prefix_scores(scorer, traces)
    threshold = step_errors.choose_threshold(scores, first_errors)
    found = step_errors.step_metrics(scores, first_errors, threshold)
    return {
        **{f"first_error/{name}": value for name, value in found.items()},
        "first_error/threshold": threshold,
        **counts,
    }


def evaluate_heldout(
    scorer: LearnedRM,
    name: str,
    limit: int | None = None,
    task_name: str = "math",
    first_error_threshold: float | None = None,
) -> dict:
    """AUROC of the whole-trace score (correct vs flawed); with `first_error_threshold` (chosen on dev
    groups), ProcessBench's first-error metrics too (`step_errors`)."""
    items = load_heldout(name, limit)
    start = time.perf_counter()
    scores = scorer.score_inputs([RMInput(i.problem, i.reasoning, task_name, "math") for i in items])
    seconds = time.perf_counter() - start
    failed = sum(s is None for s in scores)
    if failed:
        raise RuntimeError(f"{name}: {failed} items could not be scored (see the log)")
    correct = [s for s, i in zip(scores, items, strict=True) if i.correct]
    flawed = [s for s, i in zip(scores, items, strict=True) if not i.correct]
    cuts = [
        what_is_cut(scorer.tokenizer, i.problem, i.reasoning, task_name, "math", scorer.max_length)
        for i in items
    ]
    whole = [(s, i.correct) for s, i, cut in zip(scores, items, cuts, strict=True) if cut is None]
    if len(whole) < len(items):
        log.warning(
            "%s: %d of %d inputs are over max_length=%d: %d lose the problem's tail, %d the reasoning's beginning "
            "(auroc_whole: the uncut ones)",
            name,
            len(items) - len(whole),
            len(items),
            scorer.max_length,
            cuts.count("problem"),
            cuts.count("reasoning"),
        )
    return {
        "auroc": metrics.auroc(scores, [i.correct for i in items]),
        "items": len(items),
        "correct": len(correct),
        "flawed": len(flawed),
        "mean_score_correct": sum(correct) / len(correct),
        "mean_score_flawed": sum(flawed) / len(flawed),
        "cut_problem": cuts.count("problem"),
        "cut_reasoning": cuts.count("reasoning"),
        "auroc_whole": _auroc_or_none(whole),
        "seconds": seconds,
        **_first_error(scorer, items, task_name, first_error_threshold),
    }


def _first_error(scorer: LearnedRM, items, task_name: str, threshold: float | None) -> dict[str, float]:
    if threshold is None:
        return {}
    traces = [step_errors.StepTrace(i.problem, i.steps, i.first_error) for i in items]
    scores = step_errors.prefix_scores(scorer, traces, task_name)
    found = step_errors.step_metrics(scores, [t.first_error for t in traces], threshold)
    # a long prefix over max_length loses the problem's tail or the reasoning's head: its score, and so the
    # step it names, is then the truncated input's (the dev traces are short: the threshold is an uncut one's)
    cut = sum(
        what_is_cut(
            scorer.tokenizer, t.problem, "\n".join(t.steps[: k + 1]), task_name, "math", scorer.max_length
        )
        is not None
        for t in traces
        for k in range(len(t.steps))
    )
    if cut:
        log.warning(
            "first-error metric: %d of %d step prefixes are over max_length=%d",
            cut,
            sum(len(t.steps) for t in traces),
            scorer.max_length,
        )
    return {
        **{f"first_error_{name}": value for name, value in found.items()},
        "first_error_prefixes_cut": cut,
    }


def _auroc_or_none(scored: list[tuple[float, bool]]) -> float | None:
    """AUROC of (score, correct) pairs; None when one class is missing."""
    if len({correct for _, correct in scored}) < 2:
        return None
    return metrics.auroc([score for score, _ in scored], [correct for _, correct in scored])


class RMEvaluation:
    """Args:
    rm_path: the reward-model directory.
    dev_groups: a TraceLift-Groups JSONL to report group metrics on (null: skip).
    dev_limit: only its first N groups (null: all).
    heldout: held-out set names (processbench_gsm8k, processbench_math, bbm_multistep_arithmetic).
    limits: {set name: first N items} (default: all items).
    num_negatives / seed: the fixed dev negatives.
    max_length / batch_size / device / dtype: scoring settings.
    first_error: also ProcessBench's first-error metrics (`step_errors`): every step prefix is scored, and
        the threshold is chosen on the dev groups (without dev_groups they are skipped, with a warning).
    """

    def __init__(
        self,
        rm_path: str | None = None,
        dev_groups: str | None = None,
        dev_limit: int | None = None,
        heldout: Sequence[str] = tuple(HELDOUT_SETS),
        limits: dict[str, int] | None = None,
        num_negatives: int = 4,
        seed: int = 0,
        max_length: int = 1024,
        batch_size: int = 16,
        device: str = "auto",
        dtype: str = "float32",
        first_error: bool = True,
    ) -> None:
        if not rm_path:
            raise ConfigError(
                "evaluation.rm_path is required: python src/eval_rm.py rm_path=<reward-model dir>"
            )
        unknown = sorted(set(heldout) - set(HELDOUT_SETS)) + sorted(set(limits or {}) - set(HELDOUT_SETS))
        if unknown:
            raise ConfigError(f"evaluation: unknown held-out sets {unknown}; known: {sorted(HELDOUT_SETS)}")
        self.rm_path = rm_path
        self.dev_groups = dev_groups
        self.dev_limit = dev_limit
        self.heldout = list(heldout)
        self.limits = dict(limits or {})
        self.num_negatives = num_negatives
        self.seed = seed
        self.first_error = first_error
        self.scorer_kwargs = {
            "max_length": max_length,
            "batch_size": batch_size,
            "device": device,
            "dtype": dtype,
        }

    def run(self) -> dict[str, Any]:
        scorer = LearnedRM(self.rm_path, **self.scorer_kwargs)
        results: dict[str, Any] = {
            "rm_path": self.rm_path,
            "settings": dict(self.scorer_kwargs),
            "heldout": {},
        }
        if self.dev_groups:
            names = scorer.model.dimension_names or MATH_DIMENSIONS
            start = time.perf_counter()
            groups = read_groups(self.dev_groups, names)[: self.dev_limit]
            # dev groups select checkpoints and choose the first-error threshold: never a held-out problem
            refuse_heldout(((g["problem_id"], g["problem"]) for g in groups), f"dev_groups={self.dev_groups}")
            results["dev"] = evaluate_groups(scorer, groups, self.num_negatives, self.seed)
            if self.first_error:
                results["dev"].update(first_error_on_dev(scorer, groups))
            results["dev"]["groups"] = len(groups)
            results["dev"]["seconds"] = time.perf_counter() - start
            results["dev_groups"] = self.dev_groups
        threshold = results.get("dev", {}).get("first_error/threshold")
        if self.first_error and threshold is None and self.heldout:
            log.warning(
                "first-error metrics skipped: their threshold is chosen on dev groups (dev_groups=...), never on "
                "a held-out set"
            )
        for name in self.heldout:
            log.info("scoring held-out set %s", name)
            results["heldout"][name] = evaluate_heldout(
                scorer, name, self.limits.get(name), first_error_threshold=threshold
            )
            results["heldout"][name]["limit"] = self.limits.get(name)
        return results
