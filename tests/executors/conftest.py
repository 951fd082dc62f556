"""Session fixtures of the `vllm` tier: one offline engine and one OpenAI server per test session for the
debug preset's tiny bootstrap executor, and one rollout server for its planner.

Run with the vLLM venv (`make test-vllm`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

VLLM_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache: plenty for the tiny model
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # one OpenMP thread (OMP_NUM_THREADS=1), no core pinning
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # engine core in process: 7 s start-up instead of ~40 s
}
DEBUG_OVERRIDES = ["debug=fast", "torch_threads=1", "callbacks.rich_progress_bar=null"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_vllm() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        pytest.fail("the vllm tier needs vLLM: run it with the vLLM venv (`make test-vllm`)")


@pytest.fixture(scope="session")
def vllm_session(tmp_path_factory):
    """The vLLM environment and a planlift cache for the whole session; yields the cache dir."""
    require_vllm()
    cache = tmp_path_factory.mktemp("planlift_cache")
    saved = {k: os.environ.get(k) for k in (*VLLM_ENV, "PLANLIFT_CACHE")}
    os.environ.update(VLLM_ENV, PLANLIFT_CACHE=str(cache))
    yield cache
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def debug_bootstrap(vllm_session, tmp_path_factory):
    """The debug preset's bootstrap (task, trained tiny executor and planner), built once."""
    import hydra

    from tests.test_configs import compose_with

    cfg = compose_with(DEBUG_OVERRIDES, tmp_path_factory.mktemp("compose"))
    task = hydra.utils.instantiate(cfg.task)
    bootstrap = hydra.utils.instantiate(cfg.bootstrap, task=task)
    bootstrap.ensure()
    return task, bootstrap


@pytest.fixture(scope="session")
def vllm_executor(debug_bootstrap, tmp_path_factory):
    """The offline engine, instantiated from conf/executor/vllm.yaml (once per session)."""
    import hydra

    from tests.test_configs import compose_with

    _, bootstrap = debug_bootstrap
    cfg = compose_with([*DEBUG_OVERRIDES, "executor=vllm"], tmp_path_factory.mktemp("compose"))
    cfg.executor.pretrained = str(bootstrap.ensure().checkpoint("executor"))
    return hydra.utils.instantiate(cfg.executor)


@pytest.fixture(scope="session")
def openai_server(debug_bootstrap, tmp_path_factory):
    """vLLM's OpenAI server for the bootstrap executor on 127.0.0.1; yields its base URL; stopped by PID."""
    _, bootstrap = debug_bootstrap
    checkpoint = str(bootstrap.ensure().checkpoint("executor"))
    with serving(checkpoint, [], tmp_path_factory.mktemp("server") / "server.log") as base:
        yield f"{base}/v1"


@pytest.fixture(scope="session")
def rollout_server(debug_bootstrap, tmp_path_factory):
    """The bootstrap planner served for `rollout=vllm_server` (`serve --rollouts`); yields its base URL."""
    _, bootstrap = debug_bootstrap
    checkpoint = str(bootstrap.ensure().checkpoint("planner"))
    with serving(checkpoint, ["--rollouts"], tmp_path_factory.mktemp("rollouts") / "server.log") as base:
        yield base


@contextlib.contextmanager
def serving(checkpoint: str, flags: list[str], log_path: Path, threads: int = 1, timeout_s: float = 300):
    """`python -m planlift.executors.serve` on a free port of 127.0.0.1 (float32, eager); yields its base
    URL; stopped by PID. Also used by bench/rollout_engines.py."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the server keeps vLLM's default process layout
    command = [sys.executable, "-m", "planlift.executors.serve", checkpoint, "--port", str(port), *flags]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [*command, "--", "--dtype", "float32", "--enforce-eager"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health", process, log_path, timeout_s=timeout_s)
        yield base
    finally:
        stop(process)


def wait_for(url: str, process: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    stop(process)
    pytest.fail(f"{url} not up after {timeout_s}s:\n{log_path.read_text()[-4000:]}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the PID we started; its own process group (engine workers) is killed if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def fault_proxy(openai_server):
    """Starts tests/faults/server.py in front of the server: proxy(**options) -> base URL; stopped by PID."""
    started: list[subprocess.Popen] = []

    def start(
        fail_rate: float = 0.3,
        hang_s: float = 3.0,
        seed: int = 0,
        ignore_n: bool = False,
        kinds: str | None = None,
    ) -> str:
        command = [
            sys.executable,
            str(Path(__file__).parents[1] / "faults" / "server.py"),
            "--upstream",
            openai_server.removesuffix("/v1"),
            "--api",
            "openai",
            "--rate",
            str(fail_rate),
            "--hang-s",
            str(hang_s),
            "--seed",
            str(seed),
            *(["--kinds", kinds] if kinds else []),
            *(["--ignore-n"] if ignore_n else []),
        ]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        started.append(process)
        line = process.stdout.readline().split()
        assert line and line[0] == "listening", line
        return f"http://127.0.0.1:{line[1]}/v1"

    yield start
    for process in started:
        stop(process)
