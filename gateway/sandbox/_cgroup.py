"""A process limit per call slot from the kernel's ``pids`` cgroup controller.

``RLIMIT_NPROC`` counts the processes of a *uid*, so it limits a call only
when the call has a uid of its own (``calls_run_as: own``). Under uid 0 it is
never enforced, and under the server's own uid it would count the server's
threads too. There, a fork bomb in an action (or in model-written code) could
take every pid of the machine until its timeout. ``SlotCgroups`` gives every
call slot a cgroup whose ``pids.max`` is the action's ``max_processes``; the
supervisor moves the idle spare that takes a call into its slot's cgroup
before handing it the call (one ``write`` each in the server, nothing in the
child), and the child's descendants stay there: a call cannot leave it, since
the Landlock allow-list keeps ``/sys`` read-only.

Works with cgroup v1 (a ``pids`` hierarchy) and v2 (where the server's
cgroup may delegate ``pids`` to children), when the server may create
cgroups (root, or a delegated subtree). ``open_slot_cgroups`` returns None
and a reason otherwise. Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

__all__ = ["SlotCgroups", "open_slot_cgroups"]


class SlotCgroups:
    """One ``pids`` cgroup per call slot, below a directory of this server's own.

    Attributes:
        path: the directory holding the slots' cgroups (removed by ``close``).
    """

    def __init__(self, path: Path, slots: int) -> None:
        self.path = path
        self._procs: list[int] = []
        self._max: list[int] = []
        self._current: list[int] = []
        for slot in range(slots):
            directory = path / f"slot{slot}"
            directory.mkdir(exist_ok=True)
            self._procs.append(os.open(directory / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
            self._max.append(os.open(directory / "pids.max", os.O_WRONLY | os.O_CLOEXEC))
            self._current.append(-1)

    def enter(self, slot: int, pid: int, max_processes: int) -> None:
        """Put process ``pid`` (an idle spare) into ``slot``'s cgroup, at most
        ``max_processes`` tasks (threads count, as for ``RLIMIT_NPROC``).

        Raises:
            OSError: the kernel refused (the spare is gone, the cgroup was removed).
        """
        if self._current[slot] != max_processes:
            os.write(self._max[slot], str(max_processes).encode())
            self._current[slot] = max_processes
        os.write(self._procs[slot], str(pid).encode())

    def close(self) -> None:
        """Close the files and remove the cgroups (once the processes in them are gone)."""
        for fd in (*self._procs, *self._max):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._procs, self._max = [], []
        slots = sorted(self.path.glob("slot*"))
        for directory in [*slots, self.path]:
            for _ in range(50):  # a killed process leaves its cgroup a moment after SIGKILL
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


def open_slot_cgroups(slots: int) -> tuple[SlotCgroups | None, str]:
    """Create a ``pids`` cgroup per slot below the server's cgroup; None and why if refused."""
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
        mine.mkdir(exist_ok=True)
        if version == 2:
            _enable_pids(mine)
        return SlotCgroups(mine, slots), f"a pids cgroup per call slot in {mine}"
    except OSError as exc:
        with contextlib.suppress(OSError):
            for directory in [*mine.glob("slot*"), mine]:
                directory.rmdir()
        return None, f"cannot create cgroups in {path}: {exc.strerror or exc}"


def _remove_stale(path: Path) -> None:
    """Remove the (empty) slot cgroups left by gateways that were killed: their pid is gone."""
    for stale in path.glob("gateway-sandbox-*"):
        pid = stale.name.split("-")[2]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(OSError):
            for directory in [*stale.glob("slot*"), stale]:
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
        relative = path.lstrip("/")
        if "pids" in controllers.split(",") and "pids" in mounts:
            return 1, mounts["pids"] / relative
    for line in own:
        _, controllers, path = line.split(":", 2)
        if controllers == "" and "" in mounts:
            return 2, mounts[""] / path.lstrip("/")
    return None
