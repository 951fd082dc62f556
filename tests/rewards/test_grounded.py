import logging

import pytest

from planlift.errors import ConfigError, TooManyMaskedError
from planlift.rewards import ExecutorGroundedReward
from planlift.rm import ConstantRM, ReasoningRM
from planlift.tasks import ProceduralTask

from .scripted import ScriptedExecutor


@pytest.fixture(scope="module")
def task():
    return ProceduralTask(sizes={"train": 20, "validation": 5, "test": 5})


@pytest.fixture
def problem(task):
    return task.problems("train")[0]


def wrong(answer: str) -> str:
    return str((int(answer) + 1) % 10)


def make(task, problem, mode="grounded", rm=None, **kwargs):
    """Two completions: GOOD makes the executor right 4/4, BAD right 1/4; alone it is right 1/3."""
    good, bad = "GOOD\n", "BAD\n"
    right, off = problem.answer, wrong(problem.answer)
    script = {good: [right], bad: [off, right, off, off], None: [right, off, off]}
    executor = ScriptedExecutor(task, script, fail=kwargs.pop("fail", ()))
    reward = ExecutorGroundedReward(executor, task, rm=rm or ConstantRM(0.8), mode=mode, **kwargs)
    return reward, executor, [good + "</reasoning>", bad + "</reasoning>"]


def test_grounded_exact_values(task, problem):
    reward, executor, completions = make(task, problem)
    batch = reward([problem], completions, group_size=2)
    good, bad = batch.records
    # GOOD: e2e 1, w = 3/3, b = 1/3 -> uplift 2/3 -> 0.5 + 0.5 * 0.8 * 2/3
    assert (good.e2e, good.w, good.b) == (1.0, 1.0, pytest.approx(1 / 3))
    assert good.final == pytest.approx(0.5 + 0.4 * (2 / 3))
    # BAD: samples [off, right, off, off] -> e2e 0, w = 1/3, uplift 0 -> 0
    assert (bad.e2e, bad.w, bad.uplift) == (0.0, pytest.approx(1 / 3), pytest.approx(0.0))
    assert bad.final == pytest.approx(0.0)
    # one call with reasoning (k + 1 = 4 samples each), one baseline call (3 samples, once per problem)
    assert executor.calls == [(2, 4), (1, 3)]


def test_pooled_e2e_uses_the_k_repeats(task, problem):
    reward, executor, completions = make(task, problem, pool_e2e=True)
    _, bad = reward([problem], completions, group_size=2).records
    # BAD now has samples [off, right, off]: e2e = 0, w = 1/3
    assert (bad.e2e, bad.w) == (0.0, pytest.approx(1 / 3))
    assert executor.calls[0] == (2, 3)


def test_baseline_is_computed_once_per_problem_and_cached(task):
    problems = task.problems("train")[:3]
    script = {None: ["0"], "R\n": ["1"]}
    executor = ScriptedExecutor(task, script)
    reward = ExecutorGroundedReward(executor, task, rm=ConstantRM(1.0), repeats=3, baseline_samples=5)
    group = 4
    completions = ["R\n</reasoning>"] * (len(problems) * group)
    batch = reward(problems, completions, group)
    first = executor.stats.generations
    assert first == len(problems) * (group * 4 + 5)  # G * (k + 1) + baseline
    assert batch.stats["executor_generations_per_problem"] == group * 4 + 5
    assert batch.stats["baseline_cache_size"] == len(problems)
    batch = reward(problems, completions, group)
    assert executor.stats.generations - first == len(problems) * group * 4  # baseline cached
    assert batch.stats["executor_generations_per_problem"] == group * 4
    assert len(executor.calls) == 3  # 2 calls, then 1
    assert reward.baseline_cache.hits == 3


def test_baseline_cache_off_recomputes_once_per_problem_per_step(task):
    problems = task.problems("train")[:2]
    executor = ScriptedExecutor(task, {None: ["0"], "R\n": ["1"]})
    reward = ExecutorGroundedReward(executor, task, rm=ConstantRM(1.0), baseline_cache=False)
    reward(problems, ["R\n"] * 8, 4)
    reward(problems, ["R\n"] * 8, 4)
    assert executor.calls == [(8, 4), (2, 3), (8, 4), (2, 3)]


def test_exec_only_needs_one_sample_and_no_baseline(task, problem):
    reward, executor, completions = make(task, problem, mode="exec_only")
    good, bad = reward([problem], completions, 2).records
    assert (good.final, bad.final) == (1.0, 0.0)
    assert good.uplift is None and good.rm is None
    assert executor.calls == [(2, 1)]


def test_uplift_only_and_rm_only(task, problem):
    reward, _, completions = make(task, problem, mode="uplift_only")
    good, _ = reward([problem], completions, 2).records
    assert good.final == pytest.approx(0.5 + 0.5 * (2 / 3))
    reward, executor, completions = make(task, problem, mode="rm_only")
    _, bad = reward([problem], completions, 2).records
    assert bad.final == pytest.approx(0.0 + 0.5 * 0.8)
    assert executor.calls == [(2, 1)]


def test_code_gated_on_a_math_task_is_a_config_error(task, problem):
    """The code formula's execution bonus is by program status: math verdicts would silently get none."""
    with pytest.raises(ConfigError, match=r"reward\.mode=code_gated .* task='procedural' is a math task"):
        make(task, problem, mode="code_gated")


def test_executor_failure_masks_and_counts(task, problem):
    reward, _, completions = make(task, problem, fail={"BAD\n"})
    batch = reward([problem], completions, 2)
    good, bad = batch.records
    assert not good.masked and bad.masked and bad.mask_reason == "executor_error" and bad.final is None
    assert batch.mask.tolist() == [True, False]
    metrics = batch.metrics()
    assert metrics["train/reward/masked"] == 1.0
    assert metrics["train/reward/masked/executor_error"] == 1.0


def test_baseline_failure_masks_the_group(task, problem):
    reward, _, completions = make(task, problem, fail={None}, max_masked_fraction=1.0)
    batch = reward([problem], completions, 2)
    assert [r.mask_reason for r in batch.records] == ["baseline_executor_error"] * 2
    assert not reward.baseline_cache.entries  # a failed baseline is retried next step, not cached


class FlakyRM(ReasoningRM):
    def score(self, items):
        return [None if "BAD" in item.reasoning else 0.5 for item in items]


def test_rm_failure_masks(task, problem):
    reward, _, completions = make(task, problem, rm=FlakyRM())
    good, bad = reward([problem], completions, 2).records
    assert good.rm == 0.5 and bad.mask_reason == "rm_error"


class NaNRM(ReasoningRM):
    def score(self, items):
        return [float("nan") if "BAD" in item.reasoning else 0.5 for item in items]


def test_a_non_finite_rm_score_masks_and_is_counted(task, problem):
    """clamp(NaN, 0, 1) is 1: a diverged learned RM's NaN would have been the top rubric score."""
    reward, _, completions = make(task, problem, rm=NaNRM(), max_masked_fraction=1.0)
    batch = reward([problem], completions, 2)
    good, bad = batch.records
    assert good.rm == 0.5 and bad.mask_reason == "rm_non_finite" and bad.final is None
    assert batch.metrics()["train/reward/masked/rm_non_finite"] == 1.0


def test_too_many_masked_stops_the_run(task, problem):
    reward, _, completions = make(task, problem, fail={"GOOD\n", "BAD\n"}, max_masked_fraction=0.5)
    with pytest.raises(
        TooManyMaskedError, match="max_masked_fraction.*first executor error.*scripted failure"
    ):
        reward([problem], completions, 2)


def test_leaks_masked_by_policy_do_not_stop_the_run(task, problem):
    """leakage_policy=mask: a step where every sample leaks is the policy's doing, not a failure of the
    executor, sandbox or RM, so it does not count toward max_masked_fraction (it raised before)."""
    leak = f"answer={problem.answer}\n"
    executor = ScriptedExecutor(task, {leak: [problem.answer], None: ["0"]})
    reward = ExecutorGroundedReward(executor, task, mode="exec_only", leakage_policy="mask")
    batch = reward([problem], [leak, leak], 2)
    assert [r.mask_reason for r in batch.records] == ["leakage", "leakage"]
    assert batch.metrics()["train/reward/masked/leakage"] == 2.0


@pytest.mark.parametrize("spelling", ["<|x|>", "</s>", "<|im_end|>", "[INST]", "<filename>"])
def test_a_control_token_spelling_cannot_hide_a_leak_from_the_detector(task, problem, spelling):
    """The executor's prompt drops control-token spellings (its tokenizer's specials and the common chat
    formats'), so "ans<|x|>wer=7" reaches it as "answer=7": the detector must read that text too, not the
    one whose answer statement the spelling breaks. `<filename>` is special to this executor's tokenizer
    only (as to SmolLM2's)."""
    from planlift.models import build_char_tokenizer

    hidden = f"ans{spelling}wer={problem.answer}\n"
    seen = f"answer={problem.answer}\n"
    executor = ScriptedExecutor(task, {seen: [problem.answer], None: ["0"]})
    executor.tokenizer = build_char_tokenizer()
    executor.tokenizer.add_special_tokens({"additional_special_tokens": ["<filename>"]})
    assert executor.visible_text(hidden) == seen
    reward = ExecutorGroundedReward(executor, task, mode="exec_only", leakage_policy="penalty")
    batch = reward([problem], [hidden, hidden], 2)
    assert (batch.records[0].e2e, batch.records[0].leakage, batch.records[0].final) == (1.0, 1.0, 0.5)
    assert batch.reasonings == [seen, seen]  # what the trace metrics read after the reward


@pytest.mark.parametrize(
    ("policy", "expected_final", "reason"),
    [("metric", 0.0, None), ("penalty", -0.5, None), ("mask", None, "leakage")],
)
def test_leakage_policies(task, problem, policy, expected_final, reason):
    leak = f"answer={problem.answer}\n"
    executor = ScriptedExecutor(task, {leak: [wrong(problem.answer)], None: ["0"]})
    reward = ExecutorGroundedReward(
        executor, task, mode="exec_only", leakage_policy=policy, max_masked_fraction=1.0
    )
    record = reward([problem], [leak, leak], 2).records[0]
    assert record.leakage == 1.0
    assert record.final == expected_final and record.mask_reason == reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repeats": -1}, "reward.repeats"),
        ({"mode": "magic"}, "reward.mode"),
        ({"baseline_samples": 0}, "reward.baseline_samples"),
        ({"uplift_bounds": (1, -1)}, "reward.uplift_bounds"),
        ({"e2e_weight": -0.5}, "reward.e2e_weight"),
        ({"code_pass_credit": "most"}, "reward.code_pass_credit"),
        ({"leakage_policy": "ignore"}, "reward.leakage_policy"),
        ({"max_masked_fraction": 0}, "reward.max_masked_fraction"),
        ({"pool_e2e": "maybe"}, "reward.pool_e2e must be true or false, got 'maybe'"),
        ({"baseline_cache": 1}, "reward.baseline_cache must be true or false"),
        (
            {"e2e_weight": 0, "reasoning_weight": 0},
            "reward.e2e_weight and reward.reasoning_weight are both 0",
        ),
        ({"uplift_bounds": (0, 0)}, r"reward.uplift_bounds=\[0, 0\] clamps the reasoning term"),
        ({"rm_bounds": (0.0, 0.0)}, "set reward.reasoning_weight=0"),
    ],
)
def test_invalid_config_is_a_clear_error(task, kwargs, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        ExecutorGroundedReward(ScriptedExecutor(task, {}), task, rm=ConstantRM(), **kwargs)


def test_grounded_without_rm_is_a_config_error(task):
    with pytest.raises(ConfigError, match="needs a reasoning RM"):
        ExecutorGroundedReward(ScriptedExecutor(task, {}), task, rm=None, mode="grounded")


def test_mismatches_fail_at_construction_naming_the_keys(task):
    from planlift.tasks import HumanEvalTask

    executor = ScriptedExecutor(task, {})
    with pytest.raises(
        ConfigError, match=r"code_tie_coefficients has 4 values.*0..reward.repeats \(3 values\)"
    ):
        ExecutorGroundedReward(executor, HumanEvalTask(), ConstantRM(1.0), mode="code_gated", repeats=2)
    with pytest.raises(ConfigError, match=r"reward.baseline_samples \(2\) must equal reward.repeats \(3\)"):
        ExecutorGroundedReward(
            executor, HumanEvalTask(), ConstantRM(1.0), mode="code_gated", baseline_samples=2
        )


def test_a_key_the_formula_never_reads_is_refused(task):
    """Each formula family ignores the other's keys: set away from its default, such a key would change
    nothing, silently."""
    from planlift.tasks import HumanEvalTask

    executor = ScriptedExecutor(task, {})
    with pytest.raises(
        ConfigError, match=r"reward\.uplift_bounds=\[0\.0, 1\.0\] is not read by reward\.mode=code_gated"
    ):
        ExecutorGroundedReward(
            executor, HumanEvalTask(), ConstantRM(1.0), mode="code_gated", uplift_bounds=(0.0, 1.0)
        )
    with pytest.raises(
        ConfigError, match=r"reward\.code_pass_credit=all_tests is not read by reward\.mode=grounded"
    ):
        ExecutorGroundedReward(executor, task, ConstantRM(1.0), code_pass_credit="all_tests")
    ExecutorGroundedReward(
        executor, task, ConstantRM(1.0), code_tie_coefficients=[0, 0.5, 0.6666666666666666, 1]
    )


@pytest.mark.parametrize("returned", [2, 1, 0, 5])
def test_an_executor_that_returns_the_wrong_number_of_texts_masks_and_counts(task, problem, returned, caplog):
    """k + 1 = 4 samples asked per prompt: fewer (or more) without an error is a failed prompt."""
    reward, executor, completions = make(task, problem, max_masked_fraction=1.0)
    scripted = executor._generate
    executor._generate = lambda prompts, n, greedy: [
        type(r)(texts=(r.texts * 2)[:returned]) if n == 4 else r for r in scripted(prompts, n, greedy)
    ]
    with caplog.at_level(logging.WARNING, logger="planlift.executors.base"):
        batch = reward([problem], completions, 2)
    assert [r.mask_reason for r in batch.records] == ["executor_error"] * 2
    assert batch.metrics()["train/reward/masked/executor_error"] == 2.0
    assert executor.stats.failed_prompts == 2
    assert f"returned {returned} texts for a prompt, asked for 4" in caplog.text
