import math
import random
from decimal import ROUND_HALF_UP, Decimal, localcontext

import pytest

from planlift.errors import ConfigError
from planlift.tasks import ProceduralTask
from planlift.tasks.procedural import format_number, numbers_match
from planlift.tasks.procedural_trace import analyze_trace


def small(**kwargs):
    kwargs.setdefault("sizes", {"train": 200, "validation": 50, "test": 50})
    return ProceduralTask(**kwargs)


def test_generation_is_deterministic_by_seed():
    a, b, c = small(seed=3), small(seed=3), small(seed=4)
    assert [p.text for p in a.problems("train")] == [p.text for p in b.problems("train")]
    assert [p.text for p in a.problems("train")] != [p.text for p in c.problems("train")]


def test_splits_are_disjoint_and_sized():
    task = small()
    texts = {split: {p.text for p in task.problems(split)} for split in ("train", "validation", "test")}
    assert [len(texts[s]) for s in ("train", "validation", "test")] == [200, 50, 50]
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]


@pytest.mark.parametrize("lookback", [1, 2, 5])
def test_steps_respect_lookback_and_chain(lookback):
    task = small(length=12, lookback=lookback)
    for problem in task.problems("train")[:50]:
        program = problem.meta["program"]
        assert program.length == 12
        for step in program.steps:
            assert step.index - 1 in (step.a, step.b)  # always uses the previous state
            assert min(step.a, step.b) >= max(1, step.index - lookback)
            if lookback >= 2:
                assert step.a != step.b


def test_states_follow_the_program_modular():
    task = small(ops="+-*", modulus=7, length=8)
    for problem in task.problems("train")[:30]:
        states = problem.meta["states"]
        for step in problem.meta["program"].steps:
            a, b = states[step.a - 1], states[step.b - 1]
            expected = {"+": a + b, "-": a - b, "*": a * b}[step.op] % 7
            assert states[step.index - 1] == expected
        assert problem.answer == format_number(states[-1])


def test_float_benchmark_variant_rounds_and_avoids_division_by_zero():
    task = small(ops="+-*/", modulus=None, number_type="float", value_range=(0, 1), length=10)
    for problem in task.problems("train")[:50]:
        states = problem.meta["states"]
        assert all(math.isfinite(v) and round(v, 3) == v for v in states[2:])
        for step in problem.meta["program"].steps:
            if step.op == "/":
                assert states[step.b - 1] != 0
        # the reference answer is S_N rounded to 3 decimals
        assert float(problem.answer) == pytest.approx(round(states[-1], 3))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"length": 2}, "task.length"),
        ({"lookback": 0}, "task.lookback"),
        ({"ops": "+^"}, "task.ops"),
        ({"ops": "+/", "modulus": 10}, "task.ops"),
        ({"number_type": "complex"}, "task.number_type"),
        ({"sizes": {"train": -1}}, "task.sizes.train"),
        ({"sizes": {"dev": 3}}, "task.sizes"),
        ({"executor_steps": 4, "length": 6}, "task.executor_steps"),
        ({"executor_steps": -1}, "task.executor_steps"),
        ({"sizes": {"train": 10, "validation": 0, "test": 2}}, "task.sizes.validation must be >= 1"),
        ({"sizes": {"train": 0, "validation": 2, "test": 2}}, "task.sizes.train must be >= 1"),
    ],
)
def test_invalid_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        ProceduralTask(**kwargs)


def test_prompts_and_gold_trace_render_compactly():
    task = small()
    problem = task.problems("train")[0]
    gold = task.gold_reasoning(problem)
    assert len(gold.splitlines()) == task.length - 2
    assert task.planner_prompt(problem).prefill == "<reasoning>\n"
    executor_prompt = task.executor_prompt(problem, gold)
    assert f"<reasoning>\n{gold}</reasoning>\n" in executor_prompt.user
    assert "<reasoning>" not in task.executor_prompt(problem, None).user
    assert task.extract_reasoning(gold + "</reasoning>junk") == gold


def test_states_are_exact_decimals_rounded_half_up():
    """6.885*6.5 = 44.7525 exactly: the state is 44.753 (Python's round gave 44.752, the float being just
    below the tie), and a trace or answer that rounds half up, or writes the exact value, matches it."""
    task = small(modulus=None, ops="+-*/")
    assert task._apply(6.885, "*", 6.5) == 44.753
    assert task._apply(1.0, "/", 8.0) == 0.125 and task._apply(2.0, "/", 3.0) == 0.667
    assert task._apply(-6.885, "*", 6.5) == -44.753  # half away from zero
    assert numbers_match(44.7525, 44.753) and not numbers_match(44.752, 44.753)
    assert format_number(44.7525) == "44.753" and format_number(2.0) == "2"


def test_every_benchmark_step_is_the_half_up_rounding_of_its_shown_operands():
    """On 500 problems of the benchmark's configuration, each state equals its step computed exactly from
    the operands as the trace shows them, then rounded half up (99 of 26,000 steps of 2,000 problems
    disagreed when states were binary floats rounded with round())."""
    task = small(
        length=15,
        lookback=3,
        value_range=(1, 10),
        ops="+-*/",
        modulus=None,
        sizes={"train": 500, "validation": 1, "test": 0},
    )
    with localcontext() as context:
        context.prec = 1000  # exact for the sizes these states reach
        _check_steps(task)


def _check_steps(task):
    for problem in task.problems("train"):
        states = problem.meta["states"]
        for step in problem.meta["program"].steps:
            a, b = (Decimal(format_number(states[i - 1])) for i in (step.a, step.b))
            exact = {
                "+": Decimal.__add__,
                "-": Decimal.__sub__,
                "*": Decimal.__mul__,
                "/": Decimal.__truediv__,
            }[step.op](a, b)
            expected = float(exact.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))
            assert numbers_match(expected, states[step.index - 1]), (problem.text, step)


def test_verifier_exact_match_after_rounding():
    task = small(modulus=None, number_type="float", ops="+-*/", value_range=(0, 1))
    problem = task.problems("train")[0]
    answer = float(problem.answer)
    assert task.verify(problem, f"{answer}").correct
    assert task.verify(problem, f" {answer:.3f}\nmore text 42").correct
    assert not task.verify(problem, f"{answer + 0.001:.3f}").correct
    assert task.verify(problem, "no number").status == "no_answer"


# ---- trace analyzer on crafted traces ---------------------------------------------------------------


@pytest.fixture
def program_and_states():
    task = small(length=6)
    problem = task.problems("train")[0]
    return task, problem, problem.meta["program"], problem.meta["states"]


def analyze(reasoning, problem, **kwargs):
    return analyze_trace(reasoning, problem.meta["program"], problem.meta["states"], **kwargs)


def test_gold_trace_is_exact(program_and_states):
    task, problem, _, _ = program_and_states
    a = analyze(task.gold_reasoning(problem), problem, final_answer_correct=True, final_answer_parsed=True)
    assert (a.execution, a.step_accuracy, a.hallucinated_steps) == ("exact", 1.0, 0)
    assert not (a.premature_answer or a.leaked_answer or a.missing_answer or a.right_for_wrong_reasons)
    assert a.final_state_correct and a.first_error_state is None


def test_under_execution_and_leaked_answer(program_and_states):
    task, problem, _, states = program_and_states
    lines = task.gold_reasoning(problem).splitlines()
    trace = "\n".join(lines[:2]) + f"\nanswer={format_number(states[-1])}\n"
    a = analyze(trace, problem, final_answer_correct=True, final_answer_parsed=True)
    assert a.execution == "under"
    assert a.executed_steps == 2
    assert a.step_accuracy == 2 / 4
    assert a.premature_answer and a.leaked_answer
    assert a.right_for_wrong_reasons  # correct final answer, states S5 and S6 never established


def test_over_execution_and_hallucinated_steps(program_and_states):
    task, problem, _, _ = program_and_states
    trace = task.gold_reasoning(problem) + "S7=1+1=2\nS9=2+2=4\n"
    a = analyze(trace, problem)
    assert a.execution == "over" and a.hallucinated_steps == 2 and a.step_accuracy == 1.0


def test_wrong_intermediate_state_right_final_answer(program_and_states):
    task, problem, _, states = program_and_states
    lines = task.gold_reasoning(problem).splitlines()
    wrong = (int(states[2]) + 1) % 10
    lines[0] = lines[0].rsplit("=", 1)[0] + f"={wrong}"
    a = analyze("\n".join(lines) + "\n", problem, final_answer_correct=True, final_answer_parsed=True)
    assert a.execution == "exact" and a.step_accuracy == 3 / 4 and a.first_error_state == 3
    assert a.right_for_wrong_reasons


def test_answer_after_all_steps_is_not_premature(program_and_states):
    task, problem, _, states = program_and_states
    a = analyze(task.gold_reasoning(problem) + f"answer: {format_number(states[-1])}\n", problem)
    assert not a.premature_answer and not a.leaked_answer


def test_missing_answer_from_executor(program_and_states):
    task, problem, _, _ = program_and_states
    metrics = task.trace_metrics(problem, task.gold_reasoning(problem), "???")
    assert metrics["trace/missing_answer"] == 1.0
    assert metrics["trace/step_acc"] == 1.0


def test_trace_metrics_keys_are_stable(program_and_states):
    task, problem, _, _ = program_and_states
    assert sorted(task.trace_metrics(problem, "garbage", "3")) == sorted(
        [
            "trace/step_acc",
            "trace/steps_ratio",
            "trace/exact_exec",
            "trace/under_exec",
            "trace/over_exec",
            "trace/hallucinated_steps",
            "trace/premature_answer",
            "trace/leaked_answer",
            "trace/missing_answer",
            "trace/right_wrong_reasons",
            "trace/kind/faithful",
            "trace/kind/wrong_state",
            "trace/kind/under",
            "trace/kind/leaked",
            "trace/kind/other",
        ]
    )


def test_leakage_detection(program_and_states):
    task, problem, _, states = program_and_states
    assert not task.detect_leakage(problem, task.gold_reasoning(problem))
    assert task.detect_leakage(problem, f"answer={format_number(states[-1])}\n")


# ---- the executor's share (executor_steps) and reasoning kinds ----------------------------------------


@pytest.fixture
def shared_task():
    task = small(length=6, executor_steps=1)
    return task, task.problems("train")[0]


def test_executor_share_gold_trace_stops_before_the_last_state(shared_task):
    task, problem = shared_task
    gold = task.gold_reasoning(problem)
    assert [line.split("=")[0] for line in gold.splitlines()] == ["S3", "S4", "S5"]
    prompt = task.executor_prompt(problem, gold)
    assert prompt.prefill == "S6="
    target = task.executor_target(problem)
    last = problem.meta["program"].steps[-1]
    states = problem.meta["states"]
    a, b = format_number(states[last.a - 1]), format_number(states[last.b - 1])
    assert target == f"{a}{last.op}{b}={problem.answer}"
    assert task.verify(problem, target).correct
    wrong = (int(problem.answer) + 1) % 10
    assert task.verify(problem, f"{a}{last.op}{b}={wrong}").status == "wrong"
    assert task.verify(problem, problem.answer).status == "no_answer"  # a bare number is not an S6 line
    analysis = task.analyze(problem, gold, final_answer_correct=True, final_answer_parsed=True)
    assert (analysis.execution, analysis.step_accuracy, analysis.kind) == ("exact", 1.0, "faithful")


def test_executor_share_stating_its_states_or_an_answer_is_leakage(shared_task):
    task, problem = shared_task
    gold = task.gold_reasoning(problem)
    full = small(length=6).gold_reasoning(problem)  # the planner doing the executor's step too
    assert not task.detect_leakage(problem, gold)
    assert task.detect_leakage(problem, full)
    assert task.analyze(problem, full).executor_states_stated == 1
    assert task.detect_leakage(problem, gold + f"answer={problem.answer}\n")


@pytest.mark.parametrize(
    ("kind", "trace_kind"),
    [("faithful", "faithful"), ("early_stop", "under"), ("wrong_state", "wrong_state"), ("leaked", "leaked")],
)
def test_reasoning_kinds_are_the_behaviours_they_name(kind, trace_kind):
    task = small(length=6, executor_steps=1)
    rng = random.Random(0)
    for problem in task.problems("train")[:30]:
        reasoning = task.reasoning(problem, kind, rng)
        analysis = task.analyze(problem, reasoning)
        assert analysis.kind == trace_kind
        if kind == "wrong_state":  # one wrong state the executor never reads: the answer stays right
            assert analysis.step_accuracy == pytest.approx(2 / 3) and analysis.final_state_correct
        if kind == "leaked":
            assert reasoning == f"answer={problem.answer}\n"


def test_reasoning_kind_errors_name_the_problem():
    task = small(length=4, executor_steps=1)  # one planned step: no early stop, no unread state
    problem = task.problems("train")[0]
    with pytest.raises(ConfigError, match="early_stop"):
        task.reasoning(problem, "early_stop", random.Random(0))
    with pytest.raises(ConfigError, match="wrong_state"):
        task.reasoning(problem, "wrong_state", random.Random(0))
    with pytest.raises(ConfigError, match="unknown reasoning kind"):
        task.reasoning(problem, "sloppy", random.Random(0))


@pytest.mark.parametrize(
    "extra",
    [
        "S6={v}",
        "S6 is {v}",
        "S6 = S5 + S4 = {v}",
        "so S6: {v} for the executor",
        "so the answer is {v}",
        "S6={v}.",
        "S6={v}+0",
        "s6={v}",
        "S 6={v}",
        "S_6={v}",
        "S6->{v}",
        "S6 equals {v}",
        "S6 = S4-S5 = {v}.",
        "result={v}",
        "final={v}",
        "answer {v}",
        # the state's name in characters that read as "S6", or in other notations
        "S\u200b6={v}",
        "\uff336={v}",
        "S\u2086={v}",
        "S\u2076={v}",
        "S-6={v}",
        "S(6)={v}",
        "S[6] = {v}",
        "S_{{6}} = {v}",
        "state 6 = {v}",
        "State 6 is {v}",
        "\uff41\uff4e\uff53\uff57\uff45\uff52\uff1d{v}",  # fullwidth "answer="
    ],
)
def test_executor_share_stated_in_prose_is_leakage(shared_task, extra):
    """The executor's state or the answer in any wording, not only in the step-line format."""
    task, problem = shared_task
    reasoning = task.gold_reasoning(problem) + extra.format(v=problem.answer) + "\n"
    assert task.detect_leakage(problem, reasoning)


@pytest.mark.parametrize(
    "extra",
    [
        "S6 = S5 + S4 next",
        "S6 = {a} + {b}",
        "then the executor writes S6",
        "S(6) = S(5) + S(4) next",
        "state 6 comes from states 5 and 4",
        "the executor computes S\u2086 from S\u2085 and S\u2084",
    ],
)
def test_naming_the_executor_state_without_its_value_is_not_leakage(shared_task, extra):
    task, problem = shared_task
    a, b = ((int(problem.answer) + k) % 10 for k in (1, 2))  # operands, neither of them S6's value
    assert not task.detect_leakage(problem, task.gold_reasoning(problem) + extra.format(a=a, b=b) + "\n")


def test_the_executors_step_written_with_state_names_is_not_leakage():
    """ "next: S6=S5-S4" holds no value: the digits of the state names are not numbers (94 of these 300
    problems were flagged when they were: those whose S6 is 4, 5 or 6)."""
    task = small(length=6, executor_steps=1, sizes={"train": 300, "validation": 1, "test": 0})
    for problem in task.problems("train"):
        step = problem.meta["program"].steps[-1]
        named = f"next: S{step.index}=S{step.a}{step.op}S{step.b}\n"
        assert not task.detect_leakage(problem, task.gold_reasoning(problem) + named), problem.text
        stated = f"next: S{step.index}=S{step.a}{step.op}S{step.b} -> {problem.answer}\n"
        assert task.detect_leakage(problem, task.gold_reasoning(problem) + stated), problem.text


def test_answer_sentence_after_the_full_trace_is_not_premature(program_and_states):
    task, problem, _, states = program_and_states
    reasoning = task.gold_reasoning(problem) + f"So the answer is {format_number(states[-1])}.\n"
    analysis = task.analyze(problem, reasoning)
    assert not (analysis.leaked_answer or analysis.premature_answer) and analysis.unparsed_lines == 0
    early = f"The answer is {format_number(states[-1])}.\n" + task.gold_reasoning(problem)
    assert task.analyze(problem, early).premature_answer
