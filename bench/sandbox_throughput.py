"""Sandbox throughput: the process pool vs one program at a time, side by side on the same programs.

Workload: the HumanEval+ reference solutions of the first `--problems` problems with all their tests
(the original `check` plus every EvalPlus input: real programs, real tests), then the same problems with
a wrong program, judged in full and with first-failure early exit (binary success).
Rounds alternate sequential and pool runs in one process; reported as tests per second and ratios, with
the parent's own CPU seconds (reading, decoding and judging the results: the trainer's share of the work).

    python bench/sandbox_throughput.py [--problems 48] [--workers 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from planlift.sandbox import ProgramJob, Sandbox
from planlift.tasks import HumanEvalTask


def timed(sandbox: Sandbox, jobs: list[ProgramJob]) -> tuple[float, float, int, int]:
    """(seconds, the parent's CPU seconds, tests run, programs passing)."""
    start, cpu = time.perf_counter(), time.process_time()
    results = sandbox.run_many(jobs)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    ran = sum(r.tests_run for r in results)
    return seconds, cpu, ran, sum(r.ok for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    sequential, pool = Sandbox(workers=1), Sandbox(workers=args.workers)
    task = HumanEvalTask(sandbox=pool, sizes={"test": args.problems})  # records only these references
    problems = task.problems("test")
    tests = sum(len(p.meta["tests"]) for p in problems)

    def jobs(program_of, early_exit):
        return [
            ProgramJob(
                program_of(p), p.meta["tests"], p.meta["record"].entry_point, stop_on_failure=early_exit
            )
            for p in problems
        ]

    reference = jobs(lambda p: task.program(p, task.executor_target(p)), False)
    wrong = lambda p: f"{p.meta['record'].prompt}\n    return None\n"  # noqa: E731
    workloads = {
        "reference": reference,
        "wrong_full": jobs(wrong, False),
        "wrong_early_exit": jobs(wrong, True),
    }
    rows = {}
    for name, batch in workloads.items():
        times = {"sequential": [], "pool": []}
        parent_cpu = []
        for _ in range(args.rounds):
            for mode, sandbox in (("sequential", sequential), ("pool", pool)):
                seconds, cpu, ran, passing = timed(sandbox, batch)
                times[mode].append(seconds)
                parent_cpu.append(cpu)
        seq, par = statistics.median(times["sequential"]), statistics.median(times["pool"])
        rows[name] = {
            "programs": len(batch),
            "tests_judged": ran,
            "passing": passing,
            "sequential_s": round(seq, 2),
            "pool_s": round(par, 2),
            "sequential_tests_per_s": round(ran / seq, 1),
            "pool_tests_per_s": round(ran / par, 1),
            "pool_speedup": round(seq / par, 2),
            "parent_cpu_s": round(statistics.median(parent_cpu), 2),
        }
    rows["wrong_early_exit"]["early_exit_speedup_vs_full_pool"] = round(
        rows["wrong_full"]["pool_s"] / rows["wrong_early_exit"]["pool_s"], 2
    )
    print(
        json.dumps(
            {
                "problems": len(problems),
                "tests_per_problem": round(tests / len(problems), 1),
                "workers": args.workers,
                "cpus": os.cpu_count(),
                "isolation": pool.isolation.mode,
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
