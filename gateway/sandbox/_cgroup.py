"""A bound on the processes of each zygote and its calls, from the ``pids`` cgroup controller.

``RLIMIT_NPROC`` counts the processes of a *uid*, so it limits a call only
when the call has a uid of its own (``calls_run_as: own``). Under uid 0 it is
never enforced, and under the server's own uid it would count the server's
threads too. There, a fork bomb in an action (or in model-written code) could
take every pid of the machine until its timeout.

``SandboxCgroups`` puts each zygote, as it starts, into a cgroup of its own
whose ``pids.max`` covers every call it may run at once
(``GATEWAY_SANDBOX_CONCURRENCY`` x the largest ``max_processes``, plus its
spares); its children are born there, and the Landlock allow-list keeps
``/sys`` read-only, so a call cannot leave it. It bounds what a fork bomb can
take (the machine, the server and the other zygote are safe) but not one call
against the others of its zygote.

Why not a cgroup per call: moving a process between cgroups takes the
kernel's cgroup_threadgroup_rwsem for writing, and on an idle machine that
waits for an RCU grace period: 8-20 ms per move measured here (2 us when moves
come back to back), which would multiply a paced call's latency by ten. One
move per zygote start costs that once.

Works with cgroup v1 (a ``pids`` hierarchy) and v2 (where the server's cgroup
may delegate ``pids``), when the server may create cgroups (root, or a
delegated subtree). ``open_sandbox_cgroups`` returns None and the reason
otherwise. Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

__all__ = ["SandboxCgroups", "open_sandbox_cgroups"]


class SandboxCgroups:
    """A directory of this server's own holding one ``pids`` cgroup per zygote.

    Attributes:
        path: that directory (removed by ``close``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def enter(self, pid: int, max_tasks: int) -> Path:
        """Put process ``pid`` (a zygote that has not forked yet) into a cgroup of its own
        holding at most ``max_tasks`` tasks (threads count, as for ``RLIMIT_NPROC``).

        Raises:
            OSError: the kernel refused.
        """
        self.prune()
        directory = self.path / f"z{pid}"
        directory.mkdir(exist_ok=True)
        (directory / "pids.max").write_text(str(max_tasks))
        (directory / "cgroup.procs").write_text(str(pid))
        return directory

    def prune(self) -> None:
        """Remove the cgroups of zygotes that are gone (a cgroup with a process stays).

        By the zygote's pid, not by emptiness: another zygote's cgroup may be
        empty for a moment, made but not yet entered.
        """
        for directory in self.path.glob("z*"):
            pid = directory.name[1:]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(OSError):
                    directory.rmdir()

    def close(self) -> None:
        """Remove every cgroup, waiting a moment for killed processes to leave them."""
        for directory in [*self.path.glob("z*"), self.path]:
            for _ in range(100):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


def open_sandbox_cgroups() -> tuple[SandboxCgroups | None, str]:
    """Make this server's cgroup directory below its own cgroup; None and why if refused."""
    base = _own_pids_cgroup()
    if base is None:
        return None, "no pids cgroup controller is mounted here"
    version, path = base
    if version == 2:
        try:
            if "pids" not in (path / "cgroup.controllers").read_text().split():
                return None, f"the pids controller is not available in {path}"
            _enable_pids(path)
        except OSError as exc:
            return None, f"cannot delegate the pids controller below {path}: {exc.strerror}"
    _remove_stale(path)
    mine = path / f"gateway-sandbox-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        mine.mkdir()
        if version == 2:
            _enable_pids(mine)
    except OSError as exc:
        with contextlib.suppress(OSError):
            mine.rmdir()
        return None, f"cannot create cgroups in {path}: {exc.strerror or exc}"
    return SandboxCgroups(mine), f"a pids cgroup per zygote in {mine}"


def _remove_stale(path: Path) -> None:
    """Remove the (empty) cgroups left by gateways that were killed: their pid is gone."""
    for stale in path.glob("gateway-sandbox-*"):
        pid = stale.name.split("-")[2]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(OSError):
            for directory in [*stale.glob("z*"), stale]:
                directory.rmdir()


def _enable_pids(path: Path) -> None:
    control = path / "cgroup.subtree_control"
    if "pids" not in control.read_text().split():
        control.write_text("+pids")


def _own_pids_cgroup() -> tuple[int, Path] | None:
    """(cgroup version, directory) of this process's cgroup holding the ``pids`` controller."""
    mounts: dict[str, Path] = {}  # "pids" (v1) or "" (v2) -> mount point
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:  # noqa: PTH123 - procfs
            for line in fh:
                fields = line.split()
                dash = fields.index("-")
                fstype, options = fields[dash + 1], fields[dash + 3].split(",")
                if fstype == "cgroup" and "pids" in options:
                    mounts.setdefault("pids", Path(fields[4]))
                elif fstype == "cgroup2":
                    mounts.setdefault("", Path(fields[4]))
        own = Path("/proc/self/cgroup").read_text().splitlines()
    except (OSError, ValueError, IndexError):
        return None
    for line in own:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(",") and "pids" in mounts:
            return 1, mounts["pids"] / path.lstrip("/")
    for line in own:
        _, controllers, path = line.split(":", 2)
        if controllers == "" and "" in mounts:
            return 2, mounts[""] / path.lstrip("/")
    return None
