"""Building TraceLift-Groups: sources draft (positive, negatives) per problem; a labeler adds rubrics.

Splits are disjoint by problem: the procedural source takes train groups from the task's train split and
dev groups from its validation split (disjoint by construction); the GSM8K source assigns each problem of
GSM8K's train file to dev when a seeded hash of its id falls below `dev_fraction`. Everything is
deterministic given `seed` (each problem's negatives are drawn from `Random(f"{seed}/{problem_id}")`; a
judge's sampled retries from torch's generator seeded with it).
"""

from __future__ import annotations

import abc
import json
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planlift.errors import ConfigError, DataError
from planlift.rm.base import MATH_DIMENSIONS
from planlift.rm_groups import gsm8k as gsm8k_negatives
from planlift.rm_groups import procedural as procedural_negatives
from planlift.rm_groups.schema import Group, stable_fraction, write_groups
from planlift.rubric_rm.heldout import refuse_heldout
from planlift.rubric_rm.rubric import LabelRequest, RuleLabeler
from planlift.tasks.procedural import ProceduralTask

log = logging.getLogger(__name__)

SPLITS = ("train", "dev")


@dataclass
class Draft:
    """A problem with its positive trace and unlabeled negatives [(kind, reasoning)]."""

    problem_id: str
    problem: str
    reference_solution: str
    positive: str
    negatives: list[tuple[str, str]]
    metadata: dict[str, Any] = field(default_factory=dict)


class GroupSource(abc.ABC):
    name: str
    source: str
    task_type: str = "math"

    @abc.abstractmethod
    def drafts(self, split: str, seed: int) -> list[Draft]:
        """The drafts of one split ("train" or "dev")."""

    def describe(self) -> dict[str, Any]:
        """What determines the drafts (written to summary.json)."""
        return {}


def _check_kinds(kinds: Sequence[str] | None, known: Sequence[str], key: str) -> tuple[str, ...]:
    kinds = tuple(kinds or known)
    unknown = sorted(set(kinds) - set(known))
    if unknown:
        raise ConfigError(f"{key} has unknown negative kinds {unknown}; known: {list(known)}")
    return kinds


_PROCEDURAL_TASK_SPLIT = {"train": "train", "dev": "validation"}


class ProceduralGroupSource(GroupSource):
    """Groups from the procedural task: positive = the exact step trace (`gold_reasoning`).

    Args:
        task: the procedural task (its train split gives train groups, its validation split dev groups).
        sizes: groups per split, {"train": n, "dev": n} (at most the task's split sizes).
        kinds: negative kinds to draw (default: all of `procedural.KINDS`).
    """

    source = "procedural"

    def __init__(
        self,
        task: ProceduralTask,
        name: str = "procedural",
        sizes: dict[str, int] | None = None,
        kinds: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(task, ProceduralTask):
            raise ConfigError(f"groups.task must be a procedural task, got {type(task).__name__}")
        self.task = task
        self.name = name
        self.sizes = dict(sizes or {"train": 4000, "dev": 400})
        self.kinds = _check_kinds(kinds, procedural_negatives.KINDS, "groups.kinds")

    def describe(self) -> dict[str, Any]:
        return {"task": self.task.fingerprint(), "sizes": self.sizes, "kinds": list(self.kinds)}

    def drafts(self, split: str, seed: int) -> list[Draft]:
        problems = self.task.problems(_PROCEDURAL_TASK_SPLIT[split])
        wanted = self.sizes.get(split, 0)
        if wanted > len(problems):
            raise ConfigError(
                f"groups.sizes.{split}={wanted} but the task's {_PROCEDURAL_TASK_SPLIT[split]} split has "
                f"{len(problems)} problems (raise groups.task.sizes.{_PROCEDURAL_TASK_SPLIT[split]})"
            )
        drafts = []
        for problem in problems[:wanted]:
            rng = random.Random(f"{seed}/{problem.id}")
            drafts.append(
                Draft(
                    problem_id=problem.id,
                    problem=problem.text,
                    reference_solution=problem.answer,
                    positive=self.task.gold_reasoning(problem),
                    negatives=procedural_negatives.procedural_negatives(self.task, problem, rng, self.kinds),
                    metadata={"answer": problem.answer},
                )
            )
        return drafts


class GSM8KGroupSource(GroupSource):
    """Groups from GSM8K's train file: positive = the worked solution without `####` and `<<...>>`.

    Args:
        path: the GSM8K train JSONL (default: data/gsm8k/train.jsonl).
        dev_fraction: share of problems in the dev split (by a seeded hash of the problem id).
        limit: use only the first `limit` problems of the file (null: all 7,473).
        kinds: negative kinds to draw (default: all of `gsm8k.KINDS`).
    """

    source = "gsm8k"

    def __init__(
        self,
        name: str = "gsm8k",
        path: str | None = None,
        dev_fraction: float = 0.1,
        limit: int | None = None,
        kinds: Sequence[str] | None = None,
    ) -> None:
        if not 0 < dev_fraction < 1:
            raise ConfigError(f"groups.dev_fraction must be in (0, 1), got {dev_fraction}")
        if limit is not None and limit < 1:
            raise ConfigError(f"groups.limit must be >= 1 or null, got {limit}")
        self.name = name
        self.path = path
        self.dev_fraction = dev_fraction
        self.limit = limit
        self.kinds = _check_kinds(kinds, gsm8k_negatives.KINDS, "groups.kinds")

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "dev_fraction": self.dev_fraction,
            "limit": self.limit,
            "kinds": list(self.kinds),
        }

    def drafts(self, split: str, seed: int) -> list[Draft]:
        from planlift.datasets import load_gsm8k

        records = load_gsm8k("train", self.path)
        if self.limit is not None:
            records = records[: self.limit]
        drafts = []
        for record in records:
            in_dev = stable_fraction(seed, record.id) < self.dev_fraction
            if in_dev != (split == "dev"):
                continue
            rng = random.Random(f"{seed}/{record.id}")
            drafts.append(
                Draft(
                    problem_id=record.id,
                    problem=record.question,
                    reference_solution=record.answer,
                    positive="\n".join(line for line in record.solution.splitlines() if line.strip()),
                    negatives=gsm8k_negatives.gsm8k_negatives(
                        record.question, record.solution, record.answer, rng, self.kinds
                    ),
                    metadata={"answer": record.answer},
                )
            )
        return drafts


def _label(
    drafts: Sequence[Draft], labeler, rules: RuleLabeler, seed: int
) -> list[tuple[dict, list[dict | None]]]:
    """(positive rubric, [negative rubric or None]) per draft, with one labeler call for the split.

    A judge's retries sample, from torch's global generator when its executor is a local model: the call
    runs on a copy of that generator seeded with `seed`, so the labels depend on `seed` alone and the
    caller's stream is left where it was."""
    judge_positives = getattr(labeler, "label_positives", False)
    requests = []
    for draft in drafts:
        if judge_positives:
            requests.append(
                LabelRequest(
                    draft.problem_id, draft.problem, draft.reference_solution, draft.positive, "positive"
                )
            )
        requests += [
            LabelRequest(draft.problem_id, draft.problem, draft.reference_solution, reasoning, kind)
            for kind, reasoning in draft.negatives
        ]
    if isinstance(labeler, RuleLabeler):  # deterministic, and no reason to import torch
        labels = iter(labeler.label_batch(requests))
    else:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            labels = iter(labeler.label_batch(requests))
    out = []
    for draft in drafts:
        positive = next(labels) if judge_positives else rules.label("positive")
        out.append((positive, [next(labels) for _ in draft.negatives]))
    return out


def build_groups(
    source: GroupSource,
    output_dir: str | Path,
    seed: int = 0,
    labeler=None,
    min_negatives: int = 4,
) -> dict[str, Any]:
    """Write `<output_dir>/{train,dev}.jsonl` and `summary.json`; return the summary.

    A problem keeps at most one negative per kind; a group with fewer than `min_negatives` labeled
    negatives (or an unlabeled positive) is dropped and counted. Judge failures go to
    `judge_failures.jsonl`."""
    if min_negatives < 1:
        raise ConfigError(f"min_negatives must be >= 1, got {min_negatives}")
    rules = RuleLabeler(getattr(labeler, "dimension_names", MATH_DIMENSIONS))
    labeler = labeler or rules
    output_dir = Path(output_dir)
    summary: dict[str, Any] = {
        "source": source.source,
        "name": source.name,
        "seed": seed,
        "labeler": labeler.name,
        "dimension_names": list(rules.dimension_names),
        "min_negatives": min_negatives,
        "config": source.describe(),
        "splits": {},
    }
    problem_ids: dict[str, set[str]] = {}
    problem_texts: dict[str, set[str]] = {}
    # written once every split has groups: a failed build keeps the old files
    kept: dict[str, list[Group]] = {}
    for split in SPLITS:
        drafts = source.drafts(split, seed)
        groups: list[Group] = []
        dropped: Counter[str] = Counter()
        kinds: Counter[str] = Counter()
        for draft, (positive_rubric, negative_rubrics) in zip(
            drafts, _label(drafts, labeler, rules, seed), strict=True
        ):
            negatives = [
                {"reasoning": reasoning, "negative_kind": kind, "rubric": rubric}
                for (kind, reasoning), rubric in zip(draft.negatives, negative_rubrics, strict=True)
                if rubric is not None
            ]
            if positive_rubric is None:
                dropped["unlabeled_positive"] += 1
                continue
            if len(negatives) < min_negatives:
                dropped["too_few_negatives"] += 1
                continue
            kinds.update(n["negative_kind"] for n in negatives)
            groups.append(
                {
                    "problem_id": draft.problem_id,
                    "source": source.source,
                    "task_type": source.task_type,
                    "problem": draft.problem,
                    "reference_solution": draft.reference_solution,
                    "positive_pool": [{"reasoning": draft.positive, "rubric": positive_rubric}],
                    "negative_bank": negatives,
                    "metadata": {
                        **draft.metadata,
                        "split": split,
                        "seed": seed,
                        "labeler": labeler.name,
                        "dimension_names": list(rules.dimension_names),
                    },
                }
            )
        problem_ids[split] = {g["problem_id"] for g in groups}
        problem_texts[split] = {g["problem"] for g in groups}
        if drafts and not groups:
            failures = _write_failures(output_dir, labeler)
            raise DataError(
                f"{source.name}: no {split} group kept of {len(drafts)} problems (dropped: {dict(dropped)}); "
                f"the groups in {output_dir} are left as they were"
                + (f"; {failures} judge calls failed (judge_failures.jsonl)" if failures else "")
            )
        kept[split] = groups
        summary["splits"][split] = {
            "groups": len(groups),
            "dropped": dict(sorted(dropped.items())),
            "negatives": sum(kinds.values()),
            "negative_kinds": dict(sorted(kinds.items())),
        }
        log.info("%s: %d %s groups (%d dropped)", source.name, len(groups), split, sum(dropped.values()))
    overlap = (problem_ids["train"] & problem_ids["dev"]) | (problem_texts["train"] & problem_texts["dev"])
    if overlap:
        raise DataError(f"train and dev groups share problems: {sorted(overlap)[:5]}")
    for split, groups in kept.items():
        refuse_heldout(((g["problem_id"], g["problem"]) for g in groups), f"{source.name} {split} groups")
    for split, groups in kept.items():
        write_groups(output_dir / f"{split}.jsonl", groups)
    summary["judge_failures"] = _write_failures(output_dir, labeler)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _write_failures(output_dir: Path, labeler) -> int:
    """The judge's failed candidates to `judge_failures.jsonl` (when there are any); their count."""
    failures = getattr(labeler, "failures", [])
    if failures:
        output_dir.mkdir(parents=True, exist_ok=True)
        with (output_dir / "judge_failures.jsonl").open("w", encoding="utf-8") as handle:
            for failure in failures:
                handle.write(json.dumps(failure, ensure_ascii=False) + "\n")
    return len(failures)
