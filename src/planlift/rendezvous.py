"""The rendezvous port of a distributed run that planlift's own process starts (DDP / FSDP ranks launched by
Lightning, outside SLURM and torchrun).

Lightning picks that port by binding port 0 and closing the socket; rank 0 binds it again seconds later,
when the process group starts. Two runs starting at once (the jobs of a `hydra/launcher=submitit_local`
multirun, two terminals) can be handed the same port in between, and one of them fails with EADDRINUSE.
`reserve_port` closes that window among planlift runs: a port is taken only together with an exclusive
`flock` on a file named after it, held until the run ends (or its process exits), and exported as
MASTER_PORT, which Lightning then uses. Another program may still take the port; that race is the OS's.
The empty lock files stay (removing a lock file that another process may have just opened would let two
runs lock the same port through two files).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: the lock files' folder: one `<port>.lock` per reserved port (this user's runs; another user's may still
#: collide, as without it)
LOCK_DIR = Path(tempfile.gettempdir()) / f"planlift-rendezvous-ports-{os.getuid()}"
_held: dict[int, int] = {}  # port -> the descriptor holding its lock


def free_port() -> int:
    """A port the OS says is free now (it may hand it out again once this socket is closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reserve_port(find: Callable[[], int] = free_port, attempts: int = 50) -> int:
    """A free port no other planlift process holds, locked for this process until `release_all` or exit."""
    LOCK_DIR.mkdir(exist_ok=True)
    for _ in range(attempts):
        port = find()
        fd = os.open(LOCK_DIR / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another run holds it: between its pick and its bind
            os.close(fd)
            log.debug("rendezvous port %d is held by another run; picking again", port)
            continue
        _held[port] = fd
        return port
    raise RuntimeError(
        f"no rendezvous port free of other planlift runs' locks ({LOCK_DIR}) in {attempts} tries"
    )


def release_all() -> None:
    """Drop this process's reservations (the next job of a multirun in this process reserves its own)."""
    while _held:
        os.close(_held.popitem()[1])  # closing the descriptor drops its lock


def distributed(trainer_cfg) -> bool:
    """Whether the trainer config starts more than one process (devices or nodes)."""
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, int):
        many = devices > 1 or devices == -1
    elif isinstance(devices, str):  # "auto" may be several GPUs: a reservation costs nothing when unused
        many = devices.strip() != "1"
    else:  # a list of device indices
        many = len(devices) > 1
    return many or int(trainer_cfg.get("num_nodes", 1) or 1) > 1


def reserve_for(trainer_cfg, multirun_job: bool = False) -> int | None:
    """Reserve MASTER_PORT for a distributed run started here; None (nothing done) when the run is not
    distributed, under SLURM (its environment derives the port from the job id), or when MASTER_PORT is set
    already (torchrun, a user, a rank Lightning started). A job of a local multirun (`multirun_job`) reserves
    its own all the same: a MASTER_PORT it inherited is the one every job of the sweep inherited, and
    `submitit_local` runs them at once (two distributed jobs on one port hang or fail with EADDRINUSE)."""
    if "SLURM_NTASKS" in os.environ or not distributed(trainer_cfg):
        return None
    inherited = os.environ.get("MASTER_PORT")
    if inherited is not None and not multirun_job:
        return None
    port = reserve_port()
    if inherited is not None:
        log.warning(
            "MASTER_PORT=%s is set for every job of this multirun: this job reserved port %d instead",
            inherited,
            port,
        )
    os.environ["MASTER_PORT"] = str(port)
    log.info("rendezvous port %d reserved for this run (MASTER_PORT)", port)
    return port
