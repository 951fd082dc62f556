"""How much of the code reward can a program collect without reading its input? (docs/tasks_and_evaluation.md,
"Pass credit")

For each of the first `--problems` MBPP+ test problems, programs that return one constant (False, True, 0,
1, -1, None, "", [], ()) are judged by the sandbox on every test; the best of them per problem is scored
by the code formula's execution term under both pass credits (`reward.code_pass_credit`): `pass_rate`
(the authors', 0.8 x share of tests passed + run bonus) and `all_tests` (0.8 only when all pass). Prints
JSON: per credit, the mean best constant score and how many problems it scores >= 0.5 on; and the
problems where a constant passes at least half the tests.

    python scripts/constant_programs.py [--problems 40]      (~1 min on 2 cores, most of it converting tests)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from planlift.rewards.formulas import CODE_PASS_CREDITS, code_exec_score
from planlift.sandbox import Limits, Sandbox
from planlift.tasks.code import MBPPTask

CONSTANTS = ("False", "True", "0", "1", "-1", "None", "''", "[]", "()")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        task = MBPPTask(
            sandbox=Sandbox(limits=Limits(timeout=10.0, test_timeout=1.0), workers=2),
            cache_dir=cache,
            sizes={"test": args.problems},
        )
        problems = task.problems("test")
        replies = [
            (problem, f"def {task._record(problem).entry_point}(*args, **kwargs):\n    return {value}\n```")
            for problem in problems
            for value in CONSTANTS
        ]
        verdicts = task.verify_batch([p for p, _ in replies], [r for _, r in replies])
    per_problem = [verdicts[i : i + len(CONSTANTS)] for i in range(0, len(verdicts), len(CONSTANTS))]
    report: dict = {"problems": len(problems), "constants": list(CONSTANTS)}
    for credit in CODE_PASS_CREDITS:
        best = [max(code_exec_score(v, pass_credit=credit) for v in group) for group in per_problem]
        report[credit] = {
            "mean_best_constant_exec": round(sum(best) / len(best), 3),
            "problems_scored_at_least_0.5": sum(score >= 0.5 for score in best),
        }
    report["half_the_tests_or_more"] = {
        problem.id: round(max(v.pass_rate for v in group), 3)
        for problem, group in zip(problems, per_problem, strict=True)
        if max(v.pass_rate for v in group) >= 0.5
    }
    report["solved_by_a_constant"] = [
        problem.id
        for problem, group in zip(problems, per_problem, strict=True)
        if any(v.correct for v in group)
    ]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
