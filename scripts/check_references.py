"""Every reference solution under the task's own (default) sandbox limits: a reference judged anything
but correct means an honest program of the same speed cannot pass either.

    python scripts/check_references.py                     # HumanEval+ test, MBPP+ test, MBPP train/validation
    python scripts/check_references.py task.time_factor=2  # Hydra overrides of the task config

Prints one line per suite (problems, references not correct with their status and pass rate, seconds)
and exits 1 when any reference is not correct.
"""

from __future__ import annotations

import sys
import time

from planlift import runtime

SUITES = (("humaneval", "test"), ("mbpp", "test"), ("mbpp", "train"), ("mbpp", "validation"))


def not_correct(task, split: str) -> list[tuple[str, str, float]]:
    """(problem id, status, pass rate) of each reference of `split` that the task does not judge correct."""
    problems = task.problems(split)
    verdicts = task.verify_batch(problems, [task.executor_target(p) for p in problems])
    return [
        (p.id, v.status, round(v.pass_rate, 3))
        for p, v in zip(problems, verdicts, strict=True)
        if not v.correct
    ]


def task_from_config(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(runtime.PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"task={name}", *overrides])
    return instantiate(cfg.task)


def main(argv: list[str]) -> int:
    runtime.quiet_libraries()
    failed = False
    for name, split in SUITES:
        start = time.perf_counter()
        bad = not_correct(task_from_config(name, argv), split)
        failed |= bool(bad)
        print(
            f"{name}/{split}: not correct {len(bad)}: {bad} ({time.perf_counter() - start:.0f} s)", flush=True
        )
    return int(failed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
