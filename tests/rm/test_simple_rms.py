import pytest

from planlift.errors import ConfigError
from planlift.rm import ConstantRM, OracleRM, RMItem, rubric_score
from planlift.tasks import ProceduralTask
from planlift.tasks.base import Problem


@pytest.fixture(scope="module")
def task():
    return ProceduralTask(sizes={"train": 10, "validation": 5, "test": 5})


def item(task, problem, reasoning):
    return RMItem(problem, reasoning, task.name, task.task_type)


def test_rubric_score_formula():
    dims = {"a": 4.0, "b": 2.0, "c": 0.0, "d": 4.0, "e": 0.0}
    assert rubric_score(dims, total=0.5) == pytest.approx(0.5 * (10 / 5) / 4 + 0.25)


def test_oracle_ranks_gold_above_flawed_traces(task):
    problem = task.problems("train")[0]
    gold = task.gold_reasoning(problem)
    lines = gold.splitlines()
    slipped = (
        "\n".join([lines[0].rsplit("=", 1)[0] + "=" + str((int(lines[0][-1]) + 1) % 10), *lines[1:]]) + "\n"
    )
    skipped = "\n".join(lines[:2]) + "\n"
    leaked = f"answer={problem.answer}\n"
    scores = OracleRM().score([item(task, problem, r) for r in (gold, slipped, skipped, leaked, "")])
    assert scores[0] == 1.0
    assert scores[0] > scores[1] > scores[3]
    assert scores[0] > scores[2] > scores[3]
    assert scores[4] == 0.0


def test_oracle_needs_ground_truth(task):
    with pytest.raises(ConfigError, match="rm=oracle"):
        OracleRM().score([RMItem(Problem("p", "text", "1"), "r", "gsm8k", "math")])


def test_constant_rm(task):
    problem = task.problems("train")[0]
    assert ConstantRM(0.3).score([item(task, problem, "x")] * 3) == [0.3] * 3
    with pytest.raises(ConfigError, match="rm.value"):
        ConstantRM(1.5)
