"""Code tasks end to end on real problems: prompts, programs, sandboxed verdicts, leakage, the reward."""

from __future__ import annotations

import dataclasses

import pytest

from planlift.datasets.code import load_humaneval
from planlift.errors import ConfigError
from planlift.judging import BaselineCache, judge_alone, task_tag
from planlift.rewards import ExecutorGroundedReward, formulas
from planlift.rm import ConstantRM
from planlift.sandbox import Limits, Sandbox
from planlift.tasks import HumanEvalTask, MBPPTask
from planlift.tasks.base import REASONING_CLOSE
from planlift.tasks.code import code_statements
from tests.rewards.scripted import ScriptedExecutor


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(limits=Limits(timeout=10.0, test_timeout=1.0), workers=2)


@pytest.fixture(scope="module")
def humaneval(sandbox, tmp_path_factory):
    # three call inputs per problem keep the one-off reference run short
    return HumanEvalTask(sandbox=sandbox, max_inputs=3, cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def problem(humaneval):
    return humaneval.problems("test")[0]  # has_close_elements


BODY = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1 :])\n"


def test_problems_carry_tests_with_reference_outputs(humaneval, problem):
    tests = problem.meta["tests"]
    assert len(humaneval.problems("test")) == 164
    # `check` became data: its 7 asserts `candidate(...) == True/False`, then the 3 EvalPlus inputs
    assert all(t.code is None and t.oracle == "equal" for t in tests)
    assert [t.expected for t in tests[:7]] == [True, False, True, False, True, True, False]
    assert tests[0].args == [[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3]
    assert [t.expected for t in tests[7:]] == [True, False, True]
    assert all(t.timeout >= 1.0 for t in tests)
    assert problem.meta["asserts_without_tests"] == 0 and problem.meta["dropped_assert_calls"] == {}


def test_verdicts_for_right_wrong_and_broken_programs(humaneval, problem):
    full = f"def has_close_elements(numbers, threshold):\n{BODY}"
    outputs = {
        "correct": full,
        "body_only": BODY,  # continues the prompt's signature
        "failed_tests": "def has_close_elements(numbers, threshold):\n    return True\n",
        "runtime_error": "def has_close_elements(numbers, threshold):\n    return numbers[99]\n",
        "syntax_error": "def has_close_elements(numbers, threshold)\n    return True\n",
        "timeout": "def has_close_elements(numbers, threshold):\n    while True:\n        pass\n",
        "fenced": full + "```\nThis function works.",
    }
    verdicts = dict(
        zip(outputs, humaneval.verify_batch([problem] * len(outputs), list(outputs.values())), strict=True)
    )
    assert verdicts["correct"].correct and verdicts["correct"].pass_rate == 1.0
    assert verdicts["body_only"].correct and verdicts["fenced"].correct
    assert verdicts["failed_tests"].status == "failed_tests" and 0 < verdicts["failed_tests"].pass_rate < 1
    assert verdicts["runtime_error"].status == "runtime_error" and verdicts["runtime_error"].pass_rate == 0
    assert verdicts["syntax_error"].status == "syntax_error"
    assert verdicts["timeout"].status == "timeout"


def test_early_exit_stops_at_the_first_failure(humaneval, problem):
    wrong = "def has_close_elements(numbers, threshold):\n    return True\n"
    full, early = humaneval.verify_batch([problem, problem], [wrong, wrong], early_exit=[False, True])
    assert not full.correct and not early.correct
    assert early.pass_rate <= full.pass_rate


def test_prompts_and_targets(humaneval, problem):
    planner = humaneval.planner_prompt(problem)
    assert problem.text.strip() in planner.user and planner.stop == (REASONING_CLOSE,)
    executor = humaneval.executor_prompt(problem, "Compare every pair.\n")
    alone = humaneval.executor_prompt(problem, None)
    assert "Compare every pair." in executor.user and "Plan" not in alone.user
    assert executor.prefill == "```python\n" and "```" in executor.stop
    assert humaneval.verify(problem, humaneval.executor_target(problem)).correct


def test_leakage_is_code_in_the_plan(humaneval, problem):
    assert humaneval.detect_leakage(problem, "```python\nx = 1\n```")
    assert humaneval.detect_leakage(problem, "Write def has_close_elements(numbers, t): and loop.")
    assert humaneval.detect_leakage(
        problem, "for a in numbers:\n    for b in numbers:\n        return True\n"
    )
    assert not humaneval.detect_leakage(
        problem, "Compare every pair of numbers.\nReturn True when one is close.\n"
    )
    # the program under another name, or its statements joined on one line
    assert humaneval.detect_leakage(problem, "Use def close(a, b): return abs(a - b) < t\n")
    assert humaneval.detect_leakage(
        problem, "pairs = combinations(numbers, 2); d = min(gaps); return d < t\n"
    )
    assert not humaneval.detect_leakage(problem, "Sort the numbers; then compare neighbours; stop early.\n")


PROGRAM_LINES = [
    "for i, a in enumerate(numbers):",
    "for b in numbers[i + 1:]:",
    "if abs(a - b) < t:",
    "return True",
]


@pytest.mark.parametrize(
    "dress",
    [
        lambda i, line: line,
        lambda i, line: f"- {line}",
        lambda i, line: f"{i + 1}. {line}",
        lambda i, line: f"Step {i + 1}: {line}",
        lambda i, line: f"`{line}`",
        lambda i, line: f"Then `{line}` here.",
        lambda i, line: f"    {line}",
    ],
    ids=["bare", "bullets", "numbered", "step_prefix", "backticks", "inline_span", "indented"],
)
def test_the_program_dressed_as_a_list_is_still_code(humaneval, problem, dress):
    plan = "\n".join(dress(i, line) for i, line in enumerate(PROGRAM_LINES)) + "\n"
    assert humaneval.detect_leakage(problem, plan)


def test_block_headers_are_statements():
    for header in ("else:", "elif x > 1:", "try:", "except ValueError:", "finally:", "with open(p) as f:"):
        assert code_statements(header) == 1, header
    assert code_statements("Else:\nTry:\nFinally, return it:\n") == 0


@pytest.mark.parametrize(
    "plan",
    [
        "with two pointers, scan the sorted list:\nfrom the left end, move right.\nreturn the pair when found.\n",
        "First sort the list.\nreturn 0 when the list is empty.\nfrom the rest, keep the large ones.\n",
        "result = the first character whose count is 1.\nreturn None when there is none.\nElse: return it.\n",
        "1. Set total = 0.\n2. For each number n: if n is even, add n to total.\n3. Return total.\n",
        "Edge cases:\n- empty list: False\n- one number: False\nIf two numbers are close:\n",
        # markdown headings and methods named in sentences (SmolLM2 plans write both)
        "### Output:\nThe function has edge cases.\n### Output:\nIt returns a list.\n### Output:\n",
        "Call `upper()` on the string.\n- `capitalize()` each word.\n- Use `strip()` and `split()` first.\n",
        # examples as labels and values (each parsed as an annotation before: 4 statements)
        "Example 1:\nInput: [4, 2, 3]\nOutput: [2, 1]\nInput: []\nOutput: []\n",
    ],
)
def test_prose_plans_are_not_code(humaneval, problem, plan):
    assert code_statements(plan) == 0 and not humaneval.detect_leakage(problem, plan)


@pytest.mark.parametrize(
    "plan",
    [
        # a statement wrapped over lines, inside brackets or after a backslash
        "total = sum(\n    abs(a - b) for a, b in zip(numbers, numbers[1:])\n)\nreturn total < threshold\n",
        "close = abs(a - b) < threshold \\\n    and a != b\nreturn close\n",
        "pairs = [\n    (a, b)\n    for a in numbers\n    for b in numbers\n]\ngaps = [\n    abs(a - b) for a, b in pairs\n]\n"
        "smallest = min(\n    gaps\n)\n",
        # a label, or lettered steps, before the statements
        "Body: return any(abs(a - b) < threshold for a in numbers for b in numbers if a is not b)\n",
        "Step A) s = sorted(numbers)\nStep B) gaps = [b - a for a, b in zip(s, s[1:])]\nStep C) flag = min(gaps) < t\n",
        "a) s = sorted(numbers)\nb) gaps = [b - a for a, b in zip(s, s[1:])]\nc) flag = min(gaps) < t\n",
        # a lambda is a function under another name
        "Map lambda a, b: abs(a - b) over the pairs.\n",
        "Sort with key=lambda p: p[1], then compare.\n",
        # a program of one or two statements
        "return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1 :])\n",
        "s = sorted(numbers)\nreturn any(b - a < threshold for a, b in zip(s, s[1:]))\n",
        "- gap = min(b - a for a, b in zip(s, s[1:]))\n- return gap < threshold\n",
        "Use `s = sorted(numbers)` and `return s[0]`.\n",
        # characters that read as code
        "de\u200bf close(a, b): return abs(a - b) < t\n",
        "\uff52\uff45\uff54\uff55\uff52\uff4e any(abs(a - b) < t for a in xs for b in xs)\n",
        # a one-line program written into a sentence
        "Sort them, then return any(b - a < threshold for a, b in zip(s, s[1:])), which is the check.\n",
        "Body (one line): return min(b - a for a, b in zip(s, s[1:])) < threshold\n",
        "Simply return `abs(numbers[0] - numbers[1]) < threshold`.\n",
        "Sort the numbers; it returns min(b - a for a, b in zip(s, s[1:])) < threshold.\n",
        "Return value: min(b - a for a, b in zip(s, s[1:])) < threshold\n",
        "Compute min(b - a for a, b in zip(s, s[1:])) < threshold and return it.\n",
        "Finally min(gaps) < threshold is returned.\n",
    ],
    ids=[
        "wrapped_brackets",
        "wrapped_backslash",
        "three_wrapped",
        "label",
        "step_letters",
        "letter_markers",
        "lambda_in_prose",
        "lambda_key",
        "one_statement",
        "two_statements",
        "two_bullets",
        "inline_spans",
        "zero_width_def",
        "fullwidth_return",
        "return_in_sentence",
        "return_after_parenthesised_label",
        "return_of_a_code_span",
        "returns_in_sentence",
        "return_value_label",
        "compute_and_return_it",
        "is_returned",
    ],
)
def test_short_wrapped_or_labelled_programs_are_code(humaneval, problem, plan):
    assert humaneval.detect_leakage(problem, plan)


def test_a_lambda_is_the_shortest_text_that_parses_and_broken_ones_are_bounded():
    from planlift.tasks.code import has_lambda

    assert has_lambda("Sort by key=lambda p: p[1] (the second field) then drop duplicates (")
    assert has_lambda("lambda *args: len(args)")
    assert not has_lambda("a lambda: it is shorter; a lambda function: it has no name")
    assert not has_lambda("lambda x: (" * 700)  # each broken header is tried at a bounded number of ends
    assert not has_lambda("x = 1\n" + "\n".join(["lambda x: ("] * 20 + ["lambda y: y + 1"]), headers=20)
    assert has_lambda("\n".join(["lambda x: ("] * 19 + ["lambda y: y + 1"]), headers=20)


@pytest.mark.parametrize(
    "plan",
    [
        "Edge case: return 0 when the list is empty.\nOtherwise: return the largest gap.\n",
        "Base case: return 1.\nRecursive case: multiply n by the factorial of n - 1.\n",
        "Use a lambda as the sort key.\nA lambda: it is shorter than a def.\n",
        "Sort the list (ascending\norder), then scan it once.\n",
        "Step A) sort the numbers.\nStep B) compare neighbours.\nStep C) return the answer.\n",
        "a) count the vowels.\nb) return the count.\n",
        "Result: the smallest gap.\nNote: the input may be empty.\n",
        "Call `max(counts, key=counts.get)` to pick the mode.\n",
        "Keep `seen = set()` and `result = []`.\nreturn result at the end.\n",
        "Use `sorted(xs)`; then `return` the first element.\n",
        "Edge cases (empty list,\none element): return an empty list.\n",
        "Formula: area = 0.5 * (a + b) * h\nThen return the area.\n",
        "Initialise: count = 0\nLoop: count += 1 for each vowel\nFinish: return count\n",
        # "return" in sentences, followed by words rather than an expression that computes
        "Return True if two numbers are closer than t, otherwise False.\n",
        "Return i and j such that they sum to the target.\nreturn -1 if not found.\n",
        "Return 'Yes' or 'No'.\nreturn the index i where nums[i] is the largest.\n",
        "It returns True if two numbers are closer than t.\nReturns: the number of close pairs.\n",
        "Sort the list and return it.\nFind i and j and return them.\nThe returned value is the count.\n",
        # English words that are Python keywords, hyphenated words and math notation (flagged before)
        "Sort the list.\nreturn them in order.\n",
        "Return it in lowercase.\n",
        "Return None in case the list is empty.\n",
        "Return True is list elements are sorted.\n",
        "Return n-th Fibonacci number.\n",
        "Return non-negative numbers only.\n",
        "Return 2^n modulo p.\n",
        "It returns [a_1+b_1,...,a_n+b_n].\n",
    ],
)
def test_plans_that_name_a_little_code_are_not_the_program(humaneval, problem, plan):
    """Prose with labels, brackets over lines, a method or a trivial statement named: not a program."""
    assert not humaneval.detect_leakage(problem, plan)


def test_humaneval_is_test_only(humaneval):
    with pytest.raises(ConfigError, match="only a test split"):
        humaneval.problems("train")


def test_mbpp_train_problems_run_their_asserts(sandbox, tmp_path):
    task = MBPPTask(sandbox=sandbox, cache_dir=str(tmp_path), sizes={"train": 8})
    train = task.problems("train")
    verdicts = task.verify_batch(train, [task.executor_target(p) for p in train])
    assert [v.status for v in verdicts] == ["correct"] * len(train)
    assert train and all(len(p.meta["tests"]) >= 3 for p in train)


def test_sizes_keep_the_first_records_and_only_run_their_references(sandbox, tmp_path):
    task = MBPPTask(sandbox=sandbox, cache_dir=str(tmp_path), sizes={"train": 8, "validation": 3})
    for split, size in (("train", 8), ("validation", 3)):
        first = [r.id for r in task._records(split)[:size]]
        kept = [p.id for p in task.problems(split)]
        # the first records in file order; one without a test after conversion is left out and named
        assert sorted(kept + list(task._left_out[split]), key=first.index) == first
        assert kept == [i for i in first if i in kept]
    with pytest.raises(ConfigError, match=r"task.sizes.test=9999 exceeds the 378 problems of mbpp/test"):
        MBPPTask(sandbox=sandbox, cache_dir=str(tmp_path), sizes={"test": 9999}).problems("test")
    for sizes, key in (
        ({"dev": 3}, "unknown split 'dev'"),
        ({"train": 0}, "task.sizes.train"),
        ({"train": True}, "task.sizes.train"),
    ):
        with pytest.raises(ConfigError, match=key):
            MBPPTask(sandbox=sandbox, sizes=sizes)


def test_code_gated_reward_on_real_verdicts(humaneval, problem):
    good = f"def has_close_elements(numbers, threshold):\n{BODY}"
    bad = "def has_close_elements(numbers, threshold):\n    return True\n"
    executor = ScriptedExecutor(humaneval, {"plan A": [good], "plan B": [bad], None: [bad]})
    executor._reasoning = lambda user: user.split("Plan:\n", 1)[1] if "Plan:\n" in user else None
    reward = ExecutorGroundedReward(executor, humaneval, ConstantRM(1.0), mode="code_gated", repeats=3)
    batch = reward([problem], ["plan A" + REASONING_CLOSE, "plan B" + REASONING_CLOSE], group_size=2)
    a, b = batch.records
    assert a.e2e == 1.0 and a.exec == pytest.approx(1.0) and a.coeff == 1.0 and a.final == 1.0
    assert b.e2e == 0.0 and b.w == 0.0 and b.b == 0.0 and b.coeff == 0.0
    assert b.exec == pytest.approx(0.8 * humaneval.verify(problem, bad).pass_rate + 0.2)
    assert {"train/time/executor", "train/time/verify"} <= set(batch.metrics())
    strict = ExecutorGroundedReward(
        executor, humaneval, ConstantRM(1.0), mode="code_gated", repeats=3, code_pass_credit="all_tests"
    )
    a, b = strict([problem], ["plan A" + REASONING_CLOSE, "plan B" + REASONING_CLOSE], group_size=2).records
    assert (a.exec, a.final) == (pytest.approx(1.0), 1.0) and b.exec == pytest.approx(0.2)


def test_a_constant_program_earns_pass_credit_only_under_the_pass_rate_formula(sandbox, tmp_path):
    """Mbpp/20 (is_woodall): 104 of the 107 expected outputs are False, so `return False` passes 97% of
    the tests without reading its input. The authors' formula pays it 0.8 x 0.97 + 0.2; all_tests pays the
    run bonus only, as to any program that fails a test."""
    task = MBPPTask(sandbox=sandbox, cache_dir=str(tmp_path))
    records = [r for r in task._records("test") if r.id == "Mbpp/20"]
    task._records = lambda split: records
    (problem,) = task.problems("test")
    reply = "def is_woodall(*args):\n    return False\n```"
    verdict = task.verify(problem, reply)
    assert verdict.status == "failed_tests" and verdict.pass_rate > 0.95
    assert formulas.code_exec_score(verdict) == pytest.approx(0.8 * verdict.pass_rate + 0.2)
    assert formulas.code_exec_score(verdict, pass_credit="all_tests") == pytest.approx(0.2)
    honest = task.verify(problem, f"{records[0].reference}\n```")
    assert honest.correct and formulas.code_exec_score(honest, pass_credit="all_tests") == pytest.approx(1.0)


def test_a_sandbox_that_shows_the_host_filesystem_is_refused():
    """Without bubblewrap a program sees the checkout: the reference solutions and cached expected outputs."""
    weak = Sandbox(limits=Limits(timeout=10.0), workers=1, isolation="none")
    with pytest.raises(ConfigError, match="task.allow_host_filesystem=true"):
        MBPPTask(sandbox=weak)
    assert MBPPTask(sandbox=weak, allow_host_filesystem=True).sandbox.isolation.mode == "none"
    assert not weak.isolation.private_tmp


def test_references_the_sandbox_cannot_start_raise_and_are_not_cached(tmp_path, monkeypatch):
    """A sandbox outage while the expected outputs are recorded must not cache every test as dropped."""
    from planlift.sandbox import runner

    real = runner.Sandbox._execute
    monkeypatch.setattr(runner.Sandbox, "_execute", lambda self, command, *a: real(self, ["/bin/false"], *a))
    sandbox = Sandbox(limits=Limits(timeout=10.0), workers=1, isolation="none")
    task = HumanEvalTask(sandbox=sandbox, max_inputs=1, cache_dir=str(tmp_path), allow_host_filesystem=True)
    task._records = lambda split: load_humaneval()[:2]
    with pytest.raises(
        ConfigError, match=r"could not start 2 of 2 reference solutions.*task\.sandbox\.python"
    ):
        task.problems("test")
    assert not list((tmp_path / "code_expected").glob("*.pkl"))
    monkeypatch.setattr(runner.Sandbox, "_execute", real)  # the outage is over
    assert len(task.problems("test")) == 2


def test_code_gated_masks_and_counts_programs_the_sandbox_could_not_run(humaneval, problem, monkeypatch):
    good = f"def has_close_elements(numbers, threshold):\n{BODY}"
    executor = ScriptedExecutor(humaneval, {"plan A": [good], None: [good]})
    executor._reasoning = lambda user: user.split("Plan:\n", 1)[1] if "Plan:\n" in user else None
    reward = ExecutorGroundedReward(
        executor, humaneval, ConstantRM(1.0), mode="code_gated", repeats=3, max_masked_fraction=1.0
    )
    real = humaneval.sandbox.run_many
    outage = lambda jobs, limits=None: [  # noqa: E731
        dataclasses.replace(r, status="sandbox_error", passed=0) for r in real(jobs, limits)
    ]
    monkeypatch.setattr(humaneval.sandbox, "run_many", outage)
    batch = reward([problem], ["plan A" + REASONING_CLOSE] * 2, group_size=2)
    assert [r.mask_reason for r in batch.records] == ["sandbox_error"] * 2
    assert [r.e2e for r in batch.records] == [None, None]  # the e2e program itself never ran
    assert batch.metrics()["train/reward/masked/sandbox_error"] == 2.0
    assert not reward.baseline_cache.entries  # the baseline's programs never ran: retried next step
    # only the programs run to their first failing test (the repeats', the baseline's) never ran: the
    # sample is still masked, and keeps its e2e term, judged on the program run with every test
    partial = lambda jobs, limits=None: [  # noqa: E731
        dataclasses.replace(r, status="sandbox_error", passed=0) if job.stop_on_failure else r
        for job, r in zip(jobs, real(jobs, limits), strict=True)
    ]
    monkeypatch.setattr(humaneval.sandbox, "run_many", partial)
    batch = reward([problem], ["plan A" + REASONING_CLOSE] * 2, group_size=2)
    assert [(r.mask_reason, r.e2e, r.final) for r in batch.records] == [("sandbox_error", 1.0, None)] * 2
    assert batch.metrics()["train/reward/e2e"] == 1.0
    monkeypatch.setattr(humaneval.sandbox, "run_many", real)
    batch = reward([problem], ["plan A" + REASONING_CLOSE] * 2, group_size=2)
    assert [r.final for r in batch.records] == [pytest.approx(1.0)] * 2


def test_an_evaluation_baseline_runs_every_test_and_is_cached_apart(sandbox, tmp_path):
    """Training's baseline stops each program at its first failing test (only correct / not counts);
    offline evaluation reports the alone arm's pass rate next to the planner's, so it runs every test."""
    task = MBPPTask(sandbox=sandbox, cache_dir=str(tmp_path), sizes={"train": 3})
    problem = task.problems("train")[0]
    first, entry = problem.meta["tests"][0], task._record(problem).entry_point
    # right except on the first test's arguments: wrong on 1 of the problem's tests
    program = (
        f"{task.executor_target(problem).split('```')[0]}\n_right = {entry}\n"
        f"def {entry}(*args):\n"
        f"    return None if list(args) == {list(first.args)!r} else _right(*args)\n```"
    )
    executor = ScriptedExecutor(task, {None: [program]})
    cache = BaselineCache()
    early = judge_alone(executor, task, [problem], cache, 1, greedy=True)[0].verdicts[0]
    full = judge_alone(executor, task, [problem], cache, 1, greedy=True, full_pass_rate=None)[0].verdicts[0]
    total = len(problem.meta["tests"])
    assert (early.status, early.pass_rate) == ("failed_tests", 0.0)
    assert (full.status, full.pass_rate) == ("failed_tests", pytest.approx((total - 1) / total))
    assert len(cache.entries) == 2 and executor.calls == [(1, 1), (1, 1)]


def test_a_baseline_judged_under_other_sandbox_limits_is_not_reused(tmp_path):
    def tag(**limits):
        return task_tag(MBPPTask(sandbox=Sandbox(limits=Limits(**limits)), cache_dir=str(tmp_path)))

    assert tag(test_timeout=2.0) == tag(test_timeout=2.0)
    assert tag(test_timeout=2.0) != tag(test_timeout=0.01) != tag(test_timeout=0.01, memory_mb=64)


def test_the_fingerprint_holds_the_data(sandbox, tmp_path, monkeypatch):
    """Cached baselines are keyed by the task's fingerprint and a problem's id: other tests under the same
    ids (another EvalPlus release) must not reuse them; the same files elsewhere do."""
    from planlift.datasets.code import HUMANEVAL_PLUS_FILE
    from planlift.datasets.files import data_dir

    def tag(root):
        monkeypatch.setenv("PLANLIFT_DATA", str(root))
        return task_tag(HumanEvalTask(sandbox=sandbox, cache_dir=str(tmp_path / "cache")))

    vendored = tag(data_dir())
    same, other = tmp_path / "same", tmp_path / "other"
    for root, content in ((same, b""), (other, b"\n")):
        (root / "humaneval_plus").mkdir(parents=True)
        source = data_dir() / HUMANEVAL_PLUS_FILE
        (root / HUMANEVAL_PLUS_FILE).write_bytes(source.read_bytes() + content)
    assert tag(same) == vendored
    assert tag(other) != vendored
