"""Comparing the arms of a sweep from its TensorBoard event tree.

A sweep's jobs log under `<sweep dir>/tensorboard/<run name>`, the run name being the job's overrides
(`reward=grounded,seed=1`). An *arm* is a run name without its `seed` (and without `task.length`, which
becomes a column: the length-collapse sweep). Final numbers are the `final/*` scalars every run logs with
its HParams; curves are the `val/*` scalars. Statistics over seeds: mean and a 95% Student-t interval.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from planlift.errors import DataError

log = logging.getLogger(__name__)

SEED_KEY = "seed"
LENGTH_KEY = "task.length"


@dataclass
class Run:
    """One job's scalars: tag -> [(step, value)] sorted by step (the last write wins for a step)."""

    name: str
    params: dict[str, str]
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def arm(self) -> str:
        kept = [f"{k}={v}" for k, v in self.params.items() if k not in (SEED_KEY, LENGTH_KEY)]
        return ",".join(kept) or "default"

    @property
    def length(self) -> str | None:
        return self.params.get(LENGTH_KEY)

    def final(self, tag: str) -> float | None:
        points = self.scalars.get(tag)
        return points[-1][1] if points else None

    @property
    def finished(self) -> bool:
        """Whether the job logged its `final/*` metrics (a crashed or still running one has not)."""
        return any(tag.startswith("final/") for tag in self.scalars)

    @property
    def seed(self) -> str:
        return self.params.get(SEED_KEY, "?")


def parse_run_name(name: str) -> dict[str, str]:
    """`reward=grounded,seed=1` -> {"reward": "grounded", "seed": "1"} (a part without `=` keeps its text)."""
    params = {}
    for part in name.split(","):
        key, sep, value = part.partition("=")
        params[key] = value if sep else ""
    return params


def event_root(sweep_dir: str | Path) -> Path:
    """The sweep's event tree: `<sweep>/tensorboard` when present, else the directory itself."""
    root = Path(sweep_dir)
    if (root / "tensorboard").is_dir():
        root = root / "tensorboard"
    if not root.is_dir() or not any(root.rglob("events.out.tfevents.*")):
        raise DataError(f"{sweep_dir}: no TensorBoard event files (expected <sweep dir>/tensorboard/<run>/)")
    return root


def load_runs(sweep_dir: str | Path, repeated: list[str] | None = None) -> list[Run]:
    """Every run of the sweep with all its scalars, read with tbparse. A step logged twice (a resumed run
    repeats the steps after its checkpoint) keeps the later write. `repeated` collects the runs that logged
    `final/*` more than once: two jobs in one directory (their overrides differ only in keys the run name
    leaves out, such as trainer.max_steps) or a finished run extended by a resume."""
    from tbparse import SummaryReader

    root = event_root(sweep_dir)
    frame = SummaryReader(str(root), extra_columns={"dir_name", "wall_time"}).scalars
    if frame.empty:
        raise DataError(f"{root}: its event files hold no scalar that could be read (empty or corrupt)")
    runs: dict[str, Run] = {}
    for (name, tag), group in frame.sort_values("wall_time").groupby(["dir_name", "tag"]):
        name = name or "default"
        run = runs.setdefault(name, Run(name, parse_run_name(name)))
        by_step = {int(step): float(value) for step, value in zip(group.step, group.value, strict=True)}
        run.scalars[tag] = sorted(by_step.items())
        if repeated is not None and tag.startswith("final/") and len(group) > 1 and name not in repeated:
            repeated.append(name)
    return [runs[name] for name in sorted(runs)]


def unread_runs(sweep_dir: str | Path, runs: Sequence[Run]) -> list[str]:
    """Run directories with event files from which no scalar was read (corrupt or empty files)."""
    root = event_root(sweep_dir)
    found = {str(p.parent.relative_to(root)) for p in root.rglob("events.out.tfevents.*")}
    read = {run.name for run in runs}
    return sorted(name for name in found if (name if name != "." else "default") not in read)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the Student-t interval); the half-width is nan for a single value."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)


@dataclass
class Row:
    arm: str
    length: str | None
    seeds: list[str]
    values: list[float]

    @property
    def stats(self) -> tuple[float, float]:
        return mean_ci(self.values)


def metric_rows(runs: Sequence[Run], tag: str) -> list[Row]:
    """One row per arm (and length), pooling the seeds; runs without the tag are left out."""
    grouped: dict[tuple[str, str | None], Row] = {}
    for run in runs:
        value = run.final(tag)
        if value is None:
            continue
        row = grouped.setdefault((run.arm, run.length), Row(run.arm, run.length, [], []))
        row.seeds.append(run.params.get(SEED_KEY, "?"))
        row.values.append(value)
    return sorted(grouped.values(), key=lambda r: (r.arm, _as_number(r.length)))


def _as_number(text: str | None) -> float:
    try:
        return float(text) if text is not None else 0.0
    except ValueError:
        return 0.0


def markdown_table(tag: str, rows: Sequence[Row]) -> str:
    with_length = any(r.length is not None for r in rows)
    head = ["arm", *(["length"] if with_length else []), "n", "mean", "95% CI"]
    lines = [f"### {tag}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        mean, half = row.stats
        ci = (
            ("n/a (1 seed)" if len(row.values) < 2 else "n/a (NaN in a seed)")
            if math.isnan(half)
            else f"± {half:.4f} [{mean - half:.4f}, {mean + half:.4f}]"
        )
        cells = [
            row.arm,
            *([row.length or ""] if with_length else []),
            str(len(row.values)),
            f"{mean:.4f}",
            ci,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def final_tags(runs: Sequence[Run]) -> list[str]:
    return sorted({tag for run in runs for tag in run.scalars if tag.startswith("final/")})


def _label(run: Run) -> str:
    return run.arm if run.length is None else f"{run.arm},length={run.length}"


def curve_points(runs: Sequence[Run], tag: str) -> dict[str, tuple[list[int], list[list[float]]]]:
    """Per arm (and length), the finished runs' values of `tag` at the steps every one of them logged:
    label -> (steps, [values per step, one per run]). A mean over a fixed set of seeds: were a crashed
    seed's early points pooled in, a curve would change when seeds drop out, not when the policy does."""
    grouped: dict[str, list[dict[int, float]]] = defaultdict(list)
    for run in runs:
        if run.finished and run.scalars.get(tag):
            grouped[_label(run)].append(dict(run.scalars[tag]))
    out = {}
    for label, series in grouped.items():
        steps = sorted(set.intersection(*(set(points) for points in series)))
        out[label] = (steps, [[points[step] for points in series] for step in steps])
    return out


def plot_curves(runs: Sequence[Run], tag: str, path: Path) -> None:
    """Mean validation curve per arm (and length) over its finished seeds, at the steps all of them logged,
    with the 95% band when there are two or more; an unfinished run is drawn alone, dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, (steps, values) in sorted(curve_points(runs, tag).items()):
        n = len(values[0]) if values else 0
        stats = [mean_ci(at_step) for at_step in values]
        means = [m for m, _ in stats]
        line = axes.plot(steps, means, marker="o", label=f"{label} (n={n})")
        if n >= 2:
            axes.fill_between(
                steps,
                [m - h for m, h in stats],
                [m + h for m, h in stats],
                alpha=0.2,
                color=line[0].get_color(),
            )
    for run in runs:
        if not run.finished and run.scalars.get(tag):
            steps, values = zip(*run.scalars[tag], strict=True)
            axes.plot(steps, values, ":", linewidth=1, label=f"{_label(run)}, seed {run.seed} (unfinished)")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(tag)
    axes.set_title(f"{tag} per arm (mean over finished seeds, 95% CI)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_length_collapse(rows: Sequence[Row], tag: str, path: Path, before: Sequence[Row] = ()) -> None:
    """`tag` against the program length N, one line per arm, 95% CI bands; `before` (the step-0 rows of
    the same tag) adds the untrained planner as a dashed line (one per arm when they differ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    colors = {}
    for arm in sorted({r.arm for r in rows}):
        mine = sorted((r for r in rows if r.arm == arm), key=lambda r: _as_number(r.length))
        lengths = [_as_number(r.length) for r in mine]
        stats = [r.stats for r in mine]
        errors = [0.0 if math.isnan(h) else h for _, h in stats]
        means = [m for m, _ in stats]
        line = axes.errorbar(lengths, means, yerr=errors, marker="o", capsize=3, label=f"{arm} (after)")
        colors[arm] = line[0].get_color()
        low = [m - e for m, e in zip(means, errors, strict=True)]
        high = [m + e for m, e in zip(means, errors, strict=True)]
        axes.fill_between(lengths, low, high, alpha=0.15, color=line[0].get_color())
    for label, points in start_lines(before).items():
        xs = sorted(points)
        arm = label.removesuffix(" (step 0)")
        style = {"color": colors.get(arm)} if arm in colors else {"color": "k"}
        axes.plot(xs, [points[x] for x in xs], "--", marker="x", label=label, **style)
    axes.set_xlabel("program length N (states)")
    axes.set_ylabel(tag)
    axes.set_title("length collapse: final accuracy vs program length")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def start_lines(before: Sequence[Row]) -> dict[str, dict[float, float]]:
    """The step-0 lines of the length-collapse plot: one, "before training (step 0)", when every arm starts
    from the same values, else one per arm ("<arm> (step 0)"): arms with another executor, bootstrap or
    task start apart, and drawing the first arm's start for all would misplace every other arm's gain."""
    starts: dict[str, dict[float, float]] = defaultdict(dict)
    for row in before:
        starts[row.arm][_as_number(row.length)] = row.stats[0]
    if len({tuple(sorted(points.items())) for points in starts.values()}) == 1:
        return {"before training (step 0)": next(iter(starts.values()))}
    return {f"{arm} (step 0)": points for arm, points in sorted(starts.items())}


# The ablation's headline: the final value of each, per arm, with its 95% CI (present tags only).
HEADLINE_TAGS = (
    "final/val/e2e_acc",
    "final/val/trace/step_acc",
    "final/val/leakage",
    "final/val/trace/premature_answer",
    "final/val/trace/under_exec",
    "final/val/trace/right_wrong_reasons",
    "final/val/pass@4",
)
# Curves plotted by default: the same metrics over training steps.
CURVE_TAGS = tuple(tag.removeprefix("final/") for tag in HEADLINE_TAGS[:-1])


# The length-collapse study's table (docs/length_collapse.md): before -> after training, per length and arm.
LENGTH_TAGS = (
    "val/e2e_acc",
    "val/trace/exact_exec",
    "val/trace/step_acc",
    "val/trace/under_exec",
    "val/trace/over_exec",
    "val/trace/premature_answer",
    "val/trace/leaked_answer",
    "val/trace/right_wrong_reasons",
)


def length_table(runs: Sequence[Run], tags: Sequence[str] = LENGTH_TAGS) -> str:
    """One row per (length, arm): `before -> after ± CI (change ± CI)` for each tag, the change paired by
    seed; `runs` carry `before/*` (`with_before`: the same runs as `final/*`)."""
    present = [t for t in tags if any(f"final/{t}" in run.scalars for run in runs)]
    after = {t: {(r.length, r.arm): r for r in metric_rows(runs, f"final/{t}")} for t in present}
    before = {t: {(r.length, r.arm): r for r in metric_rows(runs, f"before/{t}")} for t in present}
    keys = sorted({k for rows in after.values() for k in rows}, key=lambda k: (_as_number(k[0]), k[1]))
    lines = [
        "| N | arm | seeds | "
        + " | ".join(t.removeprefix("val/").removeprefix("trace/") for t in present)
        + " |",
        "|---|---|---|" + "---|" * len(present),
    ]
    for key in keys:
        seeds = max(len(after[t][key].values) for t in present if key in after[t])
        cells = []
        for t in present:
            if key not in after[t]:
                cells.append("")
                continue
            cell = _ci_cell(after[t][key], seeds)
            if key in before[t]:
                change = paired_differences(after[t][key], before[t][key])
                mean, half = mean_ci(change) if change else (math.nan, math.nan)
                shown = f"{mean:+.3f}" + ("" if math.isnan(half) else f" ± {half:.3f}")
                cell = f"{before[t][key].stats[0]:.3f} -> {cell} ({shown})"
            cells.append(cell)
        lines.append(f"| {key[0]} | {key[1]} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ci_cell(row: Row, seeds: int | None = None) -> str:
    """`mean ± half-width`, and `(n=k)` when the cell holds fewer seeds than its row's `seeds`."""
    mean, half = row.stats
    cell = f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"
    return cell + (f" (n={len(row.values)})" if seeds is not None and len(row.values) < seeds else "")


def paired_differences(a: Row, b: Row) -> list[float]:
    """a - b for every seed both rows hold a (non-NaN) value of: the same seed is the same initial planner,
    data order and sampling seeds in every arm, so differences per seed cancel what the seeds share."""
    theirs = {seed: value for seed, value in zip(b.seeds, b.values, strict=True) if not math.isnan(value)}
    return [
        value - theirs[seed]
        for seed, value in zip(a.seeds, a.values, strict=True)
        if seed in theirs and not math.isnan(value)
    ]


def headline_table(runs: Sequence[Run], tags: Sequence[str] = HEADLINE_TAGS) -> str:
    """One row per arm, one column per metric: mean ± 95% CI half-width over seeds."""
    present = [tag for tag in tags if any(tag in run.scalars for run in runs)]
    if not present:
        return ""
    columns = {tag: {(r.arm, r.length): r for r in metric_rows(runs, tag)} for tag in present}
    keys = sorted({key for rows in columns.values() for key in rows}, key=lambda k: (k[0], _as_number(k[1])))
    with_length = any(length is not None for _, length in keys)
    head = [
        "arm",
        *(["length"] if with_length else []),
        "seeds",
        *(t.split("/val/", 1)[-1] for t in present),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, length in keys:
        seeds = max(len(rows[(arm, length)].values) for rows in columns.values() if (arm, length) in rows)
        cells = [
            _ci_cell(columns[t][(arm, length)], seeds) if (arm, length) in columns[t] else "" for t in present
        ]
        lines.append(
            "| " + " | ".join([arm, *([length or ""] if with_length else []), str(seeds), *cells]) + " |"
        )
    return "\n".join(lines)


def difference_notes(runs: Sequence[Run], tags: Sequence[str] = HEADLINE_TAGS) -> list[str]:
    """For each metric and each pair of arms (at the same length): the mean of their per-seed differences
    with its 95% CI, "separated" when the interval excludes 0. Pairs sharing fewer than two seeds fall back
    to whether their own intervals overlap (unpaired). Arms with a NaN value, or with one seed, are named
    and left out (NaN compares as neither overlapping nor separated)."""
    notes = []
    for tag in tags:
        name = tag.removeprefix("final/")
        rows = metric_rows(runs, tag)
        undefined = [r for r in rows if any(math.isnan(v) for v in r.values)]
        if undefined:
            named = "; ".join(
                f"{r.arm}"
                + (f" (length {r.length})" if r.length else "")
                + f" at seed {', '.join(s for s, v in zip(r.seeds, r.values, strict=True) if math.isnan(v))}"
                for r in undefined
            )
            notes.append(f"- {name}: NaN for {named}; left out of the comparison")
        single = [r for r in rows if len(r.values) < 2 and r not in undefined]
        if single and len(rows) >= 2:
            named = "; ".join(r.arm + (f" (length {r.length})" if r.length else "") for r in single)
            notes.append(f"- {name}: one seed only, not compared: {named}")
        rows = [r for r in rows if r not in undefined and r not in single]
        pairs = []
        for i, a in enumerate(rows):
            for b in rows[i + 1 :]:
                if a.length != b.length:
                    continue
                where = f" (length {a.length})" if a.length else ""
                change = paired_differences(b, a)
                if len(change) >= 2:
                    mean, half = mean_ci(change)
                    verdict = "separated" if abs(mean) > half else "not separated"
                    pairs.append(
                        f"{b.arm} - {a.arm}{where}: {mean:+.4f} ± {half:.4f} over {len(change)} paired seeds, "
                        + verdict
                    )
                else:
                    (ma, ha), (mb, hb) = a.stats, b.stats
                    overlap = ma - ha <= mb + hb and mb - hb <= ma + ha
                    pairs.append(
                        f"{b.arm} vs {a.arm}{where}: "
                        + ("CIs overlap" if overlap else "separated")
                        + " (unpaired: fewer than 2 shared seeds)"
                    )
        notes += [f"- {name}: {pair}" for pair in pairs]
    return notes


KIND_PREFIX = "final/val/trace/kind/"


def with_before(runs: Sequence[Run]) -> list[Run]:
    """The runs with `before/val/*`: each `val/*` series' point at step 0 (the validation before training;
    a run without one, `validate_before_training=false`, has no `before/`), for the runs that logged the
    matching `final/val/*`, so that before and after are over the same seeds."""
    out = []
    for run in runs:
        before = {
            f"before/{tag}": points[:1]
            for tag, points in run.scalars.items()
            if tag.startswith("val/") and points and points[0][0] == 0 and f"final/{tag}" in run.scalars
        }
        out.append(Run(run.name, run.params, {**run.scalars, **before}))
    return out


def plot_failure_modes(runs: Sequence[Run], kinds: Sequence[str], path: Path) -> None:
    """The mix of trace kinds after training (mean over seeds), a stacked bar per arm and length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {kind: {(r.arm, r.length): r.stats[0] for r in metric_rows(runs, kind)} for kind in kinds}
    keys = sorted({key for values in rows.values() for key in values}, key=lambda k: (_as_number(k[1]), k[0]))
    figure, axes = plt.subplots(figsize=(max(7, 0.6 * len(keys)), 4.5))
    bottom = [0.0] * len(keys)
    for kind in kinds:
        heights = [rows[kind].get(key, 0.0) for key in keys]
        axes.bar(range(len(keys)), heights, bottom=bottom, label=kind.removeprefix(KIND_PREFIX))
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axes.set_xticks(range(len(keys)), [f"N={length}\n{arm}" for arm, length in keys], fontsize=6, rotation=90)
    axes.set_ylabel("share of validation traces")
    axes.set_title("failure modes after training, per length and arm")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


@dataclass
class Comparison:
    markdown: str
    files: list[Path]
    used: dict[str, dict[str, list[tuple[int, float]]]]  # run -> tag -> points the tables and plots used


def compare(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    curve_tags: Sequence[str] = CURVE_TAGS,
    length_tag: str = "final/val/e2e_acc",
) -> Comparison:
    """Tables for every `final/*` metric, curve plots for `curve_tags`, the length-collapse plot when the
    sweep varies task.length; written to `out_dir` (default `<sweep dir>/compare`)."""
    repeated: list[str] = []
    runs = with_before(
        load_runs(sweep_dir, repeated)
    )  # finished runs carry their step-0 validation as before/*
    out = Path(out_dir) if out_dir is not None else Path(sweep_dir) / "compare"
    out.mkdir(parents=True, exist_ok=True)
    tags = final_tags(runs)
    if not tags:
        raise DataError(f"{sweep_dir}: no run logged final/* metrics (did the jobs finish?)")
    left_out = {
        "runs whose event files held no scalar (corrupt or empty): not in any table": unread_runs(
            sweep_dir, runs
        ),
        "runs without final/* metrics (unfinished or failed): drawn alone in the curves, in no mean": [
            run.name for run in runs if not run.finished
        ],
        "runs that logged final/* more than once (two jobs whose overrides differ only in keys the run name "
        "leaves out, e.g. trainer.max_steps, or a finished run resumed): the last write is used": repeated,
        "curves asked for that no run logged": [  # the defaults include the procedural task's trace tags
            t for t in curve_tags if tuple(curve_tags) != CURVE_TAGS and not any(t in r.scalars for r in runs)
        ],
    }
    sections = [
        f"# Sweep comparison: {Path(sweep_dir).resolve()}",
        "",
        f"{len(runs)} runs, arms x seeds.",
        "",
    ]
    for what, names in left_out.items():
        if names:
            log.warning("%d %s: %s", len(names), what, ", ".join(names))
            sections += [f"**Left out: {len(names)} {what}:** {', '.join(names)}", ""]
    headline = headline_table(runs)
    if headline:
        sections += ["## Final metrics per arm (mean ± 95% CI half-width over seeds)", "", headline, ""]
        notes = difference_notes(runs)
        if notes:
            sections += [
                "Differences between arms (mean of the per-seed differences, 95% CI; separated when it "
                "excludes 0):",
                "",
                *notes,
                "",
            ]
        sections += ["## Every final metric", ""]
    used: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(dict)
    for tag in tags:
        sections += [markdown_table(tag, metric_rows(runs, tag)), ""]
        for run in runs:
            if tag in run.scalars:
                used[run.name][tag] = run.scalars[tag]
    files = [out / "comparison.md"]
    for tag in curve_tags:
        if any(tag in run.scalars for run in runs):
            path = out / f"curves_{tag.replace('/', '_')}.png"
            plot_curves(runs, tag, path)
            files.append(path)
            for run in runs:
                if tag in run.scalars:
                    used[run.name][tag] = run.scalars[tag]
    if any(run.length is not None for run in runs) and length_tag in tags:
        path = out / "length_collapse.png"
        before_tag = "before/" + length_tag.removeprefix("final/")
        plot_length_collapse(metric_rows(runs, length_tag), length_tag, path, metric_rows(runs, before_tag))
        files.append(path)
        sections += [
            "## Length collapse: before -> after training (mean ± 95% CI half-width over seeds)",
            "",
            length_table(runs),
            "",
        ]
        kinds = [tag for tag in tags if tag.startswith(KIND_PREFIX)]
        if kinds:
            path = out / "failure_modes.png"
            plot_failure_modes(runs, kinds, path)
            files.append(path)
    before = headline_table(runs, [f"before/{t.removeprefix('final/')}" for t in HEADLINE_TAGS])
    if before:
        sections += ["## Before training: the step-0 validation (mean ± 95% CI over seeds)", "", before, ""]
    markdown = "\n".join(sections)
    (out / "comparison.md").write_text(markdown)
    (out / "comparison.json").write_text(json.dumps(used, indent=1))
    files.append(out / "comparison.json")
    return Comparison(markdown, files, dict(used))
