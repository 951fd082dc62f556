"""Rendezvous ports of concurrent local runs (`planlift.rendezvous`): a port another planlift process holds
is never handed out, whatever the OS offers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
from omegaconf import OmegaConf

from planlift import rendezvous


@pytest.fixture(autouse=True)
def lock_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(rendezvous, "LOCK_DIR", tmp_path / "ports")
    for key in (
        "MASTER_PORT",
        "SLURM_NTASKS",
    ):  # set first, so that monkeypatch restores what reserve_for sets
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    yield tmp_path / "ports"
    rendezvous.release_all()


def offering(*ports):
    """A port finder that offers these ports in turn (the OS handing out a port twice)."""
    offers = iter(ports)
    return lambda: next(offers)


def test_a_port_held_in_this_process_is_skipped_until_released():
    assert rendezvous.reserve_port(offering(40001)) == 40001
    assert rendezvous.reserve_port(offering(40001, 40001, 40002)) == 40002
    rendezvous.release_all()
    assert rendezvous.reserve_port(offering(40001)) == 40001


def test_a_port_another_process_holds_is_skipped_and_freed_when_it_exits(lock_dir):
    # the other run: reserves 40005 (its finder offers it) and holds it until its stdin closes
    holder = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from planlift import rendezvous
        rendezvous.LOCK_DIR = Path({str(lock_dir)!r})
        print(rendezvous.reserve_port(lambda: 40005), flush=True)
        sys.stdin.read()
    """)
    other = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout.readline().strip() == "40005"
        assert rendezvous.reserve_port(offering(40005, 40005, 40006)) == 40006
    finally:
        other.stdin.close()
        other.wait(timeout=30)
    rendezvous.release_all()
    assert rendezvous.reserve_port(offering(40005)) == 40005  # its exit dropped the lock


def test_gives_up_with_the_lock_folder_named():
    rendezvous.reserve_port(offering(40009))
    with pytest.raises(RuntimeError, match="ports"):
        rendezvous.reserve_port(offering(*[40009] * 3), attempts=3)


def test_free_port_can_be_bound():
    port = rendezvous.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    ("trainer", "env", "multirun_job", "reserved"),
    [
        ({"devices": 2}, {}, False, True),
        ({"devices": [0, 1]}, {}, False, True),
        ({"devices": "auto"}, {}, False, True),
        ({"devices": 1, "num_nodes": 2}, {}, False, True),
        ({"devices": 1}, {}, False, False),
        ({"devices": [3]}, {}, True, False),
        (
            {"devices": 2},
            {"MASTER_PORT": "29500"},
            False,
            False,
        ),  # torchrun, a user, a rank Lightning started
        # every job of a multirun inherits the same one (CI: a test process's stale MASTER_PORT, two
        # submitit_local jobs on it, both hung)
        ({"devices": 2}, {"MASTER_PORT": "29500"}, True, True),
        ({"devices": 2}, {"SLURM_NTASKS": "2"}, True, False),  # SLURM's environment derives the port
    ],
)
def test_reserve_for_exports_master_port_only_for_a_distributed_run_started_here(
    monkeypatch, trainer, env, multirun_job, reserved
):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    port = rendezvous.reserve_for(OmegaConf.create(trainer), multirun_job=multirun_job)
    assert (port is not None) == reserved
    assert os.environ.get("MASTER_PORT") == (str(port) if reserved else env.get("MASTER_PORT"))
