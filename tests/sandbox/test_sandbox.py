"""The sandbox's result record, statuses, pool and reference-output recording (real subprocesses)."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import subprocess
import sys
import time

import pytest

from planlift.errors import ConfigError
from planlift.sandbox import STATUSES, CodeTest, Limits, ProgramJob, Sandbox
from planlift.sandbox.conversion import convert
from planlift.sandbox.isolation import detect, read_only_view, runnable_in_view, world_executable
from planlift.sandbox.oracles import close, is_root, reference_value
from planlift.sandbox.protocol import loads_plain

ADD = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(limits=Limits(timeout=6.0, test_timeout=1.0, load_timeout=2.0), workers=2)


def run(sandbox, program, tests, **job):
    return sandbox.run(ProgramJob(program, tests, entry_point="add", **job))


def test_statuses_and_pass_rate(sandbox):
    tests = [
        CodeTest(args=[1, 2], expected=3),
        CodeTest(args=[0.1, 0.2], expected=0.3),  # float tolerance
        CodeTest(args=[2, 2], expected=5),
        CodeTest(args=["a", "b"], expected="ab"),
    ]
    result = run(sandbox, ADD + "print('hello')\n", tests)
    assert result.status == "failed_tests" and result.status in STATUSES
    assert (result.passed, result.total, result.failed_tests) == (3, 4, (2,))
    assert result.pass_rate == 0.75 and not result.ok
    assert run(sandbox, ADD, tests[:2] + tests[3:]).ok
    assert run(sandbox, "def add(a, b:\n", tests).status == "syntax_error"
    assert run(sandbox, ADD, []).status == "no_tests"
    crash = run(sandbox, "def add(a, b):\n    return a / 0\n", tests)
    assert crash.status == "runtime_error" and "ZeroDivisionError" in crash.error
    assert run(sandbox, "raise SystemExit(3)\n", tests).status == "runtime_error"
    assert run(sandbox, "def add(a, b):\n    return [a] * 10**10\n", tests).memory_exceeded


def test_stop_on_failure(sandbox):
    tests = [CodeTest(args=[1, 1], expected=3)] + [CodeTest(args=[1, 2], expected=3)] * 3
    full = run(sandbox, ADD, tests)
    early = run(sandbox, ADD, tests, stop_on_failure=True)
    assert (full.passed, early.passed) == (3, 0)
    assert full.status == early.status == "failed_tests"
    assert early.failed_tests == (0, 1, 2, 3)  # tests never reached count as not passed
    assert (full.tests_run, early.tests_run) == (4, 1)


def test_oracles(sandbox):
    program = "def add(a, b):\n    return a\n"
    tests = [
        CodeTest(args=[[3, 1, 2], None], expected=(1, 2, 3), oracle="set_equal"),
        CodeTest(args=["match", None], expected=True, oracle="truthy"),
        CodeTest(args=[None, None], expected=True, oracle="truthy"),
        CodeTest(args=[(1.0, 2.0), None], expected=(1.0, 2.0000001), atol=1e-3),
        CodeTest(args=[[1.0], None], expected=(1.0,)),  # the type matters
    ]
    assert run(sandbox, program, tests).failed_tests == (2, 4)
    root = "def add(xs):\n    return 1.0\n"
    assert run(sandbox, root, [CodeTest(args=[[-1.0, 1.0]], oracle="poly_root", expected=None)]).ok


def test_an_infinite_expected_value_accepts_only_the_same_infinity(sandbox):
    """A tolerance relative to inf is inf: any number was within it (Mbpp/137 expects inf on zeros)."""
    program = "def add(a, b):\n    return a\n"
    inf = float("inf")
    tests = [
        CodeTest(args=[inf, None], expected=inf),
        CodeTest(args=[0.0, None], expected=inf),
        CodeTest(args=[-inf, None], expected=inf),
        CodeTest(args=[12345.6, None], expected=-inf),
        CodeTest(args=[[1, -3.0], None], expected=[1, inf]),
        CodeTest(args=[inf, None], expected=1e308),
        CodeTest(args=[1.0, None], expected=10**400),  # too large for a float: not close, no crash
    ]
    assert run(sandbox, program, tests).failed_tests == (1, 2, 3, 4, 5, 6)


def test_recording_reference_outputs(sandbox):
    program = "import collections\ndef add(a, b):\n    if a == 'gen':\n        return (i for i in b)\n    return collections.Counter(a + b)\n"
    tests = [CodeTest(args=["ab", "b"]), CodeTest(args=["gen", [1]]), CodeTest(args=[1, 2])]
    result = run(sandbox, program, tests, record_outputs=True)
    assert loads_plain(result.outputs[0]) == {"a": 1, "b": 2}  # a Counter comes back as a plain dict
    assert result.outputs[1] is None  # a generator is not data
    assert result.outputs[2] is None and result.failed_tests == (2,)


def test_assert_snippets_become_call_tests(sandbox):
    """The reference runs each snippet once; every call it makes becomes data, compared as the assert did."""
    reference = "def add(a, b):\n    return None if a is None else a + b\n"
    snippet = (
        "import math\n"
        "def check(candidate):\n"
        "    assert candidate(1, 2) == 3\n"
        "    assert abs(candidate(0.1, 0.2) - 0.3) < 1e-3\n"
        "    assert math.isclose(candidate(1.0, 1.0), 2.0, rel_tol=0.01)\n"
        "    assert tuple(candidate([1], [2])) == (1, 2)\n"
        "    assert candidate(1, -1) == 0 and not candidate(0, 0)\n"
        "    assert candidate(None, 1) is None\n"
        "    assert candidate(2, 2) > 3\n"  # an inequality: not converted
        "    assert candidate(1, b=1) == 2\n"  # keyword arguments: not converted
        "check(add)\n"
    )
    recorded = run(sandbox, reference, [CodeTest(code=snippet)], record_outputs=True)
    assert recorded.ok and len(recorded.calls[0]) == 9
    converted = convert(snippet, recorded.calls[0])
    shapes = [(t.args, t.expected, t.oracle, t.wrap, t.atol, t.rtol) for t in converted.tests]
    assert shapes == [
        ([1, 2], 3, "equal", None, 0.0, 0.0),
        ([0.1, 0.2], 0.30000000000000004, "equal", None, 1e-3, 0.0),
        ([1.0, 1.0], 2.0, "equal", None, 0.0, 0.01),
        ([[1], [2]], (1, 2), "equal", "tuple", 0.0, 0.0),
        ([1, -1], 0, "equal", None, 0.0, 0.0),
        ([0, 0], False, "equal", "bool", 0.0, 0.0),
        ([None, 1], None, "is", None, 0.0, 0.0),
    ]
    assert dict(converted.dropped) == {
        "the assert compares in a way that does not convert": 1,
        "keyword arguments": 1,
    }
    honest = "def add(a, b):\n    if a is None:\n        return None\n    return tuple(a + b) if isinstance(a, list) else a + b\n"
    assert run(sandbox, honest, converted.tests).ok  # a tuple where the assert took tuple(...)
    rounded = "def add(a, b):\n    if a is None or isinstance(a, list):\n        return a and a + b\n    return round(a + b, 4)\n"
    assert run(sandbox, rounded, converted.tests).ok  # within the asserts' tolerances
    wrong = run(sandbox, "def add(a, b):\n    return None if a is None else a - b\n", converted.tests)
    assert not wrong.ok and 0 < wrong.passed < 7


def test_pool_keeps_order(sandbox):
    expected = [i if i % 2 == 0 else -1 for i in range(8)]  # the odd ones fail
    jobs = [
        ProgramJob(f"def add(a, b):\n    return {i}\n", [CodeTest(args=[0, 0], expected=e)], "add")
        for i, e in enumerate(expected)
    ]
    assert [r.ok for r in sandbox.run_many(jobs)] == [i % 2 == 0 for i in range(8)]


def test_programs_run_without_site_and_see_only_the_standard_library(sandbox):
    """`-s -S`: no site-packages on the path and no `site` module (its .pth files would run code before the
    limits); the hash seed the runner sets still applies (no -E)."""
    seeded = subprocess.run(
        [sys.executable, "-c", "print(hash('ab'))"],
        env={"PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    program = (
        "import sys\n"
        "def add(a, b):\n"
        "    on_path = any('-packages' in p for p in sys.path)\n"
        "    seen = [sys.flags.no_site, 'site' in sys.modules, on_path, hash('ab'), hasattr(__builtins__, 'exit')]\n"
        "    return seen\n"
    )
    expected = [1, False, False, int(seeded.stdout), False]
    result = run(sandbox, program, [CodeTest(args=[0, 0], expected=expected)])
    assert result.status == "correct", (result.error, result.stderr_tail)


def test_isolation_is_reported(sandbox):
    result = run(sandbox, ADD, [CodeTest(args=[1, 1], expected=2)])
    assert result.isolation == sandbox.isolation.mode
    assert result.network_isolated == (sandbox.isolation.mode != "none")
    assert detect("none").mode == "none" and not detect("none").network_isolated
    assert world_executable("/bin/sh")


def test_an_interpreter_under_a_private_directory_is_reachable_in_the_view(tmp_path):
    private = tmp_path / "private"  # as /root: 0700 above a 0755 prefix
    python = private / "versions" / "3.x" / "bin" / "python3"
    python.parent.mkdir(parents=True)
    python.write_text("")
    python.chmod(0o755)
    private.chmod(0o700)
    assert not world_executable(str(python)) and runnable_in_view(str(python))
    view = list(read_only_view(str(python)))
    prefix = python.parent.parent
    made = [view[i + 1] for i, arg in enumerate(view) if arg == "--dir"]
    assert made == [str(p) for p in reversed(prefix.parents[:-1])]  # top-down, / excluded
    assert all(view[view.index("--dir", i) - 1] == "0755" for i in range(len(view)) if view[i] == "--dir")
    assert view.index("--ro-bind", view.index(str(prefix)) - 1) > max(
        i for i, a in enumerate(view) if a == "--dir"
    )
    (prefix / "bin").chmod(0o700)  # inside the bound tree the host's modes count
    assert not runnable_in_view(str(python))


def test_an_interpreter_whose_prefix_is_the_root_binds_its_directory_not_the_host():
    python = "/planlift-no-such-bin/python3"  # as /bin/python3 where /bin is a directory, not a link
    view = list(read_only_view(python))
    binds = [view[i + 1] for i, arg in enumerate(view) if arg == "--ro-bind"]
    assert "/" not in binds and "/planlift-no-such-bin" in binds
    assert len(binds) == len(set(binds))


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("bwrap") or not shutil.which("setpriv"),
    reason="needs root and bwrap",
)
def test_bwrap_uid_runs_this_interpreter_and_bounds_processes(caplog):
    isolation = detect("bwrap+uid")
    assert isolation.bounds_processes
    if runnable_in_view(sys.executable):  # e.g. pyenv's under /root (0700): reached through the view
        assert isolation.python == os.path.realpath(sys.executable)
        sandbox = Sandbox(limits=Limits(timeout=6.0), workers=1, isolation="bwrap+uid")
        program = "import os, sys\ndef add(a, b):\n    return sys.version if a == 0 else os.getuid() != 0\n"
        tests = [CodeTest(args=[0, 0], expected=sys.version), CodeTest(args=[1, 0], expected=True)]
        assert run(sandbox, program, tests).ok  # this interpreter, another uid
    with caplog.at_level(logging.WARNING, logger="planlift.sandbox.isolation"):
        unbounded = detect.__wrapped__("bwrap")  # root's own uid outside: RLIMIT_NPROC does not hold
    assert not unbounded.bounds_processes
    assert any("not bounded" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("mode", ["bwrap+uid", "namespaces+uid", "bwrap", "namespaces", "none"])
def test_every_mode_this_machine_allows_runs_and_says_so(mode):
    try:
        sandbox = Sandbox(limits=Limits(timeout=6.0), workers=1, isolation=mode)
    except RuntimeError:
        pytest.skip(f"isolation {mode!r} is not available here")
    result = run(sandbox, ADD, [CodeTest(args=[1, 1], expected=2), CodeTest(args=[1, 1], expected=3)])
    assert (result.passed, result.total, result.isolation) == (1, 2, mode)
    assert result.filesystem_isolated == mode.startswith("bwrap")


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match="timeout"):
        Limits(timeout=0)
    with pytest.raises(ConfigError, match="sandbox.workers"):
        Sandbox(workers=0)
    with pytest.raises(ConfigError, match="sandbox.isolation"):
        Sandbox(isolation="chroot")


def test_a_process_with_more_than_1024_open_files_still_judges(sandbox):
    """The result pipe may get an fd number above 1024 in a busy training process (select() cannot)."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    opened = []
    try:
        with open(os.devnull) as null:
            opened = [os.dup(null.fileno()) for _ in range(1100)]
        assert run(sandbox, ADD, [CodeTest(args=[1, 1], expected=2)]).ok
    finally:
        for fd in opened:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_root_is_judged_to_the_rounding_of_its_terms_on_every_python():
    # HumanEval+ inputs of HumanEval/32 with their references' answers on Python 3.11 / 3.12
    big = [9450000, 9, -7, 3, 2, 6, 1, -4, -10, 6, 17, -1]
    assert is_root(big, 17.3124550475086, atol=1e-4)  # |p| = 2.3e-3 of terms ~3e20: a float root
    wide = [9, -6, 20999, 2, 8, -4, -10, 26, 6, 5, -1, 8]
    assert is_root(wide, -2.3440476479552648, atol=1e-4)  # |p| = 2.8e-6: the dataset's own criterion
    assert not is_root(wide, -0.02777033164296834, atol=1e-4)  # Newton stopped short: |p| = 25
    assert is_root([-1.0, 1.0], 1) and not is_root([-1.0, 1.0], 1.001)
    for nonsense in (float("inf"), float("nan"), 10**400, True, "1.0", None):
        assert not is_root(big, nonsense)
    # a reference's answer is recorded only if it is a root (given the call's arguments)
    stopped_short = pickle.dumps(-0.02777033164296834, protocol=4)
    assert reference_value(stopped_short, "poly_root", [wide], 1e-4) == (False, -0.02777033164296834)
    assert reference_value(pickle.dumps(-2.3440476479552648, protocol=4), "poly_root", [wide], 1e-4)[0]


def test_on_an_unordered_problem_an_assert_that_fixes_one_order_accepts_any(sandbox):
    """Mbpp/2's asserts compare with the tuple the reference happened to return; EvalPlus judges the
    problem's outputs as sets (set_equal), so its converted asserts do too, unless they compare a length."""
    reference = "def add(a, b):\n    return tuple(sorted(set(a) & set(b)))\n"
    snippet = "assert add((3, 4, 5), (5, 7, 4)) == (4, 5)\nassert len(add((1, 2), (2, 1))) == 2\n"
    recorded = run(sandbox, reference, [CodeTest(code=snippet)], record_outputs=True)
    assert recorded.ok
    ordered = convert(snippet, recorded.calls[0])
    unordered = convert(snippet, recorded.calls[0], oracle="set_equal")
    assert [(t.oracle, t.wrap) for t in ordered.tests] == [("equal", None), ("equal", "len")]
    assert [(t.oracle, t.wrap) for t in unordered.tests] == [("set_equal", None), ("equal", "len")]
    reversed_order = "def add(a, b):\n    return tuple(sorted(set(a) & set(b), reverse=True))\n"
    assert not run(sandbox, reversed_order, ordered.tests).ok
    assert run(sandbox, reversed_order, unordered.tests).ok
    assert not run(sandbox, "def add(a, b):\n    return (4, 5, 7)\n", unordered.tests).ok


def test_an_assert_converted_poly_root_call_keeps_only_a_root():
    """HumanEval/32's check(candidate) calls: the reference's answer becomes a test only if it is a root."""
    wide = [9, -6, 20999, 2, 8, -4, -10, 26, 6, 5, -1, 8]
    snippet = "def check(candidate):\n    assert candidate([9, -6]) is not None\ncheck(find_zero)\n"
    calls = [
        ((2, 2, 11, 31), pickle.dumps([wide], protocol=4), False, pickle.dumps(answer, protocol=4), 0.01)
        for answer in (-2.3440476479552648, -0.02777033164296834)  # a root; Newton stopped short
    ]
    converted = convert(snippet, calls, oracle="poly_root", atol=1e-4)
    assert [(t.args, t.expected, t.oracle) for t in converted.tests] == [
        ([wide], -2.3440476479552648, "poly_root")
    ]
    assert dict(converted.dropped) == {"the reference's answer is not a root": 1}


def test_a_harness_that_never_starts_is_a_sandbox_error_not_a_crash(caplog):
    """/bin/false never runs the harness: no verdict on the program, which is correct."""
    broken = Sandbox(limits=Limits(timeout=6.0), workers=1, isolation="none", python="/bin/false")
    with caplog.at_level(logging.WARNING, logger="planlift.sandbox.runner"):
        result = run(broken, ADD, [CodeTest(args=[1, 2], expected=3)])
    assert result.status == "sandbox_error" and result.status in STATUSES
    assert result.passed == 0 and "never reported its start" in result.error
    assert "never reported its start" in caplog.text


def test_an_int_answer_is_exact_unless_the_test_gives_a_tolerance():
    assert close(15.0, 15) and close(15, 15)  # Python's 15.0 == 15, as EvalPlus compares
    assert not close(15.0000009, 15) and not close(1.000000005e20, 10**20)
    assert close(15.0000009, 15, atol=1e-6) and close(15.0000009, 15, rtol=1e-6)  # math.isclose asserts
    assert close(15.0000009, 15.0)  # a float answer keeps the default tolerance


def test_a_job_timeout_raises_the_whole_run_limit_only():
    sandbox = Sandbox(limits=Limits(timeout=1.0, test_timeout=1.0, cpu_seconds=1), workers=1)
    program = "import time\ndef f(x):\n    time.sleep(0.4)\n    return x\n"
    tests = [CodeTest(args=[i], expected=i) for i in range(4)]  # 1.6 s in all, 0.4 s each
    assert sandbox.run(ProgramJob(program, tests, entry_point="f")).status == "timeout"
    assert sandbox.run(ProgramJob(program, tests, entry_point="f", timeout=5.0)).status == "correct"
    assert (
        sandbox.run(ProgramJob(program, tests, entry_point="f", timeout=0.5)).status == "timeout"
    )  # never lower
    busy = "def f(x):\n    while True:\n        pass\n"  # one test still ends at its own limit
    assert sandbox.run(ProgramJob(busy, tests, entry_point="f", timeout=30.0)).status == "timeout"


def test_the_parents_judging_time_is_not_the_programs(monkeypatch):
    """A program that returns large values waits on a full pipe while the parent judges them: 2.7 s of the
    parent's judging over a 2 s run limit is not the program's time, and it is judged correct."""
    from planlift.sandbox import oracles

    judge = oracles.judge

    def slow_judge(*args, **kwargs):
        time.sleep(0.9)
        return judge(*args, **kwargs)

    monkeypatch.setattr(oracles, "judge", slow_judge)
    sandbox = Sandbox(limits=Limits(timeout=2.0, test_timeout=1.0, load_timeout=2.0), workers=1)
    program = "def f(x):\n    return 'x' * 300_000\n"  # more than a pipe's buffer
    tests = [CodeTest(args=[i], expected="x" * 300_000) for i in range(3)]
    start = time.monotonic()
    result = sandbox.run(ProgramJob(program, tests, entry_point="f"))
    assert time.monotonic() - start > 2.0  # the run took longer than the program's limit
    assert result.status == "correct", result.error


def test_a_flood_of_frames_slow_to_judge_is_still_cut_by_twice_the_limit(monkeypatch):
    """The parent's time moves the deadline by at most the run limit: a program that floods the channel
    (while its long load allowance runs) is cut between 1x and 2x its limit, never later."""
    judge_chunk = Sandbox._judge

    def slow(*args):
        time.sleep(0.3)
        return judge_chunk(*args)

    monkeypatch.setattr(Sandbox, "_judge", staticmethod(slow))
    sandbox = Sandbox(limits=Limits(timeout=1.0, test_timeout=1.0, load_timeout=10.0), workers=1)
    program = (
        "import os, pickle, struct, sys\n"
        "frame = pickle.dumps({'event': 'start'})\n"
        "while True:\n    os.write(int(sys.argv[2]), struct.pack('>I', len(frame)) + frame)\n"
    )
    start = time.monotonic()
    result = sandbox.run(ProgramJob(program, [CodeTest(args=[1], expected=1)], entry_point="f"))
    seconds = time.monotonic() - start
    assert result.status == "timeout" and 1.9 < seconds < 4.0, (result.status, seconds)
