"""Build (or rebuild) the converted code tests and report what converted.

Runs every reference solution of HumanEval(+) and MBPP(+) once in the sandbox: assert-style tests become
call tests with data (`planlift.sandbox.conversion`) and the EvalPlus inputs get their expected outputs.
The result is cached under `<cache dir>/code_expected/` (keyed by the data, the harness and the conversion
rules), which is where training and evaluation read it from.

    python scripts/convert_code_tests.py [--cache-dir outputs/cache] [--rebuild]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from planlift.models.packaged import default_cache_dir
from planlift.tasks import HumanEvalTask, MBPPTask

SPLITS = (
    ("humaneval", HumanEvalTask, False, "test"),
    ("humaneval+", HumanEvalTask, True, "test"),
    ("mbpp train", MBPPTask, True, "train"),
    ("mbpp validation", MBPPTask, True, "validation"),
    ("mbpp+ test (base asserts only)", MBPPTask, False, "test"),
    ("mbpp+ test", MBPPTask, True, "test"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--rebuild", action="store_true", help="delete the cached conversions first")
    args = parser.parse_args()
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.rebuild:
        shutil.rmtree(cache_dir / "code_expected", ignore_errors=True)
    print(
        "| split | problems kept | left out (no test) | asserts | asserts without a test | call tests "
        "| dropped assert calls | dropped inputs |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, task_class, plus, split in SPLITS:
        start = time.perf_counter()
        task = task_class(plus=plus, cache_dir=str(cache_dir))
        report = task.conversion_report(split)
        dropped = json.dumps(report["dropped_assert_calls"]) if report["dropped_assert_calls"] else "0"
        print(
            f"| {label} | {report['problems']} | {', '.join(report['left_out']) or '-'} | {report['asserts']} | "
            f"{report['asserts_without_tests']} | "
            f"{report['tests']:,} | {dropped} | {report['dropped_inputs']} |  ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
