"""Proof that the sandbox and the tests are right: every reference solution passes its own tests.

HumanEval 164/164 (original `check`), HumanEval+ 164/164 (check + all base and extra inputs), MBPP (all
964 problems with their asserts), MBPP+ 378/378 (base assertions + extra inputs). The expected outputs of
the EvalPlus inputs come from the references themselves, so the plus proofs check the harness: input
types, comparison, time limits and determinism across two runs. Slow: a few minutes on 2 cores.
"""

from __future__ import annotations

import pytest

from planlift.datasets.code import MBPP_SPLIT_IDS, load_humaneval, load_mbpp
from planlift.sandbox import CodeTest, Limits, ProgramJob, Sandbox
from planlift.tasks import HumanEvalTask, MBPPTask

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(workers=2)


def failures(sandbox, records) -> dict[str, str]:
    """The references' own asserts, with generous time limits (the machine is shared)."""
    jobs = [ProgramJob(r.reference, [CodeTest(code=a) for a in r.asserts], r.entry_point) for r in records]
    results = sandbox.run_many(jobs, Limits(timeout=120.0, test_timeout=30.0, cpu_seconds=120))
    return {r.id: f"{x.status}: {x.error}" for r, x in zip(records, results, strict=True) if not x.ok}


def test_humaneval_references_pass(sandbox):
    records = load_humaneval(plus=False)
    assert len(records) == 164 and failures(sandbox, records) == {}


def test_mbpp_references_pass(sandbox):
    records = [r for split in MBPP_SPLIT_IDS for r in load_mbpp(split)]
    assert len(records) == 964
    assert failures(sandbox, records) == {}


@pytest.mark.parametrize("task_class", [HumanEvalTask, MBPPTask])
def test_plus_references_pass_all_extra_inputs(task_class, tmp_path):
    # a test may take 10x the reference's time (at least 10 s): timings jitter on a shared machine
    generous = Sandbox(limits=Limits(timeout=120.0, test_timeout=10.0, cpu_seconds=120), workers=2)
    task = task_class(sandbox=generous, time_factor=10.0, cache_dir=str(tmp_path))
    problems = task.problems("test")
    verdicts = task.verify_batch(problems, [task.executor_target(p) for p in problems])
    failed = {p.id: v for p, v in zip(problems, verdicts, strict=True) if not v.correct}
    assert len(problems) == (164 if task_class is HumanEvalTask else 378)
    assert failed == {}
    dropped = {p.id: p.meta["dropped_inputs"] for p in problems if p.meta["dropped_inputs"]}
    # inputs on which the reference itself fails or returns >64 MiB (Mbpp/255, Mbpp/580): see docs
    assert set(dropped) <= {"Mbpp/255", "Mbpp/580"}
    assert sum(len(p.meta["tests"]) for p in problems) > (120_000 if task_class is HumanEvalTask else 40_000)
