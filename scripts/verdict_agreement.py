"""Verdicts of a fixed program set, saved or compared: does a change to the sandbox keep honest verdicts?

The program set is made here, deterministically: every reference solution of HumanEval(+) and MBPP(+)
plus up to `--mutants` AST mutants of it (a flipped comparison, a swapped arithmetic operator, an integer
constant off by one, `and`/`or` swapped, an early `return None`). Mutants are a mix of programs that
still pass and programs that fail, i.e. honest programs of both verdicts.

    python scripts/verdict_agreement.py save before.json [--mutants 3] [--cache-dir DIR]
    python scripts/verdict_agreement.py save after.json
    python scripts/verdict_agreement.py compare before.json after.json

`--suites`, `--limit` (the first N problems of each suite) and `--max-inputs` (EvalPlus inputs per problem)
make a quick, smaller set; both saves of a comparison must use the same ones. Each verdict is saved as
[correct, pass_rate, status, origin] with origin "reference" or "mutant"; `compare` also reports reference
solutions judged wrong (an honest program failed: the harness, not the program, is at fault).

Only the stable task API is used (`task.problems`, `task.program`, `task.verify_batch`), so the same
script runs against an older checkout (PYTHONPATH=<old>/src).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from planlift.sandbox import Limits, Sandbox
from planlift.tasks import HumanEvalTask, MBPPTask

# (label, task class, plus, split)
SUITES = (
    ("humaneval_plus", HumanEvalTask, True, "test"),
    ("humaneval", HumanEvalTask, False, "test"),
    ("mbpp_plus", MBPPTask, True, "test"),
    ("mbpp_train", MBPPTask, True, "train"),
)
_FLIP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq}
_ARITH = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult}


def _sites(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    sites = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and type(node.ops[0]) in _FLIP:
            sites.append(("compare", node))
        elif isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            sites.append(("arith", node))
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            sites.append(("constant", node))
        elif isinstance(node, ast.BoolOp):
            sites.append(("boolop", node))
        elif isinstance(node, ast.FunctionDef) and node.body:
            sites.append(("return_none", node))
    return sites


def _mutate(kind: str, node: ast.AST) -> None:
    if kind == "compare":
        node.ops[0] = _FLIP[type(node.ops[0])]()
    elif kind == "arith":
        node.op = _ARITH[type(node.op)]()
    elif kind == "constant":
        node.value += 1
    elif kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    else:
        node.body.insert(0, ast.Return(value=ast.Constant(None)))


def mutants(source: str, count: int, seed: str) -> list[str]:
    """Up to `count` distinct, compiling one-site mutants of `source`."""
    try:
        n_sites = len(_sites(ast.parse(source)))
    except SyntaxError:
        return []
    rng = random.Random(seed)
    order = rng.sample(range(n_sites), n_sites)
    out: list[str] = []
    for index in order:
        if len(out) >= count:
            break
        tree = ast.parse(source)
        kind, node = _sites(tree)[index]
        _mutate(kind, node)
        text = ast.unparse(ast.fix_missing_locations(tree))
        if text != ast.unparse(ast.parse(source)) and text not in out:
            out.append(text)
    return out


def save(
    path: str,
    count: int,
    cache_dir: str,
    suites: list[str] | None = None,
    limit: int | None = None,
    max_inputs: int | None = None,
) -> None:
    sandbox = Sandbox(limits=Limits(timeout=60.0, test_timeout=5.0, cpu_seconds=60), workers=2)
    verdicts: dict[str, dict[str, list]] = {}
    for label, task_class, plus, split in SUITES:
        if suites and label not in suites:
            continue
        start = time.perf_counter()
        task = task_class(
            sandbox=sandbox, plus=plus, max_inputs=max_inputs, time_factor=10.0, cache_dir=cache_dir
        )
        problems = task.problems(split)[:limit]
        programs, owners, origins = [], [], []
        for problem in problems:
            reference = task.executor_target(problem).rsplit("```", 1)[0]
            program = task.program(problem, reference)
            for origin, variant in [("reference", program)] + [
                ("mutant", m) for m in mutants(program, count, problem.id)
            ]:
                programs.append(variant)
                owners.append(problem)
                origins.append(origin)
        # the program is passed as the executor's reply of a non-completion task; HumanEval replies
        # are appended to the prompt, which a complete program simply redefines
        results = task.verify_batch(owners, programs)
        verdicts[label] = {
            f"{p.id}:{hashlib.sha256(text.encode()).hexdigest()[:12]}": [
                v.correct,
                round(v.pass_rate, 6),
                v.status,
                origin,
            ]
            for p, text, v, origin in zip(owners, programs, results, origins, strict=True)
        }
        passing = sum(v.correct for v in results)
        print(
            f"{label}: {len(programs)} programs, {passing} correct, {time.perf_counter() - start:.0f}s",
            flush=True,
        )
    with open(path, "w") as handle:
        json.dump(verdicts, handle, indent=1, sort_keys=True)


def compare(before_path: str, after_path: str) -> int:
    before, after = (json.loads(Path(p).read_text()) for p in (before_path, after_path))
    changed = 0
    for label in before:
        old, new = before[label], after.get(label, {})
        keys = sorted(set(old) & set(new))
        flips = [k for k in keys if old[k][0] != new[k][0]]
        rate = [k for k in keys if old[k][0] == new[k][0] and abs(old[k][1] - new[k][1]) > 1e-9]
        honest_kept = sum(old[k][0] == new[k][0] for k in keys)
        print(
            f"{label}: {len(keys)} programs in both, correct-verdict agreement {honest_kept}/{len(keys)}, "
            f"pass verdicts {sum(old[k][0] for k in keys)} -> {sum(new[k][0] for k in keys)}, "
            f"pass_rate changed (same verdict) on {len(rate)}"
        )
        for key in flips:
            print(f"  {key}: {old[key]} -> {new[key]}")
        failed_references = [k for k in sorted(new) if new[k][3:] == ["reference"] and not new[k][0]]
        for key in failed_references:
            print(f"  reference solution judged wrong: {key}: {new[key]}")
        changed += len(flips) + len(failed_references)
    return 1 if changed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    saving = sub.add_parser("save")
    saving.add_argument("path")
    saving.add_argument("--mutants", type=int, default=3)
    saving.add_argument("--cache-dir", default=None)
    saving.add_argument("--suites", nargs="+", choices=[s[0] for s in SUITES], default=None)
    saving.add_argument("--limit", type=int, default=None, help="the first N problems of each suite")
    saving.add_argument("--max-inputs", type=int, default=None, help="EvalPlus inputs per problem")
    comparing = sub.add_parser("compare")
    comparing.add_argument("before")
    comparing.add_argument("after")
    args = parser.parse_args()
    if args.command == "save":
        cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="planlift-verdicts-")
        save(args.path, args.mutants, cache_dir, args.suites, args.limit, args.max_inputs)
    else:
        sys.exit(compare(args.before, args.after))


if __name__ == "__main__":
    main()
