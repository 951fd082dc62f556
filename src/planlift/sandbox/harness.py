"""The code that runs inside the sandboxed process (standard library only; passed to `python -c`).

argv: <job pickle path> <result fd>. It reads and deletes the job, lowers its own rlimits, then runs the
untrusted program and its tests, writing one JSON line per event to the result fd:
  {"event": "start"} | {"event": "syntax", "error"} | {"event": "program", "outcome", "error"}
  {"event": "test", "i", "outcome", "seconds", "error"} | {"event": "done"}
outcome: pass | fail | error | timeout | memory. A process killed before "done" leaves the missing tests
unreported; the parent counts them as not passed.
"""

import copy
import io
import json
import math
import os
import pickle
import resource
import signal
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


def _close(out, exp, atol):
    if isinstance(out, bool) or isinstance(exp, bool):
        return out == exp
    if isinstance(exp, (int, float)) and isinstance(out, (int, float)):
        if isinstance(exp, float) and math.isnan(exp):
            return isinstance(out, float) and math.isnan(out)
        if isinstance(exp, int) and isinstance(out, int):
            return out == exp
        return abs(out - exp) <= max(atol, 1e-6) + 1e-7 * abs(exp)
    if isinstance(exp, (list, tuple)):
        return (
            type(out) is type(exp) and len(out) == len(exp) and all(map(_close, out, exp, [atol] * len(exp)))
        )
    if isinstance(exp, dict):
        return (
            isinstance(out, dict)
            and out.keys() == exp.keys()
            and all(_close(out[k], exp[k], atol) for k in exp)
        )
    return False


def _judge(out, test):
    oracle, exp, atol = test.get("oracle", "equal"), test.get("expected"), test.get("atol", 0.0)
    if oracle == "set_equal":
        return set(out) == set(exp)
    if oracle == "truthy":  # expected True/False stands for "returns something / returns None"
        return out == exp if isinstance(out, bool) else exp == (out is not None)
    if oracle == "poly_root":  # HumanEval/32: any root of the polynomial is right
        coefficients = test["args"][0]
        return abs(sum(c * out**i for i, c in enumerate(coefficients))) <= max(atol, 1e-6)
    try:
        if out == exp:
            return True
    except Exception:
        return False
    return _close(out, exp, atol)


def _plain(value):
    """dict subclasses (Counter, OrderedDict, defaultdict) as dicts: they compare equal to them."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_plain(v) for v in value)
    return value


def _recorded(out, test, max_bytes):
    """A reference output, pickled on its own (None when it is not plain data or too large)."""
    if test.get("oracle") == "truthy" and not isinstance(out, bool):
        out = out is not None  # match objects are not data; their presence is the answer
    try:
        blob = pickle.dumps(_plain(out))
    except Exception:
        return None
    return blob if len(blob) <= max_bytes else None


def _describe(error):
    return (type(error).__name__ + ": " + str(error))[:300]


def main():
    job_path, result_fd = sys.argv[1], int(sys.argv[2])
    with open(job_path, "rb") as handle:
        job = pickle.load(handle)
    os.unlink(job_path)
    channel = os.fdopen(result_fd, "w", buffering=1)

    def emit(**event):
        channel.write(json.dumps(event) + "\n")

    _set_limits(job["limits"])
    cap = job["limits"]["output_chars"]
    real_out, real_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _CappedSink(cap), _CappedSink(cap)
    sys.stdin = io.StringIO("")
    emit(event="start")

    record = job.get("record_outputs", False)
    outputs = []
    try:
        code = compile(job["program"], "<program>", "exec")
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as error:
        emit(event="syntax", error=_describe(error))
        code = None
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    loaded = code is not None
    if loaded:
        outcome, message = "pass", None
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
        loaded = outcome == "pass"
    if loaded:
        entry = job.get("entry_point")
        for index, test in enumerate(job["tests"]):
            start = time.perf_counter()
            outcome, message, out = "pass", None, None
            try:
                with _timer(test.get("timeout") or job["test_timeout"]):
                    if test.get("code") is not None:
                        exec(test["code"], namespace)
                    else:
                        out = namespace[entry](*copy.deepcopy(test["args"]))
                        if not record and not _judge(out, test):
                            outcome = "fail"
            except _Timeout:
                outcome, message = "timeout", "test exceeded its time limit"
            except MemoryError as error:
                outcome, message = "memory", _describe(error)
            except AssertionError as error:
                outcome, message = "fail", _describe(error)
            except BaseException as error:
                outcome, message = "error", _describe(error)
            emit(event="test", i=index, outcome=outcome, seconds=time.perf_counter() - start, error=message)
            if record:
                outputs.append(_recorded(out, test, job["max_output_bytes"]) if outcome == "pass" else None)
            if outcome != "pass" and (job.get("stop_on_failure") or outcome in ("timeout", "memory")):
                break
    if record:
        with open(job["record_path"], "wb") as handle:
            pickle.dump(outputs, handle)
    emit(event="done")
    real_out.write(sys.stdout.tail)
    real_err.write(sys.stderr.tail)
    real_out.flush()
    real_err.flush()
    # skip interpreter shutdown: atexit handlers and finalizers belong to the program
    os._exit(0)


main()
