"""The code that runs inside the sandboxed process (standard library only; passed to `python -c`).

argv: <job pickle path> <result fd>. It reads and deletes the job, lowers its own rlimits, then runs the
untrusted program and calls it on each test's arguments. It never sees an expected output and never
decides whether a test passed: it reports what happened, as frames on the result fd (a 4-byte big-endian
length, then a pickled dict of plain data):
  {"event": "start"} | {"event": "syntax", "error"} | {"event": "program", "outcome", "error"}
  {"event": "test", "i", "outcome", "seconds", "error", "output"} | {"event": "done"}
outcome: returned | error | timeout | memory (plus fail: an assert snippet's AssertionError, record mode).
output: the returned value pickled on its own (None when it is not plain data or is too large). The parent
decodes it with a plain-data unpickler and judges it against the expected value, which stays in the parent.

Record mode (reference solutions only, trusted): assert snippets run with the entry point wrapped by a spy
that reports each top-level call the snippet makes (its call site, arguments, output and time), which is
how assert-style tests are converted into call tests with data (`planlift.sandbox.conversion`).
"""

import copy
import io
import os
import pickle
import resource
import signal
import struct
import sys
import time


class _Timeout(BaseException):
    """Raised by the per-test timer (a BaseException, so `except Exception` in programs lets it through)."""


class _CappedSink(io.TextIOBase):
    """Stands in for sys.stdout / sys.stderr: keeps the last `cap` characters, discards the rest."""

    def __init__(self, cap):
        self.cap = cap
        self.tail = ""

    def write(self, text):
        text = str(text)
        self.tail = (self.tail + text)[-self.cap :]
        return len(text)

    def writable(self):
        return True


def _on_alarm(signum, frame):
    raise _Timeout()


class _timer:
    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        return False


def _set_limits(limits):
    mib = 1024 * 1024
    wanted = {
        resource.RLIMIT_CPU: int(limits["cpu_seconds"]),
        resource.RLIMIT_AS: int(limits["memory_mb"] * mib),
        resource.RLIMIT_FSIZE: int(limits["file_size_mb"] * mib),
        resource.RLIMIT_NOFILE: int(limits["max_open_files"]),
        resource.RLIMIT_CORE: 0,
    }
    if limits.get("max_processes") is not None:
        wanted[resource.RLIMIT_NPROC] = int(limits["max_processes"])
    for kind, value in wanted.items():
        # soft = hard: the program cannot raise them again
        resource.setrlimit(kind, (value, value))


def _plain(value):
    """dict subclasses (Counter, OrderedDict, defaultdict) as dicts: they compare equal to them."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_plain(v) for v in value)
    return value


def _encode(value, max_bytes):
    """The value pickled on its own, or None (not picklable, or larger than max_bytes)."""
    try:
        blob = pickle.dumps(_plain(value), protocol=4)
    except BaseException:
        return None
    return blob if len(blob) <= max_bytes else None


def _describe(error):
    try:
        return (type(error).__name__ + ": " + str(error))[:300]
    except BaseException:
        return type(error).__name__


def _site(frame):
    """Where a call came from: (line, end line, column, end column) in an assert snippet, else None."""
    code = frame.f_code
    if code.co_filename != "<test>":
        return None
    if hasattr(code, "co_positions"):
        positions = list(code.co_positions())
        index = frame.f_lasti // 2
        if 0 <= index < len(positions):
            return tuple(positions[index])
    return (frame.f_lineno, None, None, None)


def _spy(function, calls, max_bytes):
    """`function`, reporting each call that does not come from inside another call."""
    depth = [0]

    def spy(*args, **kwargs):
        if depth[0]:
            return function(*args, **kwargs)
        site = _site(sys._getframe(1))
        arguments = _encode(list(args), max_bytes)  # before the call: it may change them in place
        depth[0] += 1
        start = time.perf_counter()
        try:
            out = function(*args, **kwargs)
        finally:
            depth[0] -= 1
        seconds = time.perf_counter() - start
        calls.append([site, arguments, bool(kwargs), _encode(out, max_bytes), seconds])
        return out

    return spy


def main():
    job_path, result_fd = sys.argv[1], int(sys.argv[2])
    with open(job_path, "rb") as handle:
        job = pickle.load(handle)
    os.unlink(job_path)
    channel = os.fdopen(result_fd, "wb")
    max_bytes = job["max_output_bytes"]

    def emit(**event):
        payload = pickle.dumps(event, protocol=4)
        channel.write(struct.pack(">I", len(payload)) + payload)
        channel.flush()

    _set_limits(job["limits"])
    cap = job["limits"]["output_chars"]
    real_out, real_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _CappedSink(cap), _CappedSink(cap)
    sys.stdin = io.StringIO("")
    emit(event="start")

    record = job["record"]
    try:
        code = compile(job["program"], "<program>", "exec")
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as error:
        emit(event="syntax", error=_describe(error))
        code = None
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    loaded = code is not None
    if loaded:
        outcome, message = "returned", None
        try:
            with _timer(job["load_timeout"]):
                exec(code, namespace)
        except _Timeout:
            outcome, message = "timeout", "program did not finish loading"
        except MemoryError as error:
            outcome, message = "memory", _describe(error)
        except BaseException as error:
            outcome, message = "error", _describe(error)
        emit(event="program", outcome=outcome, error=message)
        loaded = outcome == "returned"
    if loaded:
        entry = job["entry_point"]
        for index, test in enumerate(job["tests"]):
            start = time.perf_counter()
            outcome, message, output, calls = "returned", None, None, None
            try:
                with _timer(test["timeout"] or job["test_timeout"]):
                    if test["code"] is not None:  # record mode only (the runner refuses it otherwise)
                        calls = []
                        real = namespace[entry]
                        namespace[entry] = _spy(real, calls, max_bytes)
                        try:
                            exec(compile(test["code"], "<test>", "exec"), namespace)
                        finally:
                            namespace[entry] = real
                    else:
                        output = _encode(namespace[entry](*copy.deepcopy(test["args"])), max_bytes)
            except _Timeout:
                outcome, message = "timeout", "test exceeded its time limit"
            except MemoryError as error:
                outcome, message = "memory", _describe(error)
            except AssertionError as error:
                outcome, message = "fail", _describe(error)
            except BaseException as error:
                outcome, message = "error", _describe(error)
            event = {"i": index, "outcome": outcome, "seconds": time.perf_counter() - start}
            event.update(error=message, output=output)
            if record and calls is not None:
                event["calls"] = calls
            emit(event="test", **event)
            if outcome in ("timeout", "memory"):
                break
    emit(event="done")
    real_out.write(sys.stdout.tail)
    real_err.write(sys.stderr.tail)
    real_out.flush()
    real_err.flush()
    # skip interpreter shutdown: atexit handlers and finalizers belong to the program
    os._exit(0)


main()
