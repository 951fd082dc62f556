"""GRPO step time of this tree vs another commit, side by side: the same short run from each tree in turn.

A git worktree of `--baseline` is made in a temporary folder; both trees run
`src/train.py <overrides> trainer.max_steps=<steps> validate_before_training=false` (the bootstrap cache
is shared, so it is built once) for `--rounds` alternating rounds. Reported: the median per-phase time
(`train/time/*`, steps after the first) per tree and the ratio this / baseline.

    python bench/step_time.py --baseline 32e3710 [--steps 30] [--rounds 2] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(tree: Path, overrides: list[str], steps: int, run_dir: Path) -> dict[str, list[float]]:
    from tbparse import SummaryReader

    command = [
        sys.executable,
        str(tree / "src" / "train.py"),
        *overrides,
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps * 10}",
        "validate_before_training=false",
        "callbacks.rich_progress_bar=null",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    subprocess.run(command, check=True, env=env, cwd=tree, capture_output=True)
    frame = SummaryReader(str(run_dir / "tensorboard")).scalars
    times = frame[frame.tag.str.startswith("train/time/")]
    return {
        tag.removeprefix("train/time/"): [v for s, v in zip(g.step, g.value, strict=True) if s > 0]
        for tag, g in times.groupby("tag")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a commit of this repository")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("overrides", nargs="*", default=["torch_threads=1"])
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="planlift-steptime-"))
    baseline = scratch / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(baseline), args.baseline], cwd=ROOT, check=True)
    os.environ.setdefault("PLANLIFT_CACHE", str(ROOT / "outputs" / "cache"))
    phases: dict[str, dict[str, list[float]]] = {"this": {}, "baseline": {}}
    try:
        for round_ in range(args.rounds):
            for name, tree in (("baseline", baseline), ("this", ROOT)):
                times = run(tree, args.overrides, args.steps, scratch / f"{name}{round_}")
                for phase, values in times.items():
                    phases[name].setdefault(phase, []).extend(values)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=False)
    result = {"settings": vars(args)}
    for name, times in phases.items():
        medians = {phase: statistics.median(values) for phase, values in times.items()}
        medians["step"] = sum(medians.values())
        result[name] = medians
    result["ratio_this_over_baseline"] = {
        phase: result["this"][phase] / result["baseline"][phase]
        for phase in result["this"]
        if result["baseline"].get(phase)
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
