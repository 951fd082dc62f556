"""Run untrusted Python programs and their tests, each in its own contained process.

What one run gets:
- its own process (a new session and process group) launched from a fresh, empty temporary working
  directory that is deleted afterwards; where the machine allows (`planlift.sandbox.isolation`), new
  network, PID and mount namespaces and an unprivileged uid of its own;
- with bubblewrap (modes bwrap+uid / bwrap): a read-only world. Its root holds only read-only binds of
  /usr, /etc, the /bin /sbin /lib* links and the interpreter's prefix, a fresh /proc, a minimal /dev,
  private /tmp and /dev/shm; its working directory is the only writable host path, and no host unix
  socket is reachable (the host's /tmp, /run, /var, /home are absent);
- rlimits set before the program's first line: CPU seconds, address space, file size, number of
  processes, open files, no core dumps;
- a wall-clock timeout after which the whole process group is SIGKILLed (with a PID namespace, every
  process the program started dies with it, even those that left the group);
- a minimal environment (PATH, HOME/TMPDIR = the working dir, LANG, PYTHONHASHSEED=0): no inherited
  variables, so no tokens or secrets; stdin is empty;
- the interpreter without `site` (`-s -S`): the standard library only (no site-packages, and none of their
  .pth files runs code before the limits are set), and a faster start: the interpreter under bwrap starts
  in 15 ms instead of 55 ms here (`site` imported certifi through a .pth file), a one-test run takes ~40 ms
  instead of ~57 ms. `exit()` / `quit()` are `site`'s, so a program that calls them gets a NameError;
  `sys.exit` works;
- stdout/stderr capped: `print` goes to an in-process buffer that keeps the tail, raw writes go to
  files capped by RLIMIT_FSIZE (a flood is killed by SIGXFSZ).

How a test passes: the sandboxed process gets each test's arguments, never its expected value, and
reports what the function returned, pickled, over a pipe (`planlift.sandbox.harness`). The parent decodes
it as plain data only (`planlift.sandbox.protocol`: no class is ever looked up, so an object with its own
`__eq__`, an int subclass or a proxy is not data and fails) and judges it against the expected value
(`planlift.sandbox.oracles`). Nothing the process writes can mark a test as passed: a forged or garbled
report is at best a returned value that is judged like any other, or it stops the run; tests the process
never reported count as failed, so exiting early never passes a test. Assert-style tests run only while
a reference solution is recorded, and are converted into call tests (`planlift.sandbox.conversion`).

What it does NOT protect against:
- a program that finds the right answers some other way than the intended one (hard-coding the
  public test inputs it was shown, for example): the verdict is about outputs, not about method;
- without bubblewrap (modes namespaces+uid / namespaces): the host's filesystem is visible; with a uid
  of its own the program can still write world-writable files, reach world-writable unix sockets and
  read world-readable files (files it leaves in /tmp, /var/tmp and /dev/shm are removed afterwards);
  without namespaces (mode "none"): network access, and signals/files of the caller's own uid;
- memory beyond RLIMIT_AS x max_processes, disk filled by many files below the size limit within the
  time limit (in the working directory, or the private /tmp, which is memory), CPU time of other
  tenants (no cgroups), kernel exploits.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import queue
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from planlift.errors import ConfigError
from planlift.sandbox import isolation as isolation_module
from planlift.sandbox import oracles
from planlift.sandbox.protocol import FrameReader
from planlift.sandbox.records import SANDBOX_ERROR, Limits, ProgramJob, SandboxResult

log = logging.getLogger(__name__)

HARNESS_SOURCE = (Path(__file__).parent / "harness.py").read_text()
_SHARED_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
_REPORTED_OUTCOMES = ("returned", "fail", "error", "timeout", "memory")


class Sandbox:
    """Runs programs with limits, `workers` at a time.

    Args:
        limits: Limits (or a dict of its fields).
        workers: programs run in parallel by `run_many` (each its own process).
        isolation: auto | namespaces+uid | namespaces | none (`planlift.sandbox.isolation`).
        python: interpreter for the programs (None = this one, or the system one of the same version
            when an unprivileged uid cannot run this one: `isolation.runnable_in_view`).
        uid_base: first uid of the pool's slots in mode namespaces+uid (slot i runs as uid_base + i).
        max_output_bytes: a recorded reference output larger than this (pickled) is not kept.
    """

    def __init__(
        self,
        limits: Limits | dict[str, Any] | None = None,
        workers: int = 2,
        isolation: str = "auto",
        python: str | None = None,
        uid_base: int | None = None,
        max_output_bytes: int = 64 * 2**20,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"sandbox.workers must be >= 1, got {workers}")
        if isolation not in isolation_module.MODES:
            raise ConfigError(
                f"sandbox.isolation must be one of {list(isolation_module.MODES)}, got {isolation!r}"
            )
        self.limits = limits if isinstance(limits, Limits) else Limits(**(limits or {}))
        self.workers = workers
        self.max_output_bytes = max_output_bytes
        self.isolation = isolation_module.detect(isolation, python)
        # distinct uids per process using the sandbox, so two pools never share a slot's uid
        self.uid_base = uid_base if uid_base is not None else 200_000 + (os.getpid() % 50_000) * 64
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(workers):
            self._slots.put(slot)

    # ---- public -----------------------------------------------------------------------------------

    def run(self, job: ProgramJob, limits: Limits | None = None) -> SandboxResult:
        """One program (blocks for a free slot)."""
        slot = self._slots.get()
        try:
            return self._run(job, limits or self.limits, slot)
        finally:
            self._slots.put(slot)

    def run_many(self, jobs: Sequence[ProgramJob], limits: Limits | None = None) -> list[SandboxResult]:
        """Many programs, `workers` at a time; results in job order."""
        if len(jobs) <= 1 or self.workers == 1:
            return [self.run(job, limits) for job in jobs]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda job: self.run(job, limits), jobs))

    # ---- one run ----------------------------------------------------------------------------------

    def _run(self, job: ProgramJob, limits: Limits, slot: int) -> SandboxResult:
        if not job.record_outputs and any(test.code is not None for test in job.tests):
            raise ConfigError(
                "assert snippets (CodeTest.code) run only to record a reference solution's calls: a "
                "program under test could forge their outcome. Convert them into call tests first "
                "(planlift.sandbox.conversion, done by the code tasks)"
            )
        if job.timeout is not None and job.timeout > limits.timeout:  # a problem whose tests need longer
            limits = replace(
                limits, timeout=job.timeout, cpu_seconds=max(limits.cpu_seconds, math.ceil(job.timeout))
            )
        start = time.perf_counter()
        uid = self.uid_base + slot if self.isolation.drops_uid else None
        workdir = Path(tempfile.mkdtemp(prefix="planlift-sandbox-"))
        job_path = workdir / ".job.pkl"
        collector = _Collector(job)
        try:
            with contextlib.ExitStack() as stack:
                # stdout, stderr: anonymous files the program cannot find by name
                stdout_file, stderr_file = (stack.enter_context(tempfile.TemporaryFile()) for _ in range(2))
                job_path.write_bytes(pickle.dumps(self._job_payload(job, limits, uid)))
                if uid is not None:
                    for path in (workdir, job_path):
                        os.chown(path, uid, uid)
                read_end, write_end = os.pipe()
                stack.callback(_close_quietly, read_end)
                command = [
                    *self.isolation.command(uid, workdir),
                    self.isolation.python,
                    "-s",  # no user site-packages
                    "-S",  # no `site`: the standard library only, and no .pth file's code runs in the process
                    "-c",
                    HARNESS_SOURCE,
                    str(job_path),
                    str(write_end),
                ]
                timed_out, exit_code = self._execute(
                    command, workdir, write_end, read_end, collector, stdout_file, stderr_file, limits
                )
                result = collector.result(timed_out, exit_code)
                result.stdout_tail = _tail(stdout_file, limits.output_chars)
                result.stderr_tail = _tail(stderr_file, limits.output_chars)
                if result.status == SANDBOX_ERROR:
                    log.warning("sandbox: %s; stderr: %s", result.error, result.stderr_tail[-500:].strip())
        finally:
            if uid is not None:
                # the kernel tears a PID namespace down after its init is gone, and a fork bomb's last
                # processes were seen in /proc for up to 0.2 s on a loaded machine: the slot's uid is
                # free for the next job (and its RLIMIT_NPROC count) only once they are gone
                _kill_processes_of(uid)
            _remove_tree(workdir)
            if uid is not None and not self.isolation.private_tmp:
                _remove_files_of(uid)
        result.network_isolated = self.isolation.network_isolated
        result.filesystem_isolated = self.isolation.private_tmp
        result.isolation = self.isolation.mode
        result.seconds = time.perf_counter() - start
        return result

    def _job_payload(self, job: ProgramJob, limits: Limits, uid: int | None) -> dict:
        limit_values = asdict(limits)
        if uid is None and os.geteuid() != 0:
            # RLIMIT_NPROC counts every process of the uid: leave room for the caller's own
            limit_values["max_processes"] = _processes_of(os.getuid()) + limits.max_processes
        elif uid is None:
            limit_values["max_processes"] = None  # root ignores RLIMIT_NPROC
        return {
            "program": job.program,
            "tests": [test.as_job() for test in job.tests],  # no expected values
            "entry_point": job.entry_point,
            "record": job.record_outputs,
            "limits": limit_values,
            "test_timeout": limits.test_timeout,
            "load_timeout": limits.load_timeout,
            "max_output_bytes": self.max_output_bytes,
        }

    def _execute(self, command, workdir, write_end, read_end, collector, stdout_file, stderr_file, limits):
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",  # set iteration order, so reference outputs are reproducible
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONIOENCODING": "utf-8",
        }
        try:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout_file,
                stderr=stderr_file,
                pass_fds=(write_end,),
                start_new_session=True,
            )
        finally:
            os.close(write_end)  # the process holds it now: EOF once every process of it is gone
        deadline = time.monotonic() + limits.timeout
        timed_out = False
        try:
            ending, deadline = self._read(read_end, collector, deadline, limits)
            timed_out = ending == "deadline"
            if ending == "end":  # the harness is done (or gone): let it exit by itself
                try:
                    process.wait(timeout=max(0.0, deadline - time.monotonic()) + 0.5)
                except subprocess.TimeoutExpired:
                    timed_out = not collector.finished
        finally:
            if process.poll() is None:
                # Kill the launcher's children first: under a PID namespace that is the namespace's
                # init, which the launcher then reaps (killed together, the init would be left a
                # zombie). Its death takes every process of the PID namespace with it.
                for child in _children(process.pid):
                    _kill(child)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
            # the whole group, also after a normal exit: nothing the program started outlives it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return timed_out, process.returncode

    def _read(
        self, read_end: int, collector: _Collector, deadline: float, limits: Limits
    ) -> tuple[str, float]:
        """Read and judge events until "end" (done, or the channel closed), "stop" (a failure under
        stop_on_failure, or a malformed frame: the process is killed) or the "deadline". Returns the
        ending and the run's deadline, moved by the parent's own time (below).

        Each phase (the program's loading, then each test) is also timed here, from the report that
        began it: the timers inside the process belong to a process the program controls (it can disarm
        them), so a phase that overruns its limit by PHASE_SLACK is judged a timeout and the process
        killed; the wall clock of the whole run stays the last backstop. A phase whose report arrives
        later than VERDICT_SLACK allows is judged a timeout the same way, whatever it reports (with its
        timer disarmed, a test could take up to PHASE_SLACK's 1.5x its limit and pass). A report held
        back and sent with the next one's counts against the earlier phase: the time between them is
        measured from the earlier phase's start.

        The time the parent spends decoding and judging frames is not the program's: meanwhile the
        program waits on a full pipe, or has finished and waits to be read. That time moves the run's
        deadline, up to `limits.timeout` in all, so a program that floods the channel with frames that
        are slow to decode is still cut by 2x its limit. (A phase's clock starts after the frame that
        began it is judged, so it never counts the parent's time.)"""
        reader = FrameReader(max_frame=self.max_output_bytes + 2**16)
        poller = select.poll()  # not select(): a busy training process may hold fds above 1024
        poller.register(read_end, select.POLLIN | select.POLLHUP | select.POLLERR)
        # the running phase, when it began and when its limit runs out
        phase, phase_started, phase_end = None, math.inf, math.inf
        credit = limits.timeout  # the parent's own time that may still move the deadline
        while True:
            now = time.monotonic()
            if now >= deadline:
                return "deadline", deadline
            if now >= phase_end:
                collector.overran(phase)
                return "deadline", deadline
            if not poller.poll(max(1, int((min(deadline, phase_end) - now) * 1000))):
                continue  # the clocks above decide
            chunk = os.read(read_end, 2**20)
            if not chunk:
                return "end", deadline
            judging = time.monotonic()
            ending = self._judge(reader.feed(chunk), reader, collector)
            spent = min(time.monotonic() - judging, credit)
            credit -= spent
            deadline += spent
            if (
                phase is not None
                and collector.reported(phase)
                and judging - phase_started > _allowance(phase, collector, limits, VERDICT_SLACK)
            ):
                collector.overran(phase)
                return "deadline", deadline
            if ending is not None:
                return ending, deadline
            running = collector.running()
            if running != phase:
                phase, phase_started = running, time.monotonic()
                phase_end = (
                    math.inf
                    if phase is None
                    else phase_started + _allowance(phase, collector, limits, PHASE_SLACK)
                )

    @staticmethod
    def _judge(events: list[dict], reader: FrameReader, collector: _Collector) -> str | None:
        """Judge the frames of one chunk: None to read on, or how the run ends ("stop", "end")."""
        for event in events:
            try:
                collector.add(event)
            except Exception as error:  # the program wrote this frame: it never crashes the parent
                collector.channel_error = f"malformed result frame ({type(error).__name__}: {error})"
                return "stop"
            if collector.finished or collector.stop:
                break
        if reader.bad is not None:
            collector.channel_error = reader.bad
            return "stop"
        if collector.stop:
            return "stop"
        return "end" if collector.finished else None


def _seconds(value: Any) -> float:
    """A test's reported duration: the program can write this frame, so anything but a finite number
    >= 0 (a string, NaN, an int too large for a float) counts as 0."""
    if type(value) not in (int, float):
        return 0.0
    try:
        seconds = float(value)
    except OverflowError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds >= 0 else 0.0


PHASE_SLACK = (1.5, 0.5)  # a phase may take 1.5x its limit + 0.5 s (pipes, scheduling) before the kill
VERDICT_SLACK = (1.1, 0.25)  # a phase reported later than 1.1x its limit + 0.25 s is a timeout


def _allowance(
    phase: tuple[str, int], collector: _Collector, limits: Limits, slack: tuple[float, float]
) -> float:
    """How long after its start a phase may take, by `slack` (PHASE_SLACK: before the process is killed;
    VERDICT_SLACK: for its report to count) over its limit: the program's loading, or a test's."""
    if phase[0] == "load":
        limit = limits.load_timeout
    else:
        limit = collector.job.tests[phase[1]].timeout or limits.test_timeout
    return slack[0] * limit + slack[1]


class _Collector:
    """The events of one run, judged as they arrive (expected values never leave the parent)."""

    def __init__(self, job: ProgramJob) -> None:
        self.job = job
        self.total = len(job.tests)
        self.outcomes: dict[int, str] = {}
        self.seconds: dict[int, float] = {}
        self.outputs: list[bytes | None] = [None] * self.total
        self.calls: dict[int, list[Any]] = {}
        self.error: str | None = None
        self.channel_error: str | None = None
        self.syntax = self.program_failed = self.finished = self.stop = self.started = False
        self.program_outcome: str | None = None
        self._pending = 0  # the first test not yet reported

    def running(self) -> tuple[str, int] | None:
        """What the process is doing by its reports: ("load", 0) its program's top level, ("test", i)
        the first test not yet reported, None nothing that has a limit of its own."""
        if not self.started or self.finished or self.syntax or self.program_failed:
            return None
        if self.program_outcome is None:
            return ("load", 0)
        while self._pending < self.total and self._pending in self.outcomes:  # amortised: tests run in order
            self._pending += 1
        return ("test", self._pending) if self._pending < self.total else None

    def reported(self, phase: tuple[str, int]) -> bool:
        """Whether the phase's report has arrived (the program's loading, or the test)."""
        return self.program_outcome is not None if phase[0] == "load" else phase[1] in self.outcomes

    def overran(self, phase: tuple[str, int]) -> None:
        """The phase took longer than its limit allows, by the parent's clock (whatever it reported). Tests
        reported after it, in the same read, are dropped: killed on time, the process would not have run
        them."""
        first_after = 0 if phase[0] == "load" else phase[1] + 1
        for index in [i for i in self.outcomes if i >= first_after]:
            del self.outcomes[index]
            self.seconds.pop(index, None)
            self.calls.pop(index, None)
            self.outputs[index] = None
        if phase[0] == "load":
            self.program_outcome, self.program_failed = "timeout", True
            self.error = "program did not finish loading in time (timed by the sandbox)"
        else:
            self.outcomes[phase[1]] = "timeout"
            self.error = self.error or "test exceeded its time limit (timed by the sandbox)"

    def add(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "start":
            self.started = True
        elif kind == "syntax":
            self.syntax, self.error = True, _text(event.get("error"))
        elif kind == "program":
            self.program_outcome = _text(event.get("outcome"))
            if self.program_outcome != "returned":
                self.program_failed = True
                self.error = _text(event.get("error")) or self.program_outcome
        elif kind == "test":
            self._test(event)
        elif kind == "done":
            self.finished = True

    def _test(self, event: dict) -> None:
        index = event.get("i")
        if type(index) is not int or not 0 <= index < self.total or index in self.outcomes:
            return  # the first report of a test counts
        outcome, error, output = _text(event.get("outcome")), _text(event.get("error")), event.get("output")
        output = output if isinstance(output, bytes) else None
        if outcome not in _REPORTED_OUTCOMES:
            outcome, error = "error", f"unknown test outcome {outcome!r} on the result channel"
        elif outcome == "fail" and not self.job.record_outputs:
            # a call test runs no assert of ours: an AssertionError came from the program, a crash
            outcome = "error"
        elif outcome == "returned":  # only the parent's judgement turns a returned value into a pass
            if self.job.record_outputs:
                outcome = "pass"
                self.outputs[index] = output
                calls = event.get("calls")
                if isinstance(calls, list):
                    self.calls[index] = calls
            else:
                passed, error = oracles.judge(self.job.tests[index], output)
                outcome = "pass" if passed else "fail"
        self.outcomes[index] = outcome
        self.seconds[index] = _seconds(event.get("seconds"))
        if self.error is None and error:
            self.error = error
        if outcome != "pass" and self.job.stop_on_failure:
            self.stop = True

    def result(self, timed_out: bool, exit_code: int | None) -> SandboxResult:
        outcomes, total, job = self.outcomes, self.total, self.job
        memory = self.program_outcome == "memory" or "memory" in outcomes.values()
        timed_out = timed_out or self.program_outcome == "timeout" or "timeout" in outcomes.values()
        passed = sum(outcome == "pass" for outcome in outcomes.values())
        failed = tuple(i for i in range(total) if outcomes.get(i) != "pass")
        error = self.error
        if self.channel_error is not None:
            error = f"{self.channel_error}: the run was stopped"
        finished = self.finished or self.stop  # stopped at the first failure: nothing is missing
        errors = any(outcome in ("error", "memory") for outcome in outcomes.values())
        if not self.started:  # the program never ran: a fault of the sandbox, not of the program
            status = SANDBOX_ERROR
            error = (
                f"the sandbox harness never reported its start (exit code {exit_code}"
                f"{', killed at the time limit' if timed_out else ''}): the program did not run"
            )
        elif self.syntax:
            status = "syntax_error"
        elif self.channel_error is not None:
            status = "runtime_error"
        elif total == 0 and not job.record_outputs:
            status = "no_tests" if finished else "runtime_error"
        elif passed == total and finished:
            status = "correct"
        elif timed_out:
            status = "timeout"
        elif self.program_failed or not finished or errors:
            status = "runtime_error"
            if not finished and error is None:
                error = f"process ended before reporting all tests (exit code {exit_code})"
        elif job.stop_on_failure or len(outcomes) == total:
            status = "failed_tests"
        else:
            status = "runtime_error"
        return SandboxResult(
            status=status,
            passed=passed,
            total=total,
            failed_tests=failed,
            tests_run=len(outcomes),
            timed_out=timed_out,
            memory_exceeded=memory,
            exit_code=exit_code,
            error=error,
            outputs=self.outputs if job.record_outputs else None,
            calls=self.calls,
            test_seconds=dict(self.seconds),
        )


def _text(value: Any) -> str | None:
    return value[:500] if isinstance(value, str) else None


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _tail(handle, chars: int) -> str:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - 4 * chars))
    return handle.read().decode("utf-8", errors="replace")[-chars:]


def _pids_of(uid: int) -> list[int]:
    """Processes owned by `uid`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _kill_processes_of(uid: int, timeout_s: float = 10.0) -> None:
    """SIGKILL every process of `uid` until none is left (or `timeout_s`: then logged)."""
    deadline = time.monotonic() + timeout_s
    while pids := _pids_of(uid):
        if time.monotonic() > deadline:
            log.error(
                "sandbox: %d processes of uid %d survived SIGKILL for %.0f s", len(pids), uid, timeout_s
            )
            return
        for pid in pids:
            _kill(pid)
        time.sleep(0.01)


def _processes_of(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) owned by `uid`."""
    count = 0
    for pid in _pids_of(uid):
        with contextlib.suppress(OSError):  # gone meanwhile
            count += len(os.listdir(f"/proc/{pid}/task"))
    return count


def _remove_tree(path: Path) -> None:
    """Delete a directory the program wrote, never raising. shutil.rmtree recurses once per level (3,000
    nested directories: a RecursionError that escaped the reward step), so what it leaves goes to
    `rm -rf`, which walks the tree with openat; a tree the program made unwritable is opened up first
    (without root, rm cannot empty a directory that denies its owner write access)."""
    with contextlib.suppress(Exception):  # RecursionError: ignore_errors covers OSError only
        shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return
    for attempt in ([], ["chmod", "-R", "u+rwx", "--", str(path)]):
        try:
            if attempt:
                subprocess.run(attempt, capture_output=True, timeout=60, check=False)
            subprocess.run(
                ["rm", "-rf", "--one-file-system", "--", str(path)],
                capture_output=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as error:
            log.error("sandbox: could not remove %s (%s)", path, error)
            return
        if not os.path.lexists(path):
            return
    log.error("sandbox: %s is left behind: rm -rf could not remove it", path)


def _remove_files_of(uid: int) -> None:
    """Delete what the sandbox uid left in the world-writable directories."""
    for directory in _SHARED_TMP_DIRS:
        try:
            entries = list(Path(directory).iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.lstat().st_uid != uid:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    _remove_tree(entry)
                else:
                    entry.unlink()
            except OSError:
                continue
