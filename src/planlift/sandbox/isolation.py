"""Which OS isolation this machine allows, found once by trying it.

Modes, strongest first:
- "namespaces+uid" (root with util-linux `unshare`): new network, PID and mount namespaces (a private
  /proc), and the program runs as an unprivileged uid of its own (one per pool slot), so RLIMIT_NPROC
  counts only its processes and it cannot write the host's files or signal the host's processes.
- "namespaces" (`unshare --user --map-root-user`, unprivileged user namespaces): network, PID and mount
  namespaces, the caller's own uid outside.
- "none": a new session / process group only; the program has the host's network and the caller's
  uid. Results say so (`network_isolated=False`) and a warning is logged once.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

MODES = ("auto", "namespaces+uid", "namespaces", "none")
_NAMESPACES = ["--net", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc"]


@dataclass(frozen=True)
class Isolation:
    mode: str
    python: str  # the interpreter that runs programs
    unshare: str | None = None

    @property
    def network_isolated(self) -> bool:
        return self.mode != "none"

    @property
    def drops_uid(self) -> bool:
        return self.mode == "namespaces+uid"

    def command(self, uid: int | None) -> list[str]:
        """The launcher prefix for a program run as `uid` (namespaces+uid only)."""
        if self.mode == "namespaces+uid":
            return [self.unshare, *_NAMESPACES, f"--setgid={uid}", f"--setuid={uid}"]
        if self.mode == "namespaces":
            return [self.unshare, "--user", "--map-root-user", *_NAMESPACES]
        return []


def world_executable(path: str) -> bool:
    """Can any user run `path` (every parent directory searchable, the file executable)?"""
    real = Path(os.path.realpath(path))
    try:
        if not real.stat().st_mode & stat.S_IXOTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)
    except OSError:
        return False


def _interpreter_for_other_users(python: str) -> str | None:
    """`python` if another uid can run it, else the system python3 of the same minor version."""
    if world_executable(python):
        return python
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if world_executable(candidate):
            return candidate
    return None


def _works(command: list[str]) -> bool:
    try:
        done = subprocess.run(command, capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@lru_cache(maxsize=8)
def detect(requested: str = "auto", python: str | None = None, probe_uid: int = 65534) -> Isolation:
    """The strongest mode allowed here (or `requested`, checked). Raises RuntimeError when a requested
    mode does not work."""
    python = python or sys.executable
    unshare = shutil.which("unshare")
    candidates = [requested] if requested != "auto" else ["namespaces+uid", "namespaces", "none"]
    for mode in candidates:
        if mode == "none":
            found = Isolation("none", python)
        elif unshare is None:
            continue
        elif mode == "namespaces+uid":
            if os.geteuid() != 0:
                continue
            runner = _interpreter_for_other_users(python)
            if runner is None:
                continue
            found = Isolation(mode, runner, unshare)
            if not _works([*found.command(probe_uid), runner, "-c", "pass"]):
                continue
        else:
            found = Isolation(mode, python, unshare)
            if not _works([*found.command(None), python, "-c", "pass"]):
                continue
        if found.mode == "none":
            log.warning(
                "sandbox: no network/PID namespaces here (needs util-linux unshare as root or with user "
                "namespaces): programs run with the host's network and the caller's uid"
            )
        return found
    raise RuntimeError(f"sandbox isolation {requested!r} is not available on this machine")
