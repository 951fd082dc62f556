"""Which OS isolation this machine allows, found once by trying it.

Modes, strongest first:
- "bwrap+uid" (root with bubblewrap and util-linux `setpriv`): new network, PID, IPC and mount
  namespaces and an unprivileged uid of its own, as below, and a read-only world: the program's root
  is built from read-only binds of /usr, /etc, the /bin /sbin /lib* links and the interpreter's prefix
  (under empty directories of the view's own, searchable, when it lies elsewhere),
  with a fresh /proc, a minimal /dev, private tmpfs /tmp and /dev/shm and its working directory as the
  only writable host path. Everything else (/home, /root, /run, /var, /srv, project checkouts ...) is
  absent, so no host unix socket can be reached (one found under a bound directory when the mode is
  detected is covered by /dev/null);
- "bwrap" (bubblewrap in an unprivileged user namespace): the same world and namespaces, the caller's
  own uid outside;
- "namespaces+uid" (root with util-linux `unshare`): new network, PID and mount namespaces (a private
  /proc), and the program runs as an unprivileged uid of its own (one per pool slot), so RLIMIT_NPROC
  counts only its processes and it cannot write the host's files or signal the host's processes.
- "namespaces" (`unshare --user --map-root-user`, unprivileged user namespaces): network, PID and mount
  namespaces, the caller's own uid outside.
- "none": a new session / process group only; the program has the host's network and the caller's
  uid. Results say so (`network_isolated=False`) and a warning is logged once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from planlift.errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("auto", "bwrap+uid", "namespaces+uid", "bwrap", "namespaces", "none")
_NAMESPACES = ["--net", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc"]
_BWRAP_NAMESPACES = ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
_READ_ONLY_ROOTS = ("/usr", "/etc")
_ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class Isolation:
    mode: str
    python: str  # the interpreter that runs programs
    unshare: str | None = None  # the launcher: unshare or bwrap
    setpriv: str | None = None
    view: tuple[str, ...] = ()  # bwrap: the arguments that build the read-only world

    @property
    def network_isolated(self) -> bool:
        return self.mode != "none"

    @property
    def drops_uid(self) -> bool:
        return self.mode.endswith("+uid")

    @property
    def bounds_processes(self) -> bool:
        """Is the number of a program's processes bounded (RLIMIT_NPROC)? Not for root's own uid: the
        kernel exempts it, so without a uid of its own a fork bomb fills the machine's PID table."""
        return self.drops_uid or os.geteuid() != 0

    @property
    def private_tmp(self) -> bool:
        """A read-only world with private /tmp and /dev/shm (the bwrap modes)."""
        return self.mode.startswith("bwrap")

    def hiding(self, paths: Iterable[str | Path]) -> Isolation:
        """This isolation with `paths` hidden from programs: each that lies inside a read-only root of the
        view (a checkout under /usr/src, a cache inside the interpreter's prefix) is covered by an empty
        tmpfs. A path that is a root, or holds one, cannot be hidden so: a ConfigError. Modes without a view
        are returned as they are (`private_tmp` is False: the caller decides)."""
        if not self.private_tmp:
            return self
        binds = [
            (self.view[i + 1], self.view[i + 2]) for i, arg in enumerate(self.view) if arg == "--ro-bind"
        ]
        roots = [Path(target) for source, target in binds if source == target]  # not /dev/null on a socket
        hidden: list[str] = []
        for path in (Path(os.path.realpath(p)) for p in paths):
            if not path.exists():
                continue  # nothing to hide (and no mount point for the tmpfs)
            held = [root for root in roots if path == root or path in root.parents]
            if held:
                raise ConfigError(
                    f"{path} is or holds the sandbox's read-only root {held[0]}: programs would read it, and it "
                    "cannot be hidden from them; move it out of there"
                )
            if any(root in path.parents for root in roots) and str(path) not in hidden:
                hidden += ["--tmpfs", str(path)]
        return dataclasses.replace(self, view=(*self.view, *hidden)) if hidden else self

    def command(self, uid: int | None, workdir: str | Path = "/") -> list[str]:
        """The launcher prefix for a program run as `uid` (the +uid modes) in `workdir`."""
        if self.mode == "namespaces+uid":
            return [self.unshare, *_NAMESPACES, f"--setgid={uid}", f"--setuid={uid}"]
        if self.mode == "namespaces":
            return [self.unshare, "--user", "--map-root-user", *_NAMESPACES]
        if self.private_tmp:
            workdir = str(workdir)
            prefix = [self.unshare, *_BWRAP_NAMESPACES, "--die-with-parent", "--new-session"]
            if self.mode == "bwrap":
                prefix.append("--unshare-user")
            prefix += [*self.view, "--bind", workdir, workdir, "--chdir", workdir, "--"]
            if self.mode == "bwrap+uid":
                prefix += [self.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
                prefix += ["--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]
            return prefix
        return []


def _bound_root(python: str) -> Path:
    """The directory the read-only view binds to hold `python`: a read-only root, else its prefix, or
    its own directory when the prefix is / (a /bin/python3 without merged /usr: binding / would show
    the whole host)."""
    prefix = Path(os.path.realpath(python)).parent.parent
    for root in map(Path, _READ_ONLY_ROOTS):
        if prefix == root or root in prefix.parents:
            return root
    return prefix if prefix != prefix.parent else Path(os.path.realpath(python)).parent


def read_only_view(python: str) -> tuple[str, ...]:
    """bwrap arguments for a root that holds only what an interpreter needs, read-only."""
    roots = list(_READ_ONLY_ROOTS)
    bound = _bound_root(python)
    view: list[str] = []
    if str(bound) not in roots:
        roots.append(str(bound))
        # bwrap would copy the modes of the host's directories above the prefix (/root is 0700): the
        # view's own, empty ones are searchable, so another uid reaches the interpreter and nothing else
        for parent in reversed(bound.parents[:-1]):
            view += ["--perms", "0755", "--dir", str(parent)]
    for link in _ROOT_LINKS:
        if os.path.islink(link):
            view += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            roots.append(link)
    for root in dict.fromkeys(roots):  # /bin may be both a root link and the interpreter's directory
        view += ["--ro-bind", root, root]
    for socket_path in _host_sockets_under(roots):
        view += ["--ro-bind", "/dev/null", socket_path]
    view += ["--proc", "/proc", "--dev", "/dev"]
    view += ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/dev/shm"]
    return tuple(view)


def _host_sockets_under(roots: list[str]) -> list[str]:
    """Bound unix sockets (from /proc/net/unix) that live below `roots`."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return []
    found = set()
    for line in lines:
        fields = line.split()
        if len(fields) >= 8 and fields[7].startswith("/"):
            path = fields[7]
            if any(path.startswith(root.rstrip("/") + "/") for root in roots) and os.path.exists(path):
                found.add(path)
    return sorted(found)


def world_executable(path: str, top: Path | None = None) -> bool:
    """Can any user run `path` (the file executable, every parent directory searchable; with `top`, only
    the directories from `top` down)?"""
    real = Path(os.path.realpath(path))
    parents = [p for p in real.parents if top is None or p == top or top in p.parents]
    try:
        if not real.stat().st_mode & stat.S_IXOTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in parents)
    except OSError:
        return False


def runnable_in_view(python: str) -> bool:
    """Can another uid run `python` inside its read-only view (`read_only_view`)? There only the
    directories from the bound root down count: the view makes those above it searchable."""
    return world_executable(python, top=_bound_root(python))


def _interpreter_for_other_users(python: str, in_view: bool = False) -> str | None:
    """`python` if another uid can run it (inside its read-only view when `in_view`), else the system
    python3 of the same minor version."""
    if runnable_in_view(python) if in_view else world_executable(python):
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
    unshare, bwrap, setpriv = (shutil.which(tool) for tool in ("unshare", "bwrap", "setpriv"))
    candidates = [requested] if requested != "auto" else [m for m in MODES if m != "auto"]
    for mode in candidates:
        if mode == "none":
            found = Isolation("none", python)
        elif mode.startswith("bwrap"):
            if bwrap is None or (mode == "bwrap+uid" and (os.geteuid() != 0 or setpriv is None)):
                continue
            runner = _interpreter_for_other_users(python, in_view=True) if mode == "bwrap+uid" else python
            if runner is None:
                continue
            runner = os.path.realpath(runner)
            found = Isolation(mode, runner, bwrap, setpriv, read_only_view(runner))
            with tempfile.TemporaryDirectory(prefix="planlift-probe-") as probe:
                os.chmod(probe, 0o777)
                if not _works([*found.command(probe_uid, probe), runner, "-c", "pass"]):
                    continue
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
        if not found.private_tmp:
            log.warning(
                "sandbox: isolation %r: programs see the host's filesystem (install bubblewrap for a "
                "read-only world with a private /tmp)",
                found.mode,
            )
        if not found.bounds_processes:
            log.warning(
                "sandbox: isolation %r runs programs as root outside their namespaces: their number of "
                "processes is not bounded (the +uid modes bound it; they need bwrap or unshare, setpriv "
                "and an interpreter another uid can run)",
                found.mode,
            )
        if found.mode == "none":
            log.warning(
                "sandbox: no network/PID namespaces here (needs util-linux unshare as root or with user "
                "namespaces): programs run with the host's network and the caller's uid"
            )
        return found
    raise RuntimeError(f"sandbox isolation {requested!r} is not available on this machine")
