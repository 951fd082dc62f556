"""Hostile programs are contained: the test process survives, canaries stay intact, time stays bounded.

Each case runs a real program in the real sandbox (no mocks) and checks what the host sees afterwards:
canary files unchanged, no process of the sandbox uids left, a loopback listener that received nothing,
no secret in the captured output, and a wall time within the limit plus a small margin.
"""

from __future__ import annotations

import ast
import contextlib
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest

from planlift.errors import ConfigError
from planlift.sandbox import CodeTest, Limits, ProgramJob, Sandbox
from planlift.tasks.code import MBPPTask

LIMITS = Limits(
    timeout=4.0, test_timeout=1.0, load_timeout=1.5, cpu_seconds=6, memory_mb=512, max_processes=8
)
SLACK = 3.0  # seconds beyond the wall-clock limit for killing and clean-up
SECRET = "planlift-secret-token-7f3a9c"
IDENTITY = CodeTest(args=[1], expected=1)


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(limits=LIMITS, workers=2)


@pytest.fixture(scope="module")
def canary_dir():
    """A root-owned, world-readable directory with a canary file (like a project checkout)."""
    directory = Path(tempfile.mkdtemp(prefix="planlift-canary-"))
    directory.chmod(0o755)
    canary = directory / "canary.txt"
    canary.write_text("intact\n")
    canary.chmod(0o644)
    secret = directory / "secret.txt"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    yield directory
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()


@pytest.fixture
def listener():
    """A TCP and a UDP socket on 127.0.0.1 that record anything they receive."""
    received: list[bytes] = []
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    tcp.settimeout(0.2)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                connection, _ = tcp.accept()
                received.append(b"<connection>" + connection.recv(1024))
                connection.close()
            except OSError:
                pass
            with contextlib.suppress(OSError):
                received.append(udp.recv(1024))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield tcp.getsockname()[1], udp.getsockname()[1], received
    stop.set()
    thread.join(timeout=2)
    tcp.close()
    udp.close()


def sandbox_processes(sandbox: Sandbox) -> list[int]:
    uids = range(sandbox.uid_base, sandbox.uid_base + sandbox.workers)
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid in uids:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _state(pid: int) -> str:
    """`/proc/<pid>/stat`'s state and parent, for a failure message."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return f"state {fields[0]} ppid {fields[1]}"
    except OSError:
        return "gone"


def contained(sandbox: Sandbox, program: str, canary_dir: Path, tests=(IDENTITY,), **job):
    """Run `program`; assert the host-side invariants; return the result."""
    before = (canary_dir / "canary.txt").read_text()
    start = time.perf_counter()
    result = sandbox.run(ProgramJob(program, tests, entry_point="f", **job))
    elapsed = time.perf_counter() - start
    assert elapsed < LIMITS.timeout + SLACK, f"took {elapsed:.1f}s"
    assert (canary_dir / "canary.txt").read_text() == before == "intact\n"
    assert sorted(p.name for p in canary_dir.iterdir()) == ["canary.txt", "secret.txt"]
    assert stat.S_IMODE((canary_dir / "canary.txt").stat().st_mode) == 0o644
    if sandbox.isolation.drops_uid:  # at return, not a moment later: the next job may get this uid
        left = {pid: _state(pid) for pid in sandbox_processes(sandbox)}
        assert left == {}, f"a sandboxed process outlived its run: {left}"
    assert len(result.stdout_tail) <= LIMITS.output_chars
    assert len(result.stderr_tail) <= LIMITS.output_chars
    assert SECRET not in result.stdout_tail + result.stderr_tail
    return result


def denied(result) -> bool:
    """Refused (another uid's file) or absent (outside the read-only world)."""
    return any(name in (result.error or "") for name in ("PermissionError", "FileNotFoundError"))


def needs(sandbox: Sandbox, what: str) -> None:
    if what == "uid" and not sandbox.isolation.drops_uid:
        pytest.skip(f"isolation {sandbox.isolation.mode!r}: programs keep the caller's uid here")
    if what == "net" and not sandbox.isolation.network_isolated:
        pytest.skip("isolation 'none': no network namespace on this machine")
    if what == "world" and not sandbox.isolation.private_tmp:
        pytest.skip(f"isolation {sandbox.isolation.mode!r}: no bubblewrap, programs see the host's files")


# ---- time ------------------------------------------------------------------------------------------

LOOPS = {
    "infinite_loop_in_function": "def f(x):\n    while True:\n        pass\n",
    "infinite_loop_at_top_level": "while True:\n    pass\n",
    "sleep_forever": "import time\ndef f(x):\n    time.sleep(1000)\n",
    "alarm_ignored": (
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ndef f(x):\n    while True:\n        pass\n"
    ),
    "timer_disarmed": (
        "import signal\ndef f(x):\n    signal.setitimer(signal.ITIMER_REAL, 0)\n    while True:\n        pass\n"
    ),
    "catches_every_exception": (
        "def f(x):\n    while True:\n        try:\n            while True:\n                pass\n"
        "        except BaseException:\n            pass\n"
    ),
    "uninterruptible_c_call": "def f(x):\n    return len(str(7 ** (10 ** 9)))\n",
    "terminate_signals_ignored": (
        "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):\n"
        "    signal.signal(s, signal.SIG_IGN)\ndef f(x):\n    while True:\n        pass\n"
    ),
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_runaway_time_is_cut(sandbox, canary_dir, name):
    result = contained(sandbox, LOOPS[name], canary_dir)
    assert result.status == "timeout"
    assert result.timed_out and result.passed == 0


# Slow but finite, with the timers inside the process disarmed: each would finish within the run's wall
# clock (LIMITS.timeout), so only the sandbox's own clock for each phase can judge them too slow.
SLOW = {
    "test_timer_replaced": (
        "import signal, time\nsignal.setitimer = lambda *a, **k: (0.0, 0.0)\n"
        "def f(x):\n    time.sleep(1.5)\n    return x\n"
    ),
    "test_timer_disarmed_in_the_call": (
        "import signal, time\ndef f(x):\n    signal.setitimer(signal.ITIMER_REAL, 0)\n"
        "    time.sleep(1.5)\n    return x\n"
    ),
    "load_timer_disarmed": (
        "import signal, time\nsignal.setitimer(signal.ITIMER_REAL, 0)\ntime.sleep(3.0)\n"
        "def f(x):\n    return x\n"
    ),
    "honest_but_slow": "import time\ndef f(x):\n    time.sleep(1.5)\n    return x\n",
}


@pytest.mark.parametrize("name", sorted(SLOW))
def test_a_disarmed_timer_does_not_buy_time(sandbox, canary_dir, name):
    """Tests of 0.5 s (load 1.5 s): the sandbox allows 1.5x + 0.5 s = 1.25 s (2.75 s) by its own clock."""
    tests = [CodeTest(args=[i], expected=i, timeout=0.5) for i in range(2)]
    result = contained(sandbox, SLOW[name], canary_dir, tests=tests)
    assert result.status == "timeout" and result.passed == 0, (result.status, result.error)
    fast = contained(
        sandbox, "import time\ndef f(x):\n    time.sleep(0.2)\n    return x\n", canary_dir, tests=tests
    )
    assert fast.ok


# The same, finishing within the kill allowance above but after the verdict's (1.1x + 0.25 s: 0.8 s for a
# 0.5 s test, 1.9 s for the 1.5 s load): each passed before the parent judged a report's arrival time.
LATE = {
    "test_timer_replaced": (
        "import signal, time\nsignal.setitimer = lambda *a, **k: (0.0, 0.0)\n"
        "def f(x):\n    time.sleep(1.0)\n    return x\n"
    ),
    "load_timer_disarmed": (
        "import signal, time\nsignal.setitimer(signal.ITIMER_REAL, 0)\ntime.sleep(2.3)\n"
        "def f(x):\n    return x\n"
    ),
}


@pytest.mark.parametrize("name", sorted(LATE))
def test_a_report_later_than_its_limit_allows_is_a_timeout(sandbox, canary_dir, name):
    tests = [CodeTest(args=[i], expected=i, timeout=0.5) for i in range(2)]
    result = contained(sandbox, LATE[name], canary_dir, tests=tests)
    assert result.status == "timeout" and result.passed == 0, (result.status, result.error)
    assert "timed by the sandbox" in result.error


def test_stopping_itself(sandbox, canary_dir):
    # Under unshare the program is its PID namespace's init, which ignores SIGSTOP from inside; under
    # bubblewrap (whose own init is pid 1) or without a namespace it stops and the wall clock kills it.
    program = "import os, signal\ndef f(x):\n    os.kill(os.getpid(), signal.SIGSTOP)\n    return x\n"
    result = contained(sandbox, program, canary_dir)
    is_init = sandbox.isolation.mode in ("namespaces+uid", "namespaces")
    assert result.status == ("correct" if is_init else "timeout")


# ---- processes and memory --------------------------------------------------------------------------


def unbounded_processes_skip(sandbox: Sandbox) -> None:
    if not sandbox.isolation.bounds_processes:  # the bomb would fill the machine's PID table
        pytest.skip(f"isolation {sandbox.isolation.mode!r} as root: RLIMIT_NPROC does not bound root")


def test_fork_bomb(sandbox, canary_dir):
    unbounded_processes_skip(sandbox)
    program = "import os\ndef f(x):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n"
    result = contained(sandbox, program, canary_dir)
    assert result.status in ("timeout", "runtime_error") and result.passed == 0


def test_children_that_leave_the_process_group_die_too(sandbox, canary_dir):
    needs(sandbox, "uid")
    program = (
        "import os, time\ndef f(x):\n    for _ in range(3):\n        if os.fork() == 0:\n"
        "            os.setsid()\n            time.sleep(1000)\n    return x\n"
    )
    result = contained(sandbox, program, canary_dir)
    assert result.status == "correct"  # the program itself behaved; its daemons were reaped


def test_thread_bomb(sandbox, canary_dir):
    unbounded_processes_skip(sandbox)
    program = (
        "import threading, time\ndef f(x):\n    threads = []\n    while True:\n"
        "        t = threading.Thread(target=time.sleep, args=(100,))\n        t.start()\n        threads.append(t)\n"
    )
    result = contained(sandbox, program, canary_dir)
    assert result.status == "runtime_error" and result.passed == 0


def test_memory_bomb(sandbox, canary_dir):
    result = contained(sandbox, "def f(x):\n    return bytearray(10 ** 10)\n", canary_dir)
    assert result.memory_exceeded and result.status == "runtime_error"


def test_gradual_memory_bomb(sandbox, canary_dir):
    program = "def f(x):\n    hoard = []\n    while True:\n        hoard.append('x' * 10 ** 8)\n"
    # filling 512 MB takes ~0.35 s of the 1 s test limit on a quiet machine: a loaded one could end it as a
    # timeout before the MemoryError (this test failed once beside CI, message lost); it gets 3 s
    tests = (CodeTest(args=[1], expected=1, timeout=3.0),)
    result = contained(sandbox, program, canary_dir, tests=tests)
    assert result.memory_exceeded and result.passed == 0, result


def test_limits_cannot_be_raised(sandbox, canary_dir):
    program = (
        "import resource\ndef f(x):\n    inf = resource.RLIM_INFINITY\n"
        "    resource.setrlimit(resource.RLIMIT_AS, (inf, inf))\n    return x\n"
    )
    result = contained(sandbox, program, canary_dir)
    assert result.status == "runtime_error" and "ValueError" in (result.error or "")


def test_deep_recursion(sandbox, canary_dir):
    program = "import sys\nsys.setrecursionlimit(10 ** 7)\ndef f(x):\n    return f(x + 1) + 1\n"
    result = contained(sandbox, program, canary_dir)
    # a C stack overflow (SIGSEGV), a RecursionError/MemoryError, or the clock: never a pass
    assert result.status in ("runtime_error", "timeout") and result.passed == 0


def test_too_many_open_files(sandbox, canary_dir):
    program = "def f(x):\n    handles = [open('f%d' % i, 'w') for i in range(10000)]\n    return x\n"
    result = contained(sandbox, program, canary_dir)
    assert result.status == "runtime_error" and "Too many open files" in (result.error or "")


# ---- output ------------------------------------------------------------------------------------------


def test_print_flood(sandbox, canary_dir):
    result = contained(sandbox, "def f(x):\n    while True:\n        print('y' * 1000)\n", canary_dir)
    assert result.status == "timeout"


def test_raw_stdout_flood_hits_the_file_size_limit(sandbox, canary_dir):
    program = "import os\ndef f(x):\n    while True:\n        os.write(1, b'z' * 65536)\n"
    result = contained(sandbox, program, canary_dir)
    assert result.status in ("runtime_error", "timeout") and result.passed == 0
    assert set(result.stdout_tail) <= {"z"}


def test_raw_stderr_flood(sandbox, canary_dir):
    program = "import os\ndef f(x):\n    while True:\n        os.write(2, b'e' * 65536)\n"
    result = contained(sandbox, program, canary_dir)
    assert result.passed == 0


def test_disk_fill_in_the_working_dir(sandbox, canary_dir):
    program = (
        "def f(x):\n    with open('big', 'wb') as h:\n        h.write(b'0' * (64 * 2 ** 20))\n    return x\n"
    )
    result = contained(sandbox, program, canary_dir)
    assert result.status == "runtime_error"


# ---- files -------------------------------------------------------------------------------------------


def test_overwrite_a_file_outside_the_working_dir(sandbox, canary_dir):
    needs(sandbox, "uid")
    program = f"def f(x):\n    open({str(canary_dir / 'canary.txt')!r}, 'w').write('owned')\n    return x\n"
    result = contained(sandbox, program, canary_dir)
    assert result.status == "runtime_error" and denied(result)


def test_delete_and_create_files_outside(sandbox, canary_dir):
    needs(sandbox, "uid")
    program = (
        f"import os\nD = {str(canary_dir)!r}\ndef f(x):\n"
        "    for action in (lambda: os.remove(D + '/canary.txt'), lambda: open(D + '/new.txt', 'w'),\n"
        "                   lambda: os.rename(D + '/canary.txt', D + '/moved'), lambda: os.chmod(D + '/canary.txt', 0o777)):\n"
        "        try:\n            action()\n        except OSError:\n            pass\n    return x\n"
    )
    contained(sandbox, program, canary_dir)


def test_files_left_in_tmp_are_removed(sandbox, canary_dir):
    needs(sandbox, "uid")
    program = "def f(x):\n    open('/tmp/planlift-left-behind', 'w').write('x')\n    return x\n"
    result = contained(sandbox, program, canary_dir)
    assert result.status == "correct"
    assert not Path("/tmp/planlift-left-behind").exists()


def test_working_dir_is_fresh_and_removed(sandbox, canary_dir):
    program = (
        "import os\nSEEN = sorted(os.listdir('.'))\ndef f(x):\n    print(os.getcwd(), SEEN)\n    return x\n"
    )
    first = contained(sandbox, program, canary_dir)
    workdir = first.stdout_tail.split()[0]
    assert first.status == "correct" and first.stdout_tail.strip().endswith("[]")
    assert not Path(workdir).exists()


# ---- secrets -----------------------------------------------------------------------------------------


def test_environment_secrets_are_not_inherited(sandbox, canary_dir, monkeypatch):
    monkeypatch.setenv("PLANLIFT_TEST_TOKEN", SECRET)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    program = (
        "import os\ndef f(x):\n    print(dict(os.environ))\n    for pid in os.listdir('/proc'):\n"
        "        try:\n            print(open('/proc/%s/environ' % pid).read())\n        except OSError:\n            pass\n"
        "    return x\n"
    )
    result = contained(sandbox, program, canary_dir)
    assert result.status == "correct"
    assert "PATH" in result.stdout_tail and "TOKEN" not in result.stdout_tail


def test_secret_file_is_unreadable(sandbox, canary_dir):
    needs(sandbox, "uid")
    program = f"def f(x):\n    print(open({str(canary_dir / 'secret.txt')!r}).read())\n    return x\n"
    result = contained(sandbox, program, canary_dir)
    assert result.status == "runtime_error" and denied(result)


def test_parent_environ_is_unreadable(sandbox, canary_dir, monkeypatch):
    monkeypatch.setenv("PLANLIFT_TEST_TOKEN", SECRET)
    program = f"def f(x):\n    print(open('/proc/{os.getpid()}/environ').read())\n    return x\n"
    contained(sandbox, program, canary_dir)


# ---- signals and the parent --------------------------------------------------------------------------


def test_killing_the_parent(sandbox, canary_dir):
    program = (
        f"import os, signal\ndef f(x):\n    for pid in ({os.getpid()}, os.getppid(), 1, -1):\n"
        "        try:\n            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n    return x\n"
    )
    contained(sandbox, program, canary_dir)
    assert os.getpid() > 0  # still here


def test_killing_the_process_group_of_the_caller(sandbox, canary_dir):
    program = (
        f"import os, signal\ndef f(x):\n    for group in ({os.getpgid(0)}, 0):\n"
        "        try:\n            os.killpg(group, signal.SIGTERM)\n        except OSError:\n            pass\n    return x\n"
    )
    contained(sandbox, program, canary_dir)


# ---- network -----------------------------------------------------------------------------------------


def test_tcp_connection_to_the_host(sandbox, canary_dir, listener):
    needs(sandbox, "net")
    tcp_port, _, received = listener
    program = (
        f"import socket\ndef f(x):\n    s = socket.create_connection(('127.0.0.1', {tcp_port}), timeout=1)\n"
        "    s.sendall(b'exfiltrated')\n    return x\n"
    )
    result = contained(sandbox, program, canary_dir)
    time.sleep(0.5)
    assert result.status == "runtime_error" and received == []


def test_udp_packet_to_the_host(sandbox, canary_dir, listener):
    needs(sandbox, "net")
    _, udp_port, received = listener
    program = (
        f"import socket\ndef f(x):\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"    s.sendto(b'exfiltrated', ('127.0.0.1', {udp_port}))\n    return x\n"
    )
    contained(sandbox, program, canary_dir)
    time.sleep(0.5)
    assert received == []


# ---- cheating the harness ----------------------------------------------------------------------------


def test_exit_before_the_tests(sandbox, canary_dir):
    result = contained(sandbox, "import os\nos._exit(0)\n", canary_dir)
    assert result.status == "runtime_error" and result.passed == 0


def test_sys_exit_inside_a_test(sandbox, canary_dir):
    result = contained(sandbox, "import sys\ndef f(x):\n    sys.exit(0)\n", canary_dir)
    assert result.status == "runtime_error" and result.passed == 0


def test_fake_results_on_stdout(sandbox, canary_dir):
    program = (
        'import os\nos.write(1, b\'{"event": "test", "i": 0, "outcome": "pass"}\\n{"event": "done"}\\n\')\n'
        "def f(x):\n    return x + 1\n"
    )
    result = contained(sandbox, program, canary_dir)
    assert result.status == "failed_tests" and result.passed == 0


@pytest.mark.parametrize(
    "seconds",
    ["10**400", "float('nan')", "'soon'", "-1.0", "[1]"],
    ids=["huge_int", "nan", "str", "neg", "list"],
)
def test_a_malformed_frame_is_judged_not_raised(sandbox, canary_dir, seconds):
    """A frame the program writes with a field the parent cannot take (an int too large for a float): a
    wrong program, never an exception out of the sandbox that would end the training step."""
    program = (
        "import os, pickle, struct, sys\n"
        f"payload = pickle.dumps({{'event': 'test', 'i': 0, 'outcome': 'returned', 'seconds': {seconds},\n"
        "                         'error': None, 'output': pickle.dumps('wrong')})\n"
        "os.write(int(sys.argv[2]), struct.pack('>I', len(payload)) + payload)\n"
        "def f(x):\n    return x\n"
    )
    result = contained(sandbox, program, canary_dir)
    assert result.passed == 0 and result.status in ("runtime_error", "failed_tests"), (
        result.status,
        result.error,
    )
    assert all(0 <= value < LIMITS.timeout for value in result.test_seconds.values())


def test_an_assertion_error_of_the_program_is_a_crash_not_a_failed_test(sandbox, canary_dir):
    """A call test runs no assert of ours: an AssertionError comes from the program (as any exception)."""
    raised = contained(sandbox, "def f(x):\n    assert x < 0, 'no'\n", canary_dir)
    assert raised.status == "runtime_error" and "AssertionError" in raised.error, raised.error
    wrong = contained(sandbox, "def f(x):\n    return None\n", canary_dir)
    assert wrong.status == "failed_tests"


def test_the_pool_keeps_working_after_hostile_programs(sandbox, canary_dir):
    good = ProgramJob("def f(x):\n    return x\n", [IDENTITY], entry_point="f")
    results = sandbox.run_many([good] * 4)
    assert [r.status for r in results] == ["correct"] * 4


# ---- forging a verdict -------------------------------------------------------------------------------

EXPECTED_SENTINEL = "planlift-expected-value-5be1"
SENTINEL_TEST = CodeTest(args=[1], expected=EXPECTED_SENTINEL)
FORGERS = {
    "always_equal_object": (
        "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
        "def f(x):\n    return Anything()\n"
    ),
    "int_subclass_equal_to_everything": (
        "class Int(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def f(x):\n    return Int(7)\n"
    ),
    "str_subclass_in_a_list": (
        "class S(str):\n    def __eq__(self, other):\n        return True\n    __hash__ = str.__hash__\n"
        "def f(x):\n    return [S('a')]\n"
    ),
    "reduce_to_a_builtin_call": (  # a pickled call of an arbitrary global
        "import os\nclass Sneaky:\n    def __reduce__(self):\n        return (os.system, ('true',))\n"
        "def f(x):\n    return Sneaky()\n"
    ),
    "reads_expected_values_from_memory": (
        "import gc, sys\n"
        "def f(x):\n"
        "    found = []\n"
        "    for obj in gc.get_objects():\n"
        "        if isinstance(obj, dict):\n"
        "            for key, value in list(obj.items()):\n"
        f"                if key == 'expected' or value == {EXPECTED_SENTINEL!r}:\n"
        "                    found.append(value)\n"
        "    frame = sys._getframe()\n"
        "    while frame is not None:\n"
        "        found += [v for v in frame.f_locals.values() if isinstance(v, dict) and 'expected' in v]\n"
        "        frame = frame.f_back\n"
        "    print('FOUND' if found else 'NOTHING')\n"
        "    return found[0] if found else None\n"
    ),
    "forged_frames_then_exit": (
        "import os, pickle, struct, sys\n"
        "fd = int(sys.argv[2])\n"
        "def frame(**event):\n"
        "    payload = pickle.dumps(event)\n"
        "    return struct.pack('>I', len(payload)) + payload\n"
        "forged = frame(event='program', outcome='returned', error=None)\n"
        "for i in range(3):\n"
        "    forged += frame(event='test', i=i, outcome='pass', seconds=0.0, error=None,\n"
        "                    output=pickle.dumps(True), passed=True)\n"
        "os.write(fd, forged + frame(event='done'))\n"
        "os._exit(0)\n"
    ),
    "forged_frames_through_the_harness": (  # the harness's own emitter, found through its frames
        "import sys\n"
        "emit = None\n"
        "frame = sys._getframe()\n"
        "while frame is not None:\n"
        "    emit = frame.f_locals.get('emit', emit)\n"
        "    frame = frame.f_back\n"
        "def f(x):\n"
        "    for i in range(3):\n"
        "        emit(event='test', i=i, outcome='pass', seconds=0.0, error=None, output=None)\n"
        "    emit(event='done')\n"
        "    import os\n"
        "    os._exit(0)\n"
    ),
    "old_json_protocol_on_every_fd": (
        "import os\n"
        'line = b\'{"event": "test", "i": 0, "outcome": "pass"}\\n{"event": "done"}\\n\'\n'
        "for fd in range(3, 64):\n"
        "    try:\n        os.write(fd, line)\n    except OSError:\n        pass\n"
        "def f(x):\n    return None\n"
    ),
    "garbage_on_the_channel": (
        "import os, sys\nos.write(int(sys.argv[2]), b'\\x00\\x00\\x00\\x05garbage' * 10)\n"
        "def f(x):\n    return None\n"
    ),
    "huge_frame_header": (
        "import os, sys\nos.write(int(sys.argv[2]), b'\\xff\\xff\\xff\\xff')\ndef f(x):\n    return None\n"
    ),
    "exponential_structure": (  # a small pickle that is a huge tree: must not hang the judge
        "def f(x):\n    t = ()\n    for _ in range(80):\n        t = (t, t)\n    return [t]\n"
    ),
}


@pytest.mark.parametrize("name", sorted(FORGERS))
def test_no_program_is_judged_correct_without_the_answer(sandbox, canary_dir, name):
    tests = (SENTINEL_TEST, CodeTest(args=[2], expected=[1, 2]), CodeTest(args=[3], expected=True))
    result = contained(sandbox, FORGERS[name], canary_dir, tests=tests)
    assert result.passed == 0 and not result.ok, (result.status, result.error)
    assert "FOUND" not in result.stdout_tail


def test_expected_values_never_enter_the_sandbox(sandbox):
    job = ProgramJob("def f(x):\n    return x\n", [SENTINEL_TEST], entry_point="f")
    payload = sandbox._job_payload(job, LIMITS, None)
    assert EXPECTED_SENTINEL not in repr(payload)
    with pytest.raises(ConfigError, match="assert snippets"):  # a snippet could forge its own outcome
        sandbox.run(ProgramJob("def f(x):\n    return x\n", [CodeTest(code="assert f(1) == 1")], "f"))


def test_honest_answers_still_pass(sandbox, canary_dir):
    program = (
        "import collections\ndef f(x):\n    return {1: [1, 2], 2: collections.Counter('ab'), 3: True}[x]\n"
    )
    tests = (
        CodeTest(args=[1], expected=[1, 2]),
        CodeTest(args=[2], expected={"a": 1, "b": 1}),
        CodeTest(args=[3], expected=1),  # bool against int: plain ==, as the asserts had it
    )
    assert contained(sandbox, program, canary_dir, tests=tests).ok


# ---- what the trainer pays: no more than the pickle's size -----------------------------------------

COLLIDING = "M = 2**61 - 1  # ints are their own hash modulo M: every k * M hashes to 0\n"
TRAINER_BOMBS = {
    # the program allocates nothing; the parent's unpickler would call bytearray(2**31) twice
    "bytearray_of_a_size": (
        "class B:\n    def __reduce__(self):\n        return (bytearray, (2**31,))\n"
        "def f(x):\n    return [B(), B()]\n",
        IDENTITY,
        "not plain data",
    ),
    # the program builds a list (linear); the parent would build the set: N**2 probes
    "set_of_colliding_ints": (
        COLLIDING
        + "class C:\n    def __reduce__(self):\n        return (set, ([k * M for k in range(1, 50_000)],))\n"
        "def f(x):\n    return C()\n",
        IDENTITY,
        "hash flood",
    ),
    # a frame written by hand: the event itself a dict of colliding keys (the SETITEMS opcode)
    "frame_of_colliding_keys": (
        COLLIDING + "import os, pickle, struct, sys\n"
        "body = b''.join(pickle.dumps(k * M, protocol=2)[2:-1] + b'K\\x00' for k in range(1, 50_000))\n"
        "payload = b'\\x80\\x02}(' + body + b'u.'\n"
        "os.write(int(sys.argv[2]), struct.pack('>I', len(payload)) + payload)\n"
        "def f(x):\n    return x\n",
        IDENTITY,
        "hash flood",
    ),
    # a key of 100 shared pairs: 2**100 steps to hash, holding the GIL (the parent would build the set)
    "set_of_a_key_of_shared_pairs": (
        "t = ()\nfor _ in range(100):\n    t = (t, t)\n"
        "class S:\n    def __reduce__(self):\n        return (set, ([t],))\n"
        "def f(x):\n    return S()\n",
        IDENTITY,
        "costs more than",
    ),
    # a frame written by hand: a dict keyed by 300,000 nested tuples (hashing it overflowed the C stack)
    "frame_with_a_deep_key": (
        "import os, struct, sys\n"
        "payload = b'\\x80\\x02})' + b'\\x85' * 300_000 + b'K\\x00s.'\n"
        "os.write(int(sys.argv[2]), struct.pack('>I', len(payload)) + payload)\n"
        "def f(x):\n    return x\n",
        IDENTITY,
        "costs more than",
    ),
    # plain data all through: a list, which the set_equal oracle turns into a set
    "list_of_colliding_ints_for_set_equal": (
        COLLIDING + "def f(x):\n    return [k * M for k in range(1, 50_000)]\n",
        CodeTest(args=[1], expected=[1, 2], oracle="set_equal"),
        "hash flood",
    ),
}


@pytest.mark.parametrize("name", sorted(TRAINER_BOMBS))
def test_a_value_that_would_cost_the_trainer_more_than_its_pickle_is_refused(sandbox, canary_dir, name):
    """Decoding and judging run in the trainer, beyond the program's memory and time limits: a value that
    would make them allocate gigabytes, probe N**2 times or hash a key for ever (or past the C stack) is
    refused as it is read, and fails."""
    program, test, reason = TRAINER_BOMBS[name]
    result = contained(sandbox, program, canary_dir, tests=(test,))
    assert result.passed == 0 and not result.ok
    assert reason in (result.error or ""), (result.status, result.error)


def test_a_deep_directory_tree_is_removed_and_costs_no_verdict(sandbox, canary_dir):
    """shutil.rmtree recursed once per level: 3,000 nested directories raised a RecursionError out of
    run_many, and the whole batch (an honest sample's verdict too) was lost."""
    deep = (
        "import os\nprint(os.getcwd(), flush=True)\n"
        "for _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\n"
        "def f(x):\n    return x\n"
    )
    honest, tree = sandbox.run_many(
        [ProgramJob("def f(x):\n    return x\n", [IDENTITY], "f"), ProgramJob(deep, [IDENTITY], "f")]
    )
    assert honest.status == tree.status == "correct", (honest.error, tree.error)
    assert not Path(tree.stdout_tail.split()[0]).exists()
    contained(sandbox, deep, canary_dir)  # and nothing else of the host was touched


# ---- a read-only world -------------------------------------------------------------------------------


@pytest.fixture
def host_unix_socket():
    """A listening unix socket anyone may connect to, in a world-writable directory of the host's /tmp."""
    directory = Path(tempfile.mkdtemp(prefix="planlift-socket-"))
    directory.chmod(0o777)
    path = directory / "service.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    path.chmod(0o777)
    server.listen(4)
    server.settimeout(0.2)
    yield path, server
    server.close()
    path.unlink()
    directory.rmdir()


def test_host_unix_socket_is_unreachable(sandbox, canary_dir, host_unix_socket):
    needs(sandbox, "world")
    path, server = host_unix_socket
    program = (
        f"import socket\ndef f(x):\n    s = socket.socket(socket.AF_UNIX)\n    s.connect({str(path)!r})\n"
        "    s.sendall(b'exfiltrated')\n    return x\n"
    )
    result = contained(sandbox, program, canary_dir)
    assert result.status == "runtime_error" and "FileNotFoundError" in (result.error or "")
    with pytest.raises(TimeoutError):
        server.accept()


def test_another_users_file_in_tmp_is_untouched(sandbox, canary_dir):
    needs(sandbox, "world")
    directory = Path(tempfile.mkdtemp(prefix="planlift-shared-"))
    directory.chmod(0o777)
    victim, doomed = directory / "victim.txt", directory / "doomed.txt"
    for path in (victim, doomed):
        path.write_text("intact\n")
        path.chmod(0o666)
    program = (
        f"import os\ndef f(x):\n    open({str(victim)!r}, 'w').write('owned')\n    os.remove({str(doomed)!r})\n"
        "    return x\n"
    )
    try:
        result = contained(sandbox, program, canary_dir)
        assert result.status == "runtime_error" and "FileNotFoundError" in (result.error or "")
        assert victim.read_text() == doomed.read_text() == "intact\n"
    finally:
        for path in (victim, doomed):
            path.unlink()
        directory.rmdir()


def test_the_reference_solutions_are_out_of_reach(sandbox, canary_dir):
    """The vendored data holds every reference solution (and the cache every expected output): a program
    that could open them could be judged correct without solving anything. Code tasks refuse a sandbox
    without this world unless told otherwise (task.allow_host_filesystem)."""
    needs(sandbox, "world")
    root = Path(__file__).resolve().parents[2]
    targets = [root / "data" / "mbpp" / "mbpp.jsonl", root / "data" / "humaneval" / "HumanEval.jsonl.gz"]
    assert all(path.is_file() for path in targets)
    program = (
        f"TARGETS = {[str(t) for t in targets]!r}\n"
        "def f(x):\n    found = []\n    for path in TARGETS:\n"
        "        try:\n            found.append(len(open(path, 'rb').read(100)))\n"
        "        except OSError as error:\n            found.append(type(error).__name__)\n"
        "    print(found)\n    return found\n"
    )
    result = contained(sandbox, program, canary_dir, tests=[CodeTest(args=[1], expected=[100, 100])])
    assert result.status == "failed_tests"
    assert ast.literal_eval(result.stdout_tail.strip()) == ["FileNotFoundError", "FileNotFoundError"]


def test_answers_inside_the_read_only_world_are_hidden(sandbox, canary_dir, tmp_path, monkeypatch):
    """A checkout under a bound root (/usr/src/app, as official python images put it) showed its data to
    programs: a code task hides its data and its expected outputs there under an empty tmpfs."""
    needs(sandbox, "world")
    try:
        checkout = Path(tempfile.mkdtemp(prefix="planlift-checkout-", dir="/usr/local/share"))
    except OSError:
        pytest.skip("/usr/local/share is not writable here")
    try:
        checkout.chmod(0o755)
        for part in ("data", "cache/code_expected"):
            (checkout / part).mkdir(parents=True)
            (checkout / part / "answers.txt").write_text("42")
            (checkout / part).chmod(0o755)
            (checkout / part / "answers.txt").chmod(0o644)
        reads = [str(checkout / part / "answers.txt") for part in ("data", "cache/code_expected")]
        program = (
            f"PATHS = {reads!r}\n"
            "def f(x):\n    found = []\n    for path in PATHS:\n"
            "        try:\n            found.append(open(path).read())\n"
            "        except OSError as error:\n            found.append(type(error).__name__)\n"
            "    print(found)\n    return x\n"
        )
        shown = contained(sandbox, program, canary_dir)
        assert ast.literal_eval(shown.stdout_tail.strip()) == ["42", "42"]  # the world holds them
        monkeypatch.setenv("PLANLIFT_DATA", str(checkout / "data"))
        task = MBPPTask(sandbox=Sandbox(limits=LIMITS, workers=1), cache_dir=str(checkout / "cache"))
        hidden = contained(task.sandbox, program, canary_dir)
        assert ast.literal_eval(hidden.stdout_tail.strip()) == ["FileNotFoundError", "FileNotFoundError"]
        with pytest.raises(ConfigError, match="cannot be hidden"):
            sandbox.isolation.hiding(["/usr"])
    finally:
        shutil.rmtree(checkout)


def test_the_world_is_read_only_and_small(sandbox, canary_dir):
    needs(sandbox, "world")
    prefix = Path(sandbox.isolation.python).parent.parent
    above = [str(p) for p in reversed(prefix.parents[:-1]) if p.parts[1] not in ("usr", "etc")]
    program = (
        f"import os\nABOVE = {above!r}\n"
        "def f(x):\n    report = {'root': sorted(os.listdir('/')), 'above': [os.listdir(d) for d in ABOVE]}\n"
        "    targets = {'etc': '/etc/planlift-owned', 'usr': '/usr/planlift-owned', 'tmp': '/tmp/mine',\n"
        "               'workdir': os.getcwd() + '/mine'}\n"
        "    for name, path in targets.items():\n"
        "        try:\n            open(path, 'w').write('x')\n            report[name] = 'written'\n"
        "        except OSError as error:\n            report[name] = type(error).__name__\n"
        "    print(report)\n    return x\n"
    )
    result = contained(sandbox, program, canary_dir)
    report = ast.literal_eval(result.stdout_tail.strip())
    assert result.ok
    assert set(report["root"]) <= {
        "usr",
        "etc",
        "bin",
        "sbin",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "proc",
        "dev",
        "tmp",
        prefix.parts[1],  # when the interpreter lies elsewhere (pyenv's under /root): its prefix only
    }
    below = [Path(d).name for d in above[1:]] + [prefix.name]
    assert report["above"] == [[name] for name in below]
    assert {report["etc"], report["usr"]} <= {"OSError", "PermissionError"}  # EROFS or EACCES
    assert report["tmp"] == report["workdir"] == "written"
    assert not Path("/tmp/mine").exists() and not Path("/etc/planlift-owned").exists()
