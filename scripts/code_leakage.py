"""How the code-leakage check (`CodeTask.detect_leakage`) reads plans: MBPP reference programs dressed as
plans (should be flagged) and SmolLM2-135M planner plans (mostly prose; flagged when they hold code).

    python scripts/code_leakage.py                 # the references only (seconds)
    python scripts/code_leakage.py --plans 32      # + 2 SmolLM2 plans for each of 32 MBPP validation problems (~2 min)

Prints, per dressing of the 317 MBPP train+validation reference bodies (`def` lines removed), how many are
flagged; how many of the one-line bodies (`return <expr>`) are flagged when written into a sentence
("Then return <expr>, which is the answer.", "It returns <expr>.", "Compute <expr> and return it."); how
many of the problems' own descriptions (HumanEval docstrings, MBPP and MBPP+ texts) are flagged; then how many SmolLM2 plans are flagged, and why (fence,
def, statements or lambda).
"""

from __future__ import annotations

import argparse
import ast
import textwrap

from planlift import runtime
from planlift.datasets.code import load_humaneval, load_mbpp, load_mbpp_plus
from planlift.tasks.code import _DEF, FENCE, MBPPTask, code_statements

DRESSINGS = {
    "bare": lambda i, line: line,
    "'- ' bullets": lambda i, line: f"- {line}",
    "'Step k:' prefixes": lambda i, line: f"Step {i + 1}: {line}",
    "backticks": lambda i, line: f"`{line}`",
}

# A one-line body `return <expr>` written into a sentence.
SENTENCES = {
    "'Then return ..., which'": "Then return {expr}, which is the answer.\n",
    "'It returns ...'": "It returns {expr}.\n",
    "'Compute ... and return it'": "Compute {expr} and return it.\n",
}


def body(reference: str) -> list[str]:
    lines = [line for line in reference.splitlines() if line.strip() and not line.lstrip().startswith("def ")]
    return textwrap.dedent("\n".join(lines)).splitlines()


def docstring(record) -> str | None:
    """The description a problem's prompt gives: its function's docstring (HumanEval), or the prompt's
    own (MBPP, MBPP+: the text and a test)."""
    tree = ast.parse(record.prompt)  # a function whose body is its docstring parses
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == record.entry_point]
    return ast.get_docstring(functions[0] if functions else tree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=0, help="MBPP validation problems to sample plans for")
    args = parser.parse_args()
    runtime.quiet_libraries()
    task = object.__new__(MBPPTask)  # detect_leakage reads only code_lines: no sandbox, no references run
    task.code_lines = 3
    excluded = {r.meta["mbpp_id"] for r in load_mbpp_plus()}
    records = load_mbpp("train", excluded) + load_mbpp("validation", excluded)
    for name, dress in DRESSINGS.items():
        plans = [
            "\n".join(dress(i, line) for i, line in enumerate(body(r.reference))) + "\n" for r in records
        ]
        print(
            f"references, {name:20s} flagged {sum(task.detect_leakage(None, p) for p in plans)}/{len(plans)}"
        )
    one_line = [
        lines[0] for r in records if len(lines := body(r.reference)) == 1 and lines[0].startswith("return ")
    ]
    for name, sentence in SENTENCES.items():
        plans = [sentence.format(expr=line.removeprefix("return ")) for line in one_line]
        print(
            f"one-line references as sentences, {name:28s} flagged "
            f"{sum(task.detect_leakage(None, p) for p in plans)}/{len(plans)}"
        )
    for name, problems in (
        ("HumanEval", load_humaneval()),
        ("MBPP train+validation", records),
        ("MBPP+", load_mbpp_plus()),
    ):
        descriptions = [text for r in problems if (text := docstring(r))]
        print(
            f"descriptions, {name:21s} flagged "
            f"{sum(task.detect_leakage(None, d) for d in descriptions)}/{len(descriptions)}"
        )
    if args.plans:
        import torch

        from planlift.grpo.rollout import sample_rollout
        from planlift.models import load_policy

        torch.set_num_threads(2)
        real = MBPPTask(sizes={"validation": args.plans})
        problems = real.problems("validation")
        policy = load_policy("packaged:smollm2-135m-instruct")
        plans = []
        for start in range(0, len(problems), 8):
            batch = problems[start : start + 8]
            rollout = sample_rollout(policy, real, batch, 2, temperature=0.7, max_new_tokens=160, seed=start)
            plans += [real.extract_reasoning(text) for text in rollout.texts]
        flagged = [p for p in plans if real.detect_leakage(None, p)]
        print(
            f"SmolLM2 plans flagged {len(flagged)}/{len(plans)}: fence {sum(FENCE in p for p in flagged)}, "
            f"def {sum(bool(_DEF.search(p)) for p in flagged)}, "
            f"statements (3+, or a short program) or a lambda only "
            f"{sum(FENCE not in p and not _DEF.search(p) for p in flagged)}"
        )
        print("statements per unflagged plan:", sorted(code_statements(p) for p in plans if p not in flagged))


if __name__ == "__main__":
    main()
