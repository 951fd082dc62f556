"""The install path of the GPU check (scripts/gpu_wheels.sh + scripts/gpu_check.sh), proved without a GPU.

A lent GPU machine is bare and offline: the wheels `make gpu-wheels` fetches are all it gets of hydra,
omegaconf, math-verify, bitsandbytes, ... This test fetches the same pins for this interpreter (the
binary ones are cp312 for the lent machine and would not import here), installs them the way the check
does (`pip install --no-index --no-deps --target`) and runs `gpu_check.sh --cpu-dry-run` in an
environment that has no planlift and none of the packages the wheels supply: a fresh venv whose only
other packages are this venv's, minus those, on PYTHONPATH. Needs the package index (pip download).
"""

from __future__ import annotations

import importlib.metadata as md
import math
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
# What a lent GPU machine has (docs/scale-out.md); with their dependencies, the stand-in for its packages.
GPU_MACHINE = (
    "torch", "transformers", "pytorch-lightning", "peft", "accelerate", "tensorboard", "rich", "safetensors",
    "tokenizers", "numpy", "scipy", "matplotlib", "pytest", "pip",
)  # fmt: skip


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _run(
    cmd: list[str], env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _closure(names) -> set[str]:
    """The distributions `names` need in this venv (requirements without extras, markers evaluated)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen.add(name)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _machine_site(dest: Path, keep: set[str]) -> None:
    """Symlinks to the top-level entries of this venv's site-packages that belong to the distributions in keep."""
    site = Path(sysconfig.get_paths()["purelib"])
    dest.mkdir()
    for dist in md.distributions(path=[str(site)]):
        if _norm(dist.metadata["Name"]) not in keep:
            continue
        for top in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if (site / top).exists() and not top.endswith(".pth") and not (dest / top).exists():
                (dest / top).symlink_to(site / top)


@pytest.mark.slow
def test_gpu_wheels_install_and_cpu_dry_run(tmp_path):
    wheels = tmp_path / "wheels"
    env = {**os.environ, "PYTHON": sys.executable, "PLANLIFT_CACHE": str(tmp_path / "packing_cache")}
    env.pop("GPU_WHEELS_LIMIT_MIB", None)
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    # the dry run's bootstrap travels (the GPU run carries the learning run's: `--bootstrap hardware=gpu`)
    fetch = ["bash", "scripts/gpu_wheels.sh", "--dest", str(wheels), "--python-version", pyver]
    fetched = _run([*fetch, "--bootstrap", "debug=fast"], env)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    (key,) = [d.name for d in (wheels / "bootstrap").iterdir()]
    assert sorted(f.name for f in (wheels / "bootstrap" / key).iterdir()) == [
        "executor",
        "metrics.json",
        "planner",
    ]

    # one wheel per pinned package, the pins agreeing with each other
    manifest = {
        line.split()[0]: (line.split()[1], line.split()[2])
        for line in (wheels / "manifest.txt").read_text().splitlines()
    }
    found = {}
    for whl in wheels.glob("*.whl"):
        name, version = whl.name.split("-")[:2]
        assert _norm(name) not in found, f"two wheels of {name}"
        found[_norm(name)] = version
    assert found == {name: version for name, (version, _) in manifest.items()}
    assert found["hydra_core"].startswith("1.3.") and found["omegaconf"].startswith("2.3.")
    assert found["antlr4_python3_runtime"] == "4.9.3"
    assert {
        "math_verify", "latex2sympy2_extended", "text2num", "roman", "bitsandbytes", "submitit", "tbparse",
        "gguf",
    } <= set(found)  # fmt: skip

    # the size limit: tree + wheels is printed, and a limit below it fails with a clear message
    total = float(re.search(r"^total: ([0-9.]+) MiB", fetched.stdout, re.M).group(1))
    tree = float(re.search(r"^working tree .*: ([0-9.]+) MiB", fetched.stdout, re.M).group(1))
    assert total > tree > 0
    boot, carried = map(
        float, re.search(r"bootstrap ([0-9.]+) MiB\): ([0-9.]+) MiB", fetched.stdout).groups()
    )
    assert boot > 0 and abs(total - tree - carried) < 0.02  # the bootstrap counts towards the limit
    check = ["bash", "scripts/gpu_wheels.sh", "--dest", str(wheels), "--check"]
    over = _run(check, {**env, "GPU_WHEELS_LIMIT_MIB": str(math.floor(total) - 1)})
    assert over.returncode == 1 and "error: the tree plus the wheels is" in over.stderr
    under = _run(check, {**env, "GPU_WHEELS_LIMIT_MIB": str(math.ceil(total) + 1)})
    assert under.returncode == 0, under.stderr

    # a stand-in for the lent machine: a fresh venv (stdlib only) + only those of this venv's packages the
    # lent machine has (GPU_MACHINE and what they need), on PYTHONPATH; no user site
    machine_has = _closure(GPU_MACHINE)
    assert "torch" in machine_has and "hydra_core" not in machine_has and "planlift" not in machine_has
    _machine_site(tmp_path / "machine_site", machine_has)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    machine_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV", "GPU_CHECK", "PLANLIFT_"))
    }
    machine_env.update(PYTHONPATH=str(tmp_path / "machine_site"), PYTHONNOUSERSITE="1")
    for module in ("hydra", "omegaconf", "math_verify", "planlift"):
        probe = _run([python, "-c", f"import {module}"], machine_env)
        assert probe.returncode != 0, f"{module} importable without the wheels"
    assert _run([python, "-c", "import torch, pytorch_lightning, transformers"], machine_env).returncode == 0

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "out"
    machine_env.update(
        PYTHON=python, GPU_WHEELS_DIR=str(wheels), OUT=str(out), TMPDIR=str(scratch), OMP_NUM_THREADS="1"
    )
    dry = _run(["bash", "scripts/gpu_check.sh", "--cpu-dry-run"], machine_env, timeout=290)
    # what the device tool brings back (at most 8 files): the summary, the versions, one archive of the rest
    assert sorted(f.name for f in out.iterdir()) == ["checks.tar.gz", "summary.txt", "versions.txt"]
    with tarfile.open(out / "checks.tar.gz") as archive:
        names = archive.getnames()
        run_log = archive.extractfile("cpu_dry_run.log").read().decode(errors="replace")
    assert "cpu_dry_run/config.yaml" in names and any("events.out.tfevents" in n for n in names), names
    log = dry.stdout + dry.stderr + run_log[-3000:]
    assert dry.returncode == 0, log
    summary = (out / "summary.txt").read_text()
    assert re.search(r"^cpu_dry_run rc=0 seconds=\d+ val/e2e_acc step0=\S+ final=\S+ ", summary, re.M), (
        summary
    )
    assert re.search(r"^install rc=0 wheels=\d+ ", summary, re.M), summary
    # the carried bootstrap went into the check's own (empty) cache and the run loaded it, trained nothing
    assert re.search(rf"^bootstrap carried={key} into {re.escape(str(scratch))}/", summary, re.M), summary
    # ... with its step 0 as the packing machine measured it, and the kernels it was trained with
    built_on = re.escape(f"cpu/{torch.backends.cpu.get_cpu_capability()}")
    assert re.search(
        rf"^bootstrap carried=.*\(planner_executor=[0-9.]+ built_on={built_on}\)$", summary, re.M
    ), summary
    assert re.search(r"^cpu_dry_run rc=0 .* bootstrap=cached args: ", summary, re.M), summary
    # the step-time line the GPU run writes for default_config, read from the run's TensorBoard events
    assert re.search(r"^cpu_dry_run step_s=[0-9.]+ weight_sync_s=n/a ", summary, re.M), summary
    assert re.search(
        r"^cpu_dry_run step_s=.* val/e2e_acc first@0=[0-9.]+ last@[0-9]+=[0-9.]+$", summary, re.M
    ), summary
    cuda = re.escape(str(torch.version.cuda))  # None for a CPU build; the CUDA build runs here too
    assert re.search(rf"^versions python=\S+ cuda={cuda} torch=\S+ .*hydra-core=1\.3\.", summary, re.M), (
        summary
    )

    # every package the wheels supply came from the --target folder (a "fill" wheel only where the machine
    # lacks the package), planlift from src/, the rest from the machine's own packages
    versions_text = (out / "versions.txt").read_text()
    versions = {
        line.split()[0]: line.split()[-1] for line in versions_text.splitlines() if len(line.split()) == 3
    }
    target, machine = f"{scratch}/gpu_check.", str(tmp_path / "machine_site")
    for dist in ("hydra-core", "omegaconf", "antlr4-python3-runtime", "math-verify", "bitsandbytes",
                 "latex2sympy2_extended", "text2num", "roman", "submitit", "filelock", "requests", "torch"):  # fmt: skip
        version, role = manifest.get(_norm(dist), (None, None))
        from_wheel = role == "core" or (role == "fill" and _norm(dist) not in machine_has)
        where = versions[dist]
        assert where.startswith(target if from_wheel else machine), (dist, where)
        if from_wheel:
            assert "/site/" in where, (dist, where)
            assert re.search(rf"^{re.escape(dist)} +{re.escape(version)} ", versions_text, re.M), (
                dist,
                version,
            )
    assert versions["planlift"] == str(ROOT / "src" / "planlift" / "__init__.py")
    assert "filelock: this python has" in dry.stdout + dry.stderr
    assert not list(scratch.glob("gpu_check.*")), "the temporary install folder was left behind"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU run itself is what a GPU machine runs")
def test_the_gpu_run_without_a_gpu_fails_cleanly_and_keeps_the_learning_run_its_time(tmp_path):
    """The non-dry flow on a CPU: every CUDA check fails (no GPU), and what is left must still be right: the
    checks before the learning run leave it its reserve (a budget of 170 s leaves them under 20 s: skipped),
    the exit status says failure, nvidia-smi is sampled (a stand-in on PATH) and no sampler survives, and
    $OUT holds the three files the device tool brings back."""
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 1234\n")
    fake.chmod(0o755)
    out, empty = tmp_path / "out", tmp_path / "no_wheels"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_CHECK", "PLANLIFT_"))}
    env.update(
        PATH=f"{fake.parent}:{os.environ['PATH']}", PYTHON=sys.executable, GPU_WHEELS_DIR=str(empty),
        GPU_CHECK_BUDGET_S="170", OMP_NUM_THREADS="1", TMPDIR=str(tmp_path),
    )  # fmt: skip
    run = _run(["bash", "scripts/gpu_check.sh", str(out)], env, timeout=300)
    summary = (out / "summary.txt").read_text()
    assert run.returncode == 1, run.stdout + run.stderr
    assert re.search(r"^cuda_smoke rc=1 seconds=\d+ .* peak_gpu_mem=1234MiB$", summary, re.M), summary
    for name in ("gpu", "fsdp", "qlora4bit"):
        assert re.search(rf"^{name} rc=skipped\(budget\) seconds=0 ", summary, re.M), summary
    # train.py refuses a GPU config before it builds any model (exit 2, a one-line error): no bootstrap
    assert re.search(
        r"^default_config rc=2 seconds=\d+ val/e2e_acc=no metric peak_gpu_mem=1234MiB ", summary, re.M
    )
    assert re.search(r"^vllm rc=skipped \(vLLM is not installed", summary, re.M) or "import vllm" in summary
    assert sorted(f.name for f in out.iterdir()) == ["checks.tar.gz", "summary.txt", "versions.txt"]
    with tarfile.open(out / "checks.tar.gz") as archive:
        assert {"cuda_smoke.log", "default_config.log", "default_config/config.yaml"} <= set(
            archive.getnames()
        )
        log = archive.extractfile("default_config.log").read().decode()
    assert "error: trainer.accelerator=gpu with trainer.devices=1, but this process sees 0 CUDA device" in log
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if str(out).encode() in _read(p)]
    assert not left, "a process of the check (the nvidia-smi sampler?) outlived it"
    assert not list(tmp_path.glob("gpu_check.*")), "the temporary folder was left behind"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""
