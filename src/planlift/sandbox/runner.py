"""Run untrusted Python programs and their tests, each in its own contained process.

What one run gets:
- its own process (a new session and process group) launched from a fresh, empty temporary working
  directory that is deleted afterwards; where the machine allows (`planlift.sandbox.isolation`), new
  network, PID and mount namespaces and an unprivileged uid of its own;
- rlimits set before the program's first line: CPU seconds, address space, file size, number of
  processes, open files, no core dumps;
- a wall-clock timeout after which the whole process group is SIGKILLed (with a PID namespace, every
  process the program started dies with it, even those that left the group);
- a minimal environment (PATH, HOME/TMPDIR = the working dir, LANG, PYTHONHASHSEED=0): no inherited
  variables, so no tokens or secrets; stdin is empty;
- stdout/stderr capped: `print` goes to an in-process buffer that keeps the tail, raw writes go to
  files capped by RLIMIT_FSIZE (a flood is killed by SIGXFSZ);
- results through a separate file descriptor; tests the process never reported count as failed, so
  exiting early (sys.exit, os._exit, killing itself) never passes a test.

What it does NOT protect against:
- a program that deliberately forges the harness's result protocol (tests run in the program's own
  interpreter, as in the HumanEval / EvalPlus harnesses): this is a guard against accidents and
  resource abuse by model-written code, not a security boundary against a targeted attacker;
- without namespaces (mode "none"): network access, and signals/files of the caller's own uid;
- memory beyond RLIMIT_AS x max_processes, disk filled by many files below the size limit within
  the time limit (files the sandbox uid leaves in /tmp, /var/tmp and /dev/shm are removed afterwards),
  CPU time of other tenants (no cgroups), kernel exploits.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import queue
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from planlift.errors import ConfigError
from planlift.sandbox import isolation as isolation_module
from planlift.sandbox.records import Limits, ProgramJob, SandboxResult

log = logging.getLogger(__name__)

HARNESS_SOURCE = (Path(__file__).parent / "harness.py").read_text()
_SHARED_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
_ALLOWED_OUTPUT_TYPES = {("builtins", name) for name in ("set", "frozenset", "complex", "bytearray", "slice")}


class _OutputUnpickler(pickle.Unpickler):
    """Reference outputs come back pickled: allow plain data only, never arbitrary classes."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_OUTPUT_TYPES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"output of type {module}.{name} is not plain data")


class Sandbox:
    """Runs programs with limits, `workers` at a time.

    Args:
        limits: Limits (or a dict of its fields).
        workers: programs run in parallel by `run_many` (each its own process).
        isolation: auto | namespaces+uid | namespaces | none (`planlift.sandbox.isolation`).
        python: interpreter for the programs (None = this one, or the system one of the same version
            when this one is unreachable for an unprivileged uid).
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
        start = time.perf_counter()
        uid = self.uid_base + slot if self.isolation.drops_uid else None
        workdir = Path(tempfile.mkdtemp(prefix="planlift-sandbox-"))
        job_path, record_path = workdir / ".job.pkl", workdir / ".outputs.pkl"
        try:
            with contextlib.ExitStack() as stack:
                # results, stdout, stderr: anonymous files the program cannot find by name
                results_file, stdout_file, stderr_file = (
                    stack.enter_context(tempfile.TemporaryFile()) for _ in range(3)
                )
                job_path.write_bytes(pickle.dumps(self._job_payload(job, limits, record_path, uid)))
                if uid is not None:
                    for path in (workdir, job_path):
                        os.chown(path, uid, uid)
                command = [
                    *self.isolation.command(uid),
                    self.isolation.python,
                    "-s",
                    "-c",
                    HARNESS_SOURCE,
                    str(job_path),
                    str(results_file.fileno()),
                ]
                timed_out, exit_code = self._execute(
                    command, workdir, results_file, stdout_file, stderr_file, limits
                )
                result = self._result(
                    job, results_file, stdout_file, stderr_file, timed_out, exit_code, limits
                )
                result.outputs = self._read_outputs(record_path) if job.record_outputs else None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            if uid is not None:
                _remove_files_of(uid)
        result.seconds = time.perf_counter() - start
        return result

    def _job_payload(self, job: ProgramJob, limits: Limits, record_path: Path, uid: int | None) -> dict:
        limit_values = asdict(limits)
        if uid is None and os.geteuid() != 0:
            # RLIMIT_NPROC counts every process of the uid: leave room for the caller's own
            limit_values["max_processes"] = _processes_of(os.getuid()) + limits.max_processes
        elif uid is None:
            limit_values["max_processes"] = None  # root ignores RLIMIT_NPROC
        return {
            "program": job.program,
            "tests": [test.as_job() for test in job.tests],
            "entry_point": job.entry_point,
            "stop_on_failure": job.stop_on_failure,
            "record_outputs": job.record_outputs,
            "record_path": str(record_path),
            "limits": limit_values,
            "test_timeout": limits.test_timeout,
            "load_timeout": limits.load_timeout,
            "max_output_bytes": self.max_output_bytes,
        }

    def _execute(self, command, workdir, results_file, stdout_file, stderr_file, limits):
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",  # set iteration order, so reference outputs are reproducible
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONIOENCODING": "utf-8",
        }
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout_file,
            stderr=stderr_file,
            pass_fds=(results_file.fileno(),),
            start_new_session=True,
        )
        timed_out = False
        try:
            process.wait(timeout=limits.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            # Kill the launcher's children first: under `unshare --fork` that is the namespace's init,
            # which the launcher then reaps (killed together, the init would be left a zombie). Its
            # death takes every process of the PID namespace with it.
            for child in _children(process.pid):
                _kill(child)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        finally:
            # the whole group, also after a normal exit: nothing the program started outlives it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return timed_out, process.returncode

    @staticmethod
    def _read_outputs(record_path: Path) -> list[tuple[bool, Any]] | None:
        """[(readable, output)] per test: outputs are pickled one by one and read back as plain data."""
        try:
            with record_path.open("rb") as handle:
                blobs = _OutputUnpickler(handle).load()
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as error:
            log.warning("sandbox: reference outputs unreadable (%s)", error)
            return None
        outputs = []
        for blob in blobs:
            if not isinstance(blob, bytes):
                outputs.append((False, None))
                continue
            try:
                outputs.append((True, _OutputUnpickler(io.BytesIO(blob)).load()))
            except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError):
                outputs.append((False, None))
        return outputs

    def _result(self, job, results_file, stdout_file, stderr_file, timed_out, exit_code, limits):
        events = _read_events(results_file)
        total = len(job.tests)
        outcomes: dict[int, str] = {}
        seconds: dict[int, float] = {}
        error = None
        syntax = program_failed = done = False
        memory = False
        program_outcome = None
        for event in events:
            kind = event.get("event")
            if kind == "syntax":
                syntax, error = True, event.get("error")
            elif kind == "program":
                program_outcome = event.get("outcome")
                if program_outcome != "pass":
                    program_failed = True
                    error = event.get("error") or program_outcome
            elif kind == "test":
                index = event.get("i")
                if isinstance(index, int) and 0 <= index < total:
                    outcomes[index] = str(event.get("outcome"))
                    seconds[index] = float(event.get("seconds") or 0.0)
                    if error is None and event.get("error"):
                        error = event["error"]
            elif kind == "done":
                done = True
        memory = program_outcome == "memory" or "memory" in outcomes.values()
        timed_out = timed_out or program_outcome == "timeout" or "timeout" in outcomes.values()
        passed = sum(outcome == "pass" for outcome in outcomes.values())
        failed = tuple(i for i in range(total) if outcomes.get(i) != "pass")
        if syntax:
            status = "syntax_error"
        elif total == 0 and not job.record_outputs:
            status = "no_tests" if done else "runtime_error"
        elif passed == total and done:
            status = "correct"
        elif timed_out:
            status = "timeout"
        elif program_failed or not done or any(o in ("error", "memory") for o in outcomes.values()):
            status = "runtime_error"
            if not done and error is None:
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
            stdout_tail=_tail(stdout_file, limits.output_chars),
            stderr_tail=_tail(stderr_file, limits.output_chars),
            network_isolated=self.isolation.network_isolated,
            isolation=self.isolation.mode,
            test_seconds=seconds,
        )


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _read_events(handle) -> list[dict]:
    handle.seek(0)
    events = []
    for line in handle.read().decode("utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _tail(handle, chars: int) -> str:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - 4 * chars))
    return handle.read().decode("utf-8", errors="replace")[-chars:]


def _processes_of(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) owned by `uid`."""
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(entry / "task"))
            except OSError:
                continue
    return count


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
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()
            except OSError:
                continue
