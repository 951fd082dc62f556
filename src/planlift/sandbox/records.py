"""What goes into the sandbox (limits, a program and its tests) and what comes out (a result record)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from planlift.errors import ConfigError
from planlift.sandbox.oracles import ORACLES, WRAPS
from planlift.tasks.base import SANDBOX_ERROR

# Program statuses, as the code reward expects them (planlift.rewards.formulas.CODE_STATUS_BONUS).
# sandbox_error: the harness never reported its start (the interpreter or the isolation failed to launch),
# so the program never ran: no verdict on it (the reward masks it, reference runs stop).
STATUSES = ("correct", "failed_tests", "runtime_error", "timeout", "syntax_error", "no_tests", SANDBOX_ERROR)


@dataclass(frozen=True)
class Limits:
    """Resource limits of one program run.

    timeout: wall-clock seconds for the whole process (then its process group is killed);
    test_timeout: seconds per test (a timer inside the process; the wall clock is the backstop);
    load_timeout: seconds for the program's top-level code; cpu_seconds: RLIMIT_CPU;
    memory_mb: RLIMIT_AS (address space); file_size_mb: RLIMIT_FSIZE (also caps stdout/stderr files);
    max_processes: RLIMIT_NPROC (counts the sandbox user's processes and threads);
    max_open_files: RLIMIT_NOFILE; output_chars: the stdout/stderr tail kept.
    """

    timeout: float = 20.0
    test_timeout: float = 2.0
    load_timeout: float = 5.0
    cpu_seconds: int = 30
    memory_mb: int = 1024
    file_size_mb: int = 16
    max_processes: int = 8
    max_open_files: int = 64
    output_chars: int = 2000

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if value <= 0:
                raise ConfigError(f"sandbox limit {key} must be > 0, got {value}")


@dataclass(frozen=True)
class CodeTest:
    """One test: a call `entry_point(*args)` whose output is judged in the parent against `expected` by
    `oracle` (`planlift.sandbox.oracles`: equal | set_equal | truthy | poly_root | is), after `wrap`,
    with float tolerances `atol` / `rtol`; `timeout` overrides Limits.test_timeout.

    `code` is an assert snippet run in the program's own namespace. The program could forge its
    outcome, so snippets run only in record mode (reference solutions), where they are converted into
    call tests (`planlift.sandbox.conversion`)."""

    code: str | None = None
    args: Sequence[Any] | None = None
    expected: Any = None
    oracle: str = "equal"
    atol: float = 0.0
    rtol: float = 0.0
    wrap: str | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.oracle not in ORACLES:
            raise ConfigError(f"CodeTest.oracle must be one of {list(ORACLES)}, got {self.oracle!r}")
        if self.wrap is not None and self.wrap not in WRAPS:
            raise ConfigError(f"CodeTest.wrap must be one of {sorted(WRAPS)}, got {self.wrap!r}")
        if (self.code is None) == (self.args is None):
            raise ConfigError("a CodeTest has either `code` (an assert snippet) or `args` (a call)")

    def as_job(self) -> dict[str, Any]:
        """What the sandboxed process gets: the call or snippet, never the expected value."""
        return {
            "code": self.code,
            "args": list(self.args) if self.args is not None else None,
            "timeout": self.timeout,
        }


@dataclass(frozen=True)
class ProgramJob:
    """A program and its tests. `stop_on_failure`: stop at the first failing test (binary success);
    `record_outputs`: return the outputs instead of judging them (reference solutions; assert snippets
    report the calls they make, see `planlift.sandbox.conversion`). `timeout`: the whole run's wall-clock
    limit when it must exceed Limits.timeout (a problem whose reference itself needs longer over all its
    tests); RLIMIT_CPU is raised to match."""

    program: str
    tests: Sequence[CodeTest] = ()
    entry_point: str | None = None
    stop_on_failure: bool = False
    record_outputs: bool = False
    timeout: float | None = None


@dataclass
class SandboxResult:
    """The outcome of one program run.

    status: correct | failed_tests | runtime_error | timeout | syntax_error | no_tests | sandbox_error
        (the harness never started: not a verdict on the program).
    failed_tests: indices of tests that did not pass (including tests never reached).
    network_isolated: the program ran in its own network namespace (False: it had the host's network).
    isolation: the mode it ran under (`planlift.sandbox.isolation`).
    """

    status: str
    passed: int
    total: int
    failed_tests: tuple[int, ...] = ()
    tests_run: int = 0  # tests the process reported (fewer than total after an early exit or a kill)
    timed_out: bool = False
    memory_exceeded: bool = False
    exit_code: int | None = None
    error: str | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    seconds: float = 0.0
    network_isolated: bool = False
    isolation: str = ""
    filesystem_isolated: bool = False  # it saw a read-only world with a private /tmp
    outputs: list[bytes | None] | None = None  # record_outputs: each call test's pickled output
    calls: dict[int, list[Any]] = field(default_factory=dict)  # record_outputs: each snippet's calls
    test_seconds: dict[int, float] = field(default_factory=dict)

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def ok(self) -> bool:
        return self.status == "correct"
