"""The closing summary of a training run: step-0 vs final validation metrics, wall time per phase, and
where the outputs are."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

# The rows of the table, in order; a metric the run did not log is left out.
HEADLINE = (
    "val/e2e_acc",
    "val/pass@4",
    "val/baseline_acc",
    "val/uplift",
    "val/trace/step_acc",
    "val/trace/exact_exec",
    "val/trace/under_exec",
    "val/leakage",
    "val/trace/right_wrong_reasons",
    "val/trace/kind/faithful",
    "val/trace/kind/wrong_state",
    "val/trace/kind/under",
    "val/trace/kind/leaked",
    "val/trace/kind/other",
)


@dataclass
class RunSummary:
    """Collects phase timings and the validation metrics before and after training."""

    phases: dict[str, float] = field(default_factory=dict)
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start

    @staticmethod
    def validation_metrics(metrics: Mapping[str, object]) -> dict[str, float]:
        return {k: float(v) for k, v in metrics.items() if k.startswith("val/")}  # type: ignore[arg-type]

    def render(self, output_dir: str, tensorboard_dir: str | None = None) -> str:
        lines = ["", "run summary"]
        rows = [k for k in HEADLINE if k in self.before or k in self.after]
        if rows:
            width = max(len(k) for k in rows)
            lines.append(f"  {'metric':<{width}}  {'step 0':>8}  {'final':>8}  {'change':>8}")
            for key in rows:
                before, after = self.before.get(key), self.after.get(key)
                change = f"{after - before:+8.3f}" if before is not None and after is not None else " " * 8
                lines.append(f"  {key:<{width}}  {_cell(before)}  {_cell(after)}  {change}")
        if self.phases:
            lines.append("  wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in self.phases.items()))
        lines.append(f"  outputs: {output_dir}")
        if tensorboard_dir:
            lines.append(f"  curves:  tensorboard --logdir {tensorboard_dir}")
        return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{value:8.3f}" if value is not None else f"{'-':>8}"
