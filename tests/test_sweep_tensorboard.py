"""A finished debug sweep, compared with src/compare.py and served by a real TensorBoard on 127.0.0.1:
every run and scalar the comparison used is served with the same values (slow tier)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.test_train_e2e import sweep_command

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def sweep(tmp_path: Path, cache: Path, name: str, *overrides: str) -> Path:
    sweep_dir = tmp_path / name
    env = {**os.environ, "PLANLIFT_CACHE": str(cache), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = sweep_command(name, sweep_dir, *overrides)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return sweep_dir


def run_compare(sweep_dir: Path) -> tuple[str, dict]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "compare.py"), str(sweep_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout, json.loads((sweep_dir / "compare" / "comparison.json").read_text())


def get(url: str, data: bytes | None = None):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_reward_sweep_compared_and_served_by_tensorboard(tmp_path, cache_dir):
    sweep_dir = sweep(tmp_path, cache_dir, "reward_ablation", "arm=exec_only,grounded_oracle", "seed=0,1")
    markdown, used = run_compare(sweep_dir)
    assert sorted(used) == [
        "arm=exec_only,seed=0",
        "arm=exec_only,seed=1",
        "arm=grounded_oracle,seed=0",
        "arm=grounded_oracle,seed=1",
    ]
    assert "| arm=grounded_oracle | 2 |" in markdown and "### final/val/e2e_acc" in markdown
    assert "## Final metrics per arm" in markdown and "| arm=exec_only | 2 |" in markdown
    for tag in ("val_e2e_acc", "val_trace_step_acc", "val_leakage", "val_trace_right_wrong_reasons"):
        assert (sweep_dir / "compare" / f"curves_{tag}.png").is_file(), tag

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tensorboard = Path(sys.executable).with_name("tensorboard")
    server = subprocess.Popen(
        [
            str(tensorboard),
            "--logdir",
            str(sweep_dir / "tensorboard"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reload_interval",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def served(run: str, tag: str) -> list:
        return get(f"{base}/data/plugin/scalars/scalars?{urllib.parse.urlencode({'run': run, 'tag': tag})}")

    try:
        # the server reads the event files in passes: a tag is listed once its first event is read, so wait
        # until every series the comparison used is served in full
        deadline = time.monotonic() + 120
        runs = []
        while time.monotonic() < deadline:
            try:
                runs = get(f"{base}/data/runs")
                if sorted(runs) == sorted(used) and all(
                    len(served(run, tag)) >= len(points)
                    for run, by_tag in used.items()
                    for tag, points in by_tag.items()
                ):
                    break
            except OSError:  # not up yet, or a tag not read yet (HTTP 400)
                pass
            time.sleep(1)
        assert sorted(runs) == sorted(used)
        for run, by_tag in used.items():
            for tag, points in by_tag.items():
                assert [(step, pytest.approx(value, rel=1e-6)) for _, step, value in served(run, tag)] == [
                    (step, value) for step, value in points
                ], (run, tag)
        experiment = get(
            f"{base}/data/plugin/hparams/experiment", json.dumps({"experimentName": ""}).encode()
        )
        metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert "final/val/e2e_acc" in metrics
        assert {h["name"] for h in experiment["hparamInfos"]} >= {"choice/reward", "seed"}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_length_sweep_table_has_a_length_column_and_a_collapse_curve(tmp_path, cache_dir):
    sweep_dir = sweep(
        tmp_path,
        cache_dir,
        "length_collapse",
        "arm=grounded_oracle",
        "task.length=5,7",
        "seed=0,1",
        "trainer.max_steps=4",  # the sweep file's 50 steps win over debug=fast
    )
    markdown, used = run_compare(sweep_dir)
    assert len(used) == 4
    assert "| arm | length | n | mean | 95% CI |" in markdown
    assert "| arm=grounded_oracle | 5 | 2 |" in markdown and "| arm=grounded_oracle | 7 | 2 |" in markdown
    assert (sweep_dir / "compare" / "length_collapse.png").read_bytes()[:4] == b"\x89PNG"
    assert (sweep_dir / "compare" / "failure_modes.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Before training: the step-0 validation" in markdown
    assert "| N | arm | seeds | e2e_acc | exact_exec |" in markdown  # before -> after per length
