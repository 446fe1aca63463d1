"""Bounds on each zygote and its calls from the ``pids`` and ``memory`` cgroup controllers.

``RLIMIT_NPROC`` counts the processes of a *uid*, so it limits a call only
when the call has a uid of its own (``calls_run_as: own``). Under uid 0 it is
never enforced, and under the server's own uid it would count the server's
threads too. There, a fork bomb in an action (or in model-written code) could
take every pid of the machine until its timeout.

``RLIMIT_AS`` (``memory_mb``) bounds a call's *address space*, not the memory
it holds: a memory file (``memfd_create``, a file in ``/dev/shm`` or another
tmpfs) keeps its pages with no mapping at all, so a call could fill memory
files 16 MB (``max_file_size_mb``) at a time, 256 open at once
(``max_open_files``), ~4 GB per call and past its 512 MB, and a few such calls
exhaust the host. ``memfd_create`` cannot simply be denied (``code_interpreter``
uses it).

``SandboxCgroups`` puts each zygote, as it starts, into a cgroup of its own
(one per hierarchy: v1 mounts ``pids`` and ``memory`` apart, v2 has one
directory for both), below one directory of this server's (``gateway-sandbox-*``),
whose ``pids.max`` covers every call it may run at once
(``GATEWAY_SANDBOX_CONCURRENCY`` x the largest ``max_processes``, plus its
spares) and whose memory limit (``memory.max``, v1 ``memory.limit_in_bytes``)
covers ``GATEWAY_SANDBOX_CONCURRENCY`` x (the largest ``memory_mb`` + the
zygote's private memory, which each call may copy), plus the zygote and its
spares and some headroom (see the supervisor's ``_bound_memory``); the server's
directory holds them all together to what the concurrency allows at once (see
the supervisor's ``_bound_all_memory``), not to the sum of their bounds. Memory
files count there (shmem pages are charged to the cgroup that touched them),
so does swap (``memory.swap.max`` 0, v1 ``memory.memsw.limit_in_bytes`` equal
to the limit), and past the limit the kernel's OOM killer kills inside that
cgroup only: a call's child, whose ``oom_score_adj`` is 1000, before its zygote
(``worker.run_spare``). Its children are born there, and the Landlock
allow-list keeps ``/sys`` read-only, so a call cannot leave it. These bound
what a fork bomb or a memory hog can take (the machine, the server and the
other zygotes are safe) but not one call against the others of its zygote:
the OOM killer picks the call with the most resident memory, which need not
be the one holding unmapped memory files.

Why not a cgroup per call: moving a process between cgroups takes the
kernel's cgroup_threadgroup_rwsem for writing, and on an idle machine that
waits for an RCU grace period: 8-20 ms per move measured here (2 us when moves
come back to back), which would multiply a paced call's latency by ten. One
move per zygote start (per hierarchy) costs that once.

Works with cgroup v1 (a ``pids`` and a ``memory`` hierarchy) and v2 (where the
server's cgroup may delegate ``pids`` and ``memory``), when the server may
create cgroups (root, or a delegated subtree). ``open_sandbox_cgroups`` says,
per controller, why one is not used. Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

__all__ = ["CONTROLLERS", "SandboxCgroups", "open_sandbox_cgroups", "read_oom_kills"]

CONTROLLERS = ("pids", "memory")


class SandboxCgroups:
    """This server's own directories (one per controller) each holding a cgroup per zygote.

    Attributes:
        paths: controller -> that directory (the same one for both on v2; removed by
            ``close``); only the controllers that could be set up.
        versions: controller -> its cgroup version, 1 or 2 (a hybrid host may differ).
    """

    def __init__(self, paths: dict[str, Path], versions: dict[str, int] | None = None) -> None:
        self.paths = paths
        self.versions = versions or dict.fromkeys(paths, 1)

    @property
    def path(self) -> Path:
        """The ``pids`` directory, else the ``memory`` one."""
        return self.paths.get("pids") or self.paths["memory"]

    def enter(self, pid: int, max_tasks: int | None = None, *, memory: bool = False) -> Path:
        """Put process ``pid`` (a zygote that has not forked yet) into a cgroup of its own.

        ``max_tasks``: at most that many tasks (threads count, as for
        ``RLIMIT_NPROC``); None: not in a ``pids`` cgroup. ``memory``: in a
        ``memory`` cgroup too, with no limit until ``limit_memory`` (the zygote's
        imports come first). Returns its ``pids`` (else ``memory``) cgroup.

        Raises:
            OSError: the kernel refused.
        """
        self.prune()
        wanted = [c for c, on in (("pids", max_tasks is not None), ("memory", memory)) if on]
        wanted = [c for c in wanted if c in self.paths]
        entered: list[Path] = []
        for controller in wanted:
            directory = self.paths[controller] / f"z{pid}"
            directory.mkdir(exist_ok=True)
            if controller == "pids":
                (directory / "pids.max").write_text(str(max_tasks))
            if directory not in entered:
                entered.append(directory)
        for directory in entered:
            (directory / "cgroup.procs").write_text(str(pid))
        return entered[0] if entered else self.path / f"z{pid}"

    def limit_memory(self, pid: int, max_bytes: int) -> str:
        """Hold zygote ``pid``'s memory cgroup (entered) to ``max_bytes``, swap included.

        Returns how swap is bounded (or why it is not). Raises OSError if the kernel
        refused the limit (above what is in use already, on v1: EBUSY).
        """
        return self._limit(self.paths["memory"] / f"z{pid}", max_bytes)

    def limit_all_memory(self, max_bytes: int) -> str:
        """Hold this server's memory directory, every zygote's cgroup below it, to
        ``max_bytes`` together, swap included; as ``limit_memory`` otherwise."""
        return self._limit(self.paths["memory"], max_bytes)

    def _limit(self, directory: Path, max_bytes: int) -> str:
        if self.versions["memory"] == 2:
            (directory / "memory.max").write_text(str(max_bytes))
            swap = directory / "memory.swap.max"
            if not swap.exists():  # writing would try to create it: EACCES, not ENOENT
                return "no swap accounting here (memory.swap.max missing): swap is not bounded"
            swap.write_text("0")
            return "no swap (memory.swap.max 0)"
        # Memory + swap no more than the memory limit: no swap at all. The kernel keeps
        # memsw >= the limit at every step (EINVAL), so a raise writes memsw first.
        memory, memsw = (
            directory / "memory.limit_in_bytes",
            directory / "memory.memsw.limit_in_bytes",
        )
        try:
            raising = int(memsw.read_text()) < max_bytes
        except FileNotFoundError:
            memory.write_text(str(max_bytes))
            return "no swap accounting here (memory.memsw.* missing): swap is not bounded"
        for control in (memsw, memory) if raising else (memory, memsw):
            control.write_text(str(max_bytes))
        return "swap included (memory.memsw.limit_in_bytes)"

    def oom_kills(self, pid: int) -> int | None:
        """How many processes the OOM killer killed in zygote ``pid``'s memory cgroup
        (None: no such cgroup, or the kernel does not say)."""
        fd = self.open_oom_kills(pid)
        if fd is None:
            return None
        try:
            return read_oom_kills(fd)
        finally:
            os.close(fd)

    def open_oom_kills(self, pid: int) -> int | None:
        """A descriptor of the file counting zygote ``pid``'s OOM kills, for
        ``read_oom_kills`` (None: no such cgroup). The caller closes it."""
        directory = self.paths.get("memory")
        if directory is None:
            return None
        name = "memory.events" if self.versions["memory"] == 2 else "memory.oom_control"
        try:
            return os.open(directory / f"z{pid}" / name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def prune(self) -> None:
        """Remove the cgroups of zygotes that are gone (a cgroup with a process stays).

        By the zygote's pid, not by emptiness: another zygote's cgroup may be
        empty for a moment, made but not yet entered.
        """
        for path in self._distinct():
            for directory in path.glob("z*"):
                pid = directory.name[1:]
                if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                    with contextlib.suppress(OSError):
                        directory.rmdir()

    def close(self) -> None:
        """Remove every cgroup, waiting a moment for killed processes to leave them."""
        for path in self._distinct():
            for directory in [*path.glob("z*"), path]:
                for _ in range(100):
                    try:
                        directory.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.01)

    def _distinct(self) -> list[Path]:
        return list(dict.fromkeys(self.paths.values()))


def read_oom_kills(fd: int) -> int | None:
    """The OOM kill count in the file ``fd`` (``open_oom_kills``), read again from its
    start: a few microseconds, cheap enough before every call (None: the kernel does
    not say)."""
    try:
        text = os.pread(fd, 4096, 0).decode("ascii", "replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None


def open_sandbox_cgroups() -> tuple[SandboxCgroups | None, dict[str, str]]:
    """Make this server's cgroup directories below its own cgroups.

    Returns them (None if no controller could be used) and, per controller, what
    it bounds or why it is not used.
    """
    paths: dict[str, Path] = {}
    versions: dict[str, int] = {}
    details: dict[str, str] = {}
    made: dict[Path, Path] = {}  # parent -> our directory below it (shared on v2)
    suffix = f"gateway-sandbox-{os.getpid()}-{os.urandom(4).hex()}"
    for controller in CONTROLLERS:
        base = _own_cgroup(controller)
        if base is None:
            details[controller] = f"no {controller} cgroup controller is mounted here"
            continue
        version, path = base
        if version == 2:
            try:
                if controller not in (path / "cgroup.controllers").read_text().split():
                    details[controller] = f"the {controller} controller is not available in {path}"
                    continue
                _enable(path, controller)
            except OSError as exc:
                details[controller] = (
                    f"cannot delegate the {controller} controller below {path}: {exc.strerror}"
                )
                continue
        mine = made.get(path)
        try:
            if mine is None:
                _remove_stale(path)
                mine = path / suffix
                mine.mkdir()
                made[path] = mine
            if version == 2:
                _enable(mine, controller)
        except OSError as exc:
            details[controller] = f"cannot create cgroups in {path}: {exc.strerror or exc}"
            continue
        paths[controller] = mine
        versions[controller] = version
        details[controller] = f"a {controller} cgroup per zygote in {mine}"
    for unused in set(made.values()) - set(paths.values()):
        with contextlib.suppress(OSError):
            unused.rmdir()
    if not paths:
        return None, details
    return SandboxCgroups(paths, versions), details


def _remove_stale(path: Path) -> None:
    """Remove the (empty) cgroups left by gateways that were killed: their pid is gone."""
    for stale in path.glob("gateway-sandbox-*"):
        pid = stale.name.split("-")[2]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(OSError):
            for directory in [*stale.glob("z*"), stale]:
                directory.rmdir()


def _enable(path: Path, controller: str) -> None:
    control = path / "cgroup.subtree_control"
    if controller not in control.read_text().split():
        control.write_text(f"+{controller}")


def _own_cgroup(controller: str) -> tuple[int, Path] | None:
    """(cgroup version, directory) of this process's cgroup holding ``controller``."""
    mounts: dict[str, Path] = {}  # controller (v1) or "" (v2) -> mount point
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:  # noqa: PTH123 - procfs
            for line in fh:
                fields = line.split()
                dash = fields.index("-")
                fstype, options = fields[dash + 1], fields[dash + 3].split(",")
                if fstype == "cgroup" and controller in options:
                    mounts.setdefault(controller, Path(fields[4]))
                elif fstype == "cgroup2":
                    mounts.setdefault("", Path(fields[4]))
        own = Path("/proc/self/cgroup").read_text().splitlines()
    except (OSError, ValueError, IndexError):
        return None
    for line in own:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") and controller in mounts:
            return 1, mounts[controller] / path.lstrip("/")
    for line in own:
        _, controllers, path = line.split(":", 2)
        if controllers == "" and "" in mounts:
            return 2, mounts[""] / path.lstrip("/")
    return None
