"""GSM8K task: deterministic splits, prompts, math-verify equivalence and the leakage detector (real data)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from planlift.errors import ConfigError, DataError
from planlift.generation import render_prompt
from planlift.models import build_char_tokenizer
from planlift.rewards import ExecutorGroundedReward
from planlift.rm import OracleRM
from planlift.rm.base import RMItem
from planlift.tasks import GSM8KTask, answers
from planlift.tasks.base import REASONING_CLOSE
from tests.rewards.scripted import ScriptedExecutor


@pytest.fixture(scope="module")
def task():
    return GSM8KTask()


def test_splits_are_carved_deterministically(task):
    sizes = {split: len(task.problems(split)) for split in ("train", "validation", "test")}
    assert sizes == {"train": 7273, "validation": 200, "test": 1319}
    train = {p.id for p in task.problems("train")}
    validation = {p.id for p in task.problems("validation")}
    assert not train & validation
    assert [p.id for p in GSM8KTask().problems("validation")] == [p.id for p in task.problems("validation")]
    assert all(p.id.startswith("gsm8k-test-") for p in task.problems("test"))


def test_gold_reasoning_is_the_worked_solution(task):
    problem = task.problems("test")[0]
    assert problem.answer == "18"
    gold = task.gold_reasoning(problem)
    assert "16 - 3 - 4 = 9" in gold and "<<" not in gold and "####" not in gold
    assert task.planner_target(problem) == gold + REASONING_CLOSE


def test_prompts(task):
    problem = task.problems("test")[0]
    planner = task.planner_prompt(problem)
    assert (
        problem.text in planner.user
        and planner.prefill == "<reasoning>\n"
        and planner.stop == (REASONING_CLOSE,)
    )
    with_reasoning = task.executor_prompt(problem, "Step one.\n")
    alone = task.executor_prompt(problem, None)
    assert "Step one." in with_reasoning.user and "Reasoning" not in alone.user
    assert with_reasoning.prefill == "The answer is " and with_reasoning.stop == ("\n",)
    assert GSM8KTask(answer_prefix="").executor_prompt(problem, None).stop == ()
    # a plain tokenizer (no chat template) gets user text + prefill
    rendered = render_prompt(build_char_tokenizer(), alone, None)
    assert rendered.endswith(alone.user + "The answer is ")


@pytest.mark.parametrize(
    ("output", "correct", "status"),
    [
        ("18.", True, "correct"),
        ("$18", True, "correct"),
        ("18 dollars a day.", True, "correct"),
        ("18.00", True, "correct"),
        ("9 * 2 = 18", True, "correct"),
        ("\\boxed{18}", True, "correct"),
        ("64 cents.", False, "wrong"),
        ("18%", True, "correct"),  # a percentage is its number, as GSM8K writes it
        ("\\boxed{18\\%}", True, "correct"),
        ("1800%", False, "wrong"),  # not a hedge between 1800 and 18
        ("0.18", False, "wrong"),
        ("9 + 9", False, "wrong"),  # an expression leaves the arithmetic undone: not an answer
        ("$9 9$", False, "wrong"),  # LaTeX reads numbers side by side as their sum: 9 + 9 undone
        ("\\boxed{9 9}", False, "wrong"),
        ("$10 4 4$", False, "wrong"),
        ("$1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1$", False, "wrong"),  # counting in unary
        ("\\frac{36}{2}", False, "wrong"),
        ("36/2", False, "wrong"),
        ("eighteen", False, "no_answer"),
        ("", False, "no_answer"),
        ("**18**.", True, "correct"),  # markdown around the number (math-verify showed "18**")
        ("*$18*", True, "correct"),
        ("`18`", True, "correct"),
        ("__18__ dollars", True, "correct"),
        ("2*18*3", False, "wrong"),  # a product, not emphasis
        ("(18)", True, "correct"),  # a number alone in brackets (math-verify found no answer)
        ("So she makes [$18].", True, "correct"),
        ("**(18)**", True, "correct"),
        ("f(18)", False, "no_answer"),  # a call, not an answer
        ("(18)x", False, "no_answer"),
        ("16 or 18", False, "wrong"),  # a hedge whose last choice is right (math-verify takes it)
        ("16 dollars, or 18 dollars", False, "wrong"),
        ("$16 to $18", False, "wrong"),
        ("16\u201318", False, "wrong"),
        ("16 \u2014 18", False, "wrong"),
        ("between 16 and 18 dollars", False, "wrong"),
        ("18 to the nearest dollar", True, "correct"),  # one number
        ("18 or so", True, "correct"),
        ("The answer is 18 (2 boxes).", True, "correct"),  # an aside (math-verify read "18 (2")
        ("The answer is 18 (2 boxes of 9).", True, "correct"),  # (math-verify took 9)
        ("$18 (2 \u00d7 9)", True, "correct"),
        ("18 (= 9 * 2)", True, "correct"),
        ("18 (not 16)", True, "correct"),
        ("2 (9 + 9)", False, "wrong"),  # may be a product: no aside
        ("16 (or 18)", False, "wrong"),  # an alternative in an aside is a hedge, whichever choice is read
        ("18 (or 16)", False, "wrong"),
        ("She makes 16 (maybe 18) dollars.", False, "wrong"),
        ("18 [possibly 16]", False, "wrong"),
        ("18 (actually 16)", False, "wrong"),  # a correction in an aside (the aside was dropped: 18)
        ("18 (16 if she sells all)", False, "wrong"),
        ("16, 18", False, "wrong"),  # a list whose last number is right (math-verify takes it)
        ("16 and 18", False, "wrong"),
        ("[16, 18]", False, "wrong"),
        ("16 (18)", False, "wrong"),
        ("16 | 18", False, "wrong"),
        ("16 vs 18", False, "wrong"),
        ("16 or maybe 18", False, "wrong"),
        ("16 big red apples, or 18", False, "wrong"),
        ("16 \u2212 18", False, "wrong"),  # a minus sign as a dash
        ("**16** or **18**", False, "wrong"),  # the hedge is read with markdown removed
        ("16 or\r18", False, "wrong"),  # one line: the reply is cut at "\n" only
        ("18, since 9 * 2 = 18", True, "correct"),  # words follow: no list
        ("18 eggs, 9 * 2", False, "wrong"),  # math-verify takes the last expression
        ('"18"', True, "correct"),  # quotes around the number (math-verify found no answer)
        ("\u201c18\u201d", True, "correct"),
        ("\\$18", True, "correct"),  # LaTeX's escaped dollar (no answer found)
        ('"16" or "18"', False, "wrong"),
    ],
)
def test_verify_uses_math_verify(task, output, correct, status):
    verdict = task.verify(task.problems("test")[0], output)
    assert (verdict.correct, verdict.status, verdict.pass_rate) == (correct, status, float(correct))


def test_a_hedge_is_read_on_the_line_of_the_last_number(task):
    problem = task.problems("test")[0]
    working = "She earns 2 to 3 dollars an hour, between 16 and 20 a day.\nSo she makes 18 dollars."
    assert task.verify(problem, working).correct  # ranges in the working are no hedge of the answer
    assert not task.verify(problem, "She makes 9 * 2 = 18.\nSo 16 or 18 dollars.").correct


@pytest.mark.parametrize(
    "text",
    ["17" + " " * 20000 + "x", "17 " + "a " * 10000, "1%" + " " * 20000 + "%", "$ " * 10000 + "17",
     "17" + " " * 20000 + "or" + " " * 20000 + "x", "1,000" * 5000, "`" + "1" * 20000, "**" + "1," * 10000,
     "(" + "1," * 10000, "[(" * 10000 + "17", "1 (" * 10000 + "x", "1 [a " * 10000 + "2", "1 (a or" * 5000],
    ids=["spaces", "words", "percent_spaces", "dollars", "or_spaces", "groups", "open_code", "open_bold",
         "open_bracket", "nested_brackets", "open_asides", "open_square_asides", "open_hedge_asides"],
)  # fmt: skip
def test_degenerate_replies_are_judged(task, text):
    """Replies an executor can be led to write: the hedge and markdown readings give up a failed match
    without retrying every split (one of these took 31 s with a backtracking pattern)."""
    assert not task.verify(task.problems("test")[0], text).correct


def test_signs_and_groups_around_the_dollar_and_in_unicode_spaces(task):
    problem = task.problems("test")[0]
    negative = dataclasses.replace(problem, answer="-5")
    assert task.verify(negative, "-$5").correct  # no answer found before
    grouped = dataclasses.replace(problem, answer="1234")
    for space in ("\u00a0", "\u202f", " "):  # math-verify read 234 across the no-break spaces
        assert task.verify(grouped, f"1{space}234").correct


def test_thousands_and_decimals(task):
    by_answer = {p.answer: p for p in task.problems("test")}
    big = next(p for a, p in by_answer.items() if a.isdigit() and int(a) >= 1000)
    with_commas = f"{int(big.answer):,}"
    assert "," in with_commas and task.verify(big, with_commas + ".").correct
    with_spaces = with_commas.replace(",", " ")  # thousands grouped by spaces, as GSM8K's solutions do
    assert task.verify(big, with_spaces + ".").correct
    split = f"{big.answer[:-1]} {big.answer[-1]}"  # a space that groups no thousands: no number
    assert not task.verify(big, split).correct and not task.verify(big, f"${split}$").correct
    assert not task.verify(big, str(int(big.answer) + 1)).correct


def test_leakage_value_and_statement(task):
    problem = task.problems("test")[0]  # answer 18; 16, 3, 4 and 2 are given in the problem
    assert task.detect_leakage(problem, task.gold_reasoning(problem))  # solutions end with the answer
    assert task.detect_leakage(problem, "She sells 9 eggs for 2 dollars each, 18 dollars.\n")
    assert not task.detect_leakage(problem, "Subtract the eggs she uses from 16, then multiply by 2.\n")
    assert not task.detect_leakage(problem, "The answer is 64.\n")  # a wrong value is not the answer
    statement = GSM8KTask(leakage="statement")
    assert statement.detect_leakage(problem, "The answer is 64.\n")
    assert not statement.detect_leakage(problem, "9 * 2 = 18\n")


@pytest.mark.parametrize(
    "reasoning",
    [
        "Nine eggs at two dollars each make eighteen dollars.\n",
        "She makes 18dollars a day.\n",
        "The total is x18 once you double x9.\n",
        "That is 1.8e1 dollars.\n",
        "So the 18th dollar is the last.\n",
        "The eighteenth dollar is the last.\n",
        "She makes 1\u200b8 dollars.\n",
        "Her sales come to total-18 dollars (a hyphen, not a minus).\n",
        "She makes 1**8** dollars.\n",
        "She makes 1`8` dollars.\n",
        "She makes 1_8 dollars.\n",
        "She makes XVIII dollars.\n",
    ],
)
def test_answer_value_counts_in_words_glued_or_scientific(task, reasoning):
    """Ways to write 18 that a policy penalised for leaking would find next."""
    problem = task.problems("test")[0]  # answer 18
    assert task.detect_leakage(problem, reasoning)


@pytest.fixture(scope="module")
def seventy_two(task):
    problem = next(p for p in task.problems("train") if p.id == "gsm8k-train-1")  # 48 in April, half in May
    assert problem.answer == "72" and 72.0 not in answers.numbers_in(problem.text)
    return problem


@pytest.mark.parametrize(
    "spelling",
    [
        "lxxii",  # lower-case Roman
        "seventytwo",  # number words glued
        "SeventyTwo",
        "seventy\u00adtwo",  # a soft hyphen (format character)
        "seventy\u2011two",  # a non-breaking hyphen
        "seventy\u2013two",  # an en dash
        "7*2*",  # one-star emphasis closing the number
        "*7*2",  # one-star emphasis opening it
        "7<b></b>2",  # HTML tags
        '7<span class="x">2</span>',
        "7<!-- -->2",  # an HTML comment
        "7<!-- the sum -->2",
        "$7\\!2$",  # LaTeX negative thin space
        "$7{}2$",  # LaTeX empty group
        "0x48",  # Python integer literals in other bases
        "0b1001000",
        "0o110",
        "\u2466\u2461",  # circled digits
        "\u2077\u00b2",  # superscript digits standing alone
        "\uff17\uff12",  # fullwidth digits
        "\U0001d7d5\U0001d7d0",  # mathematical bold digits
        "7\u03032",  # a combining mark on a digit
        "7\ufe0f\u20e32",  # a keycap 7
    ],
)
def test_answer_value_in_lookalike_characters_or_markup(task, seventy_two, spelling):
    """Spellings of 72 that render (or read, to a language model) as 72: read through
    `planlift.tasks.visible` and the markup readings."""
    assert task.detect_leakage(seventy_two, f"She sold {spelling} clips in all.\n")


@pytest.mark.parametrize(
    ("glued", "value"),
    [("sixthousand", 6000), ("tenthousand", 10000), ("eighthundred", 800), ("seventhirty", 30)],
)
def test_glued_number_words_split_where_an_ordinal_is_a_prefix(glued, value):
    """ "sixth" and "tenth" are number words too: the split takes the fewest words, not the longest first."""
    from planlift.tasks.answers import numbers_in

    assert value in numbers_in(f"They paid {glued} dollars.")


@pytest.mark.parametrize(
    "text",
    [
        "He has 3" + "_" * 60 + " apples",  # a run of separators that no digit closes
        "He has 3<span" + " data-a='v'" * 40 + ">apples</span>",  # a tag with many attributes
        "He has 3<!--" * 400,
        "S" + " " * 5000 + "6",
        "0x" + "f" * 400,  # beyond a float's range: no crash
    ],
    ids=["underscores", "attributes", "comments", "spaces", "huge_hex"],
)
def test_degenerate_text_is_read_without_error(task, seventy_two, text):
    """Text a policy can produce in few tokens: each reading ends (its regexes give up a failed match
    without retrying every split) and reads no 72."""
    assert not task.detect_leakage(seventy_two, text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("The volume is 2*2*x cubic feet.", 22),  # a product, not emphasis
        ("The slab is 100*100*.5=5000 cubic feet.", 100100.5),
        ("Multiply 3*4*5 first.", 345),
        ("Compute 10\u00b2 first.", 102),  # an exponent
        ("The area is 5 m\u00b2.", 2),
        ("The cut is 9 cm long.", 900),  # lower-case letters that are units and words
        ("Pour 50 ml.", 1050),
        ("Mix the flour.", 1009),
        ("Use div for the quotient.", 504),
        ("iii. Subtract the discount.", 3),  # list markers
        ("(iv) Add the tax.", 4),
        ("Half is \u00bd.", 2),  # a vulgar fraction is not two numbers
        ("If 3<x and y>4 then stop.", 34),  # no HTML tag
    ],
)
def test_added_readings_leave_products_exponents_words_and_markers_alone(text, value):
    assert not any(answers._close(v, value) for v in answers.numbers_in(text))


def test_space_grouped_thousands_are_read_as_one_number(task):
    """GSM8K's own solutions group thousands by spaces; the plain reading missed them (1 of the test split)."""
    problem = next(p for p in task.problems("test") if p.id == "gsm8k-test-267")  # answer 118000
    line = next(line for line in task.gold_reasoning(problem).splitlines() if "$118 000" in line)
    assert 118000.0 not in answers.literal_numbers(line)
    assert task.detect_leakage(problem, line)
    assert task.detect_leakage(problem, "Net proceeds: 118\u202f000 dollars.\n")  # a narrow no-break space
    # the other readings are added to the plain one: each number of "3 100-dollar bills" still counts
    assert {3.0, 100.0, 3100.0} <= set(answers.numbers_in("3 100-dollar bills"))


def test_added_readings_flag_no_other_gold_line(task):
    """On the test split's gold solutions, a line that only the added readings flag is a space-grouped
    answer, and no problem text comes to state its answer through them."""
    added = []
    for problem in task.problems("test"):
        target = float(problem.answer)
        plain = any(answers._close(v, target) for v in answers.literal_numbers(problem.text))
        assert plain == any(answers._close(v, target) for v in answers.numbers_in(problem.text)), problem.id
        for line in task.gold_reasoning(problem).splitlines():
            values = answers.numbers_in(line)
            if any(answers._close(v, target) for v in values) and not any(
                answers._close(v, target) for v in answers.literal_numbers(line)
            ):
                added.append((problem.id, line))
    assert [problem_id for problem_id, _ in added] == ["gsm8k-test-267"]
    assert all(re.search(r"\d \d{3}\b", line) for _, line in added)


def test_problem_quantities_in_words_are_not_the_answer(task):
    problem = task.problems("test")[0]  # answer 18; 16, 3, 4 and 2 are given in the problem
    assert not task.detect_leakage(problem, "Take sixteen, remove three and four, then double.\n")
    # a problem that gives its answer in words only: a value match needs an explicit statement
    worded = next(
        p
        for p in task.problems("test")
        if any(answers._close(v, float(p.answer)) for v in answers.numbers_in(p.text))
        and not any(float(d.replace(",", "")) == float(p.answer) for d in re.findall(r"\d[\d,]*", p.text))
    )
    assert not task.detect_leakage(worded, f"Use the {worded.answer} from the problem.\n")
    assert task.detect_leakage(worded, f"The answer is {worded.answer}.\n")


def test_answer_that_is_a_given_quantity_needs_a_statement(task):
    problem = next(p for p in task.problems("test") if p.answer in p.text.split())
    assert not task.detect_leakage(problem, f"Start from {problem.answer} and compare.\n")
    assert task.detect_leakage(problem, f"The answer is {problem.answer}.\n")


@pytest.mark.parametrize(
    "statement", ["Result: {a}", "Total = {a}", "Answer -> {a}", "answer \u2192 {a}", "So the sum is {a}."]
)
def test_a_given_answer_stated_as_a_result_counts(task, statement):
    """When the problem states the answer's value, a value given as the result is a statement."""
    problem = next(p for p in task.problems("test") if p.answer in p.text.split())
    assert task.detect_leakage(problem, statement.format(a=problem.answer) + "\n")


@pytest.mark.parametrize(
    "honest", ["There are a total of {a} boxes.", "Total = {a} + 3 apples.", "Result: {b}", "Start from {a}."]
)
def test_a_given_answer_as_a_quantity_or_operand_is_no_statement(task, honest):
    problem = next(p for p in task.problems("test") if p.answer in p.text.split())
    text = honest.format(a=problem.answer, b=int(float(problem.answer)) + 1) + "\n"
    assert not task.detect_leakage(problem, text)


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="task.leakage"):
        GSM8KTask(leakage="vibes")
    with pytest.raises(ConfigError, match="task.validation_size"):
        GSM8KTask(validation_size=10**6).problems("train")


def test_sizes_keep_the_first_problems_of_each_split(task):
    small = GSM8KTask(sizes={"train": 5, "validation": 3})
    for split, size in (("train", 5), ("validation", 3)):
        assert [p.id for p in small.problems(split)] == [p.id for p in task.problems(split)[:size]]
    assert len(small.problems("test")) == len(task.problems("test"))  # absent: the whole split
    with pytest.raises(ConfigError, match=r"task.sizes.validation=201 exceeds the 200 problems"):
        GSM8KTask(sizes={"validation": 201}).problems("train")
    with pytest.raises(ConfigError, match="task.sizes has unknown split 'dev'"):
        GSM8KTask(sizes={"dev": 1})


def test_oracle_rm_refuses_gsm8k(task):
    problem = task.problems("test")[0]
    with pytest.raises(ConfigError, match="rm=oracle"):
        OracleRM().score([RMItem(problem, "x", task.name, task.task_type)])
    # and the reward refuses the pair when it is built, not at its first step
    with pytest.raises(ConfigError, match="rm=oracle needs ground-truth states.*task='gsm8k'"):
        ExecutorGroundedReward(ScriptedExecutor(task, {}), task, OracleRM())


def test_the_fingerprint_holds_the_data(tmp_path):
    """Problem ids are line numbers: a task on other files must not share cache keys with the vendored
    one; the same content elsewhere does."""
    from planlift.datasets.files import data_dir
    from planlift.judging import task_tag

    same, other = tmp_path / "same", tmp_path / "other"
    for folder in (same, other):
        folder.mkdir()
    for split in ("train", "test"):
        text = (data_dir() / "gsm8k" / f"{split}.jsonl").read_text()
        (same / f"{split}.jsonl").write_text(text)
        (other / f"{split}.jsonl").write_text(text.replace("#### 18", "#### 19") if split == "test" else text)
    assert task_tag(GSM8KTask(data_dir=str(same))) == task_tag(GSM8KTask())
    assert task_tag(GSM8KTask(data_dir=str(other))) != task_tag(GSM8KTask())
    with pytest.raises(DataError, match="no such data file"):
        GSM8KTask(data_dir=str(tmp_path)).fingerprint()
