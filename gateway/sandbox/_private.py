# os.path on purpose, like the zygote: this runs in it.
# ruff: noqa: PTH123
"""The zygote's private view: its own pid and mount namespaces, /proc and scratch tmpfs.

Without them a call sees the whole host (or container) through ``/proc``: every
process's command line (a ``psql postgres://user:password@...`` included), the
host's connections in ``/proc/<pid>/net`` even from a ``network: false`` call, and
it can signal any process of its uid by pid. And its working directory lives on
``TMPDIR``'s disk, which one call could fill, files or inodes, for the whole host.

``enter`` (called by the zygote once ``Init`` came, after the supervisor put it in
its cgroups) forks: the child is the real zygote, in a new mount namespace and,
where a fresh ``/proc`` can be mounted, a new pid namespace whose pid 1 it is
(inside a new user namespace when not root, or root without ``CAP_SYS_ADMIN``,
see ``unshare_keeping_ids``). The original process, the one the
supervisor started, only waits for it (``_wait_for``): it exits as the zygote did
and then removes the zygote's folder from the host (inside, a tmpfs covers it).
In the child:

- ``/proc`` is mounted afresh: it lists only the zygote, its spares and calls and
  what they start. Processes outside have no pid here, so a call cannot signal them;
  and pid 1 ignores every signal from its namespace it has no handler for (the
  zygote ignores SIGINT too, see ``zygote``), so a call cannot kill its zygote.
  ``vm.memfd_noexec`` is 2 in the namespace where it may be set (root): no memory
  file can be executed (the way around a noexec folder). A pid namespace without
  its own ``/proc`` would be worse than none (every pid the zygote reads there is
  another process's), so whether one can be mounted is tried first, in a throw-away child
  (``_try_namespaces``: a container runtime masking paths of ``/proc`` keeps a user
  namespace from mounting one), and without it there is no pid namespace.
- the call-directory root (``tmp``) becomes a tmpfs of ``GATEWAY_SANDBOX_TMP_MB``
  (and ``FILES_PER_MB`` inodes per MB): a call that fills it gets ENOSPC, like its
  concurrent calls on the same zygote, but the host's disk stays untouched. Its
  pages are memory, counted by the zygote's memory cgroup (the supervisor's bound
  adds the size and the inodes). It is ``noexec``: a call cannot run a program it
  wrote or downloaded there, nor map a library from it (``python script.py`` still
  reads a script it wrote; ``./script`` is refused).

Mounts are private to the namespace (``MS_PRIVATE`` from ``/`` down, first; if that
is refused nothing is mounted): nothing propagates to the host, and everything goes
when the zygote's last process does. Where the kernel refuses (no ``CAP_SYS_ADMIN``
and no user namespaces), the zygote goes on without that part and says why
(``PrivateView``, shown by ``gateway doctor`` and logged once), as it does for
Landlock or seccomp.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from typing import NamedTuple

from gateway.sandbox import _linux
from gateway.sandbox._cleanup import remove_tree
from gateway.sandbox.probes import in_child
from gateway.sandbox.protocol import PrivateView

__all__ = [
    "FILES_PER_MB",
    "INODE_BYTES",
    "Entered",
    "enter",
    "map_own_ids",
    "needs_user_namespace",
    "unshare_keeping_ids",
]

FILES_PER_MB = 64
"""Inodes of the scratch tmpfs per MB of its size (files and directories: 16,384 for
256 MB): a call making a million empty files hits ENOSPC, not the zygote's removal."""
INODE_BYTES = 1536
"""Kernel memory of one tmpfs inode with its name (about 1.3 KB measured): the
supervisor's memory bound counts ``FILES_PER_MB`` of them per MB besides the size."""


class Entered(NamedTuple):
    """What ``enter`` got: the view, the zygote's pid as the supervisor sees it, and
    whether it has a mount namespace of its own (mounts there reach no one else)."""

    view: PrivateView
    host_pid: int
    own_mounts: bool


def enter(ctl_fd: int, tmp: str, tmp_mb: int) -> Entered:
    """Fork the zygote into namespaces of its own with a private ``/proc`` and ``tmp``
    on a tmpfs (see ``Entered``).

    Returns in the new zygote only: the process that called it waits for that
    zygote and exits with its status, having closed ``ctl_fd`` (see ``_wait_for``).
    When the kernel refuses the namespaces, returns at once in the caller, with
    the reason.
    """
    refused, proc_refused = _try_namespaces(tmp)
    if refused is not None and needs_user_namespace():
        # Tried first: a user namespace this process entered but could not map its ids
        # in cannot be left again (it would run as the overflow uid, 65534).
        why = f"the kernel refused new namespaces ({refused})"
        return Entered(_refused(why), os.getpid(), own_mounts=False)
    pid_flag = 0 if proc_refused else _linux.CLONE_NEWPID
    try:
        if pid_flag or needs_user_namespace():  # else the zygote's mount namespace alone
            unshare_keeping_ids(pid_flag)
    except OSError as exc:
        why = f"the kernel refused new namespaces ({exc.strerror or exc})"
        return Entered(_refused(why), os.getpid(), own_mounts=False)
    host_pid = _fork_init(ctl_fd, tmp)
    try:
        _linux.unshare(_linux.CLONE_NEWNS)
        # Before any mount: a mount on a shared one would show on the host.
        _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
    except OSError as exc:
        if pid_flag:  # cannot be: the same was done in _try_namespaces's child
            raise
        why = f"the kernel refused a mount namespace of its own ({exc.strerror or exc})"
        return Entered(_refused(why), host_pid, own_mounts=False)
    memfd = _mount_proc() if pid_flag else ""
    tmp_refused = _mount_tmp(tmp, tmp_mb)
    view = PrivateView(
        private_proc=not proc_refused,
        private_proc_detail=proc_refused
        or "a pid namespace and /proc of its own: calls see and signal only the sandbox's "
        f"processes{memfd}",
        private_tmp=tmp_refused is None,
        private_tmp_detail=tmp_refused
        or f"call directories on a tmpfs of {tmp_mb} MB ({tmp_mb * FILES_PER_MB} files) "
        "per zygote, noexec",
    )
    return Entered(view, host_pid, own_mounts=True)


def _refused(why: str) -> PrivateView:
    # No path in the details: they are logged once per text, not once per zygote.
    return PrivateView(
        private_proc=False,
        private_proc_detail=f"{why}: calls see every process here in /proc",
        private_tmp=False,
        private_tmp_detail=f"{why}: call directories are on TMPDIR's disk",
    )


def needs_user_namespace() -> bool:
    """Whether new namespaces need a user namespace here: not root, or root without
    ``CAP_SYS_ADMIN`` (a container's default set, or a service that dropped it)."""
    return os.geteuid() != 0 or not _linux.has_capability(_linux.CAP_SYS_ADMIN)


def unshare_keeping_ids(flags: int) -> None:
    """``unshare(flags)``, inside a new user namespace where one is needed
    (``needs_user_namespace``), in which this process keeps its uid and gid.

    Not root, only those two ids exist there (this process maps them itself). Root
    keeps every id it has (so calls still get uids of their own, see ``_call_user``),
    which only a process outside the new namespace may map: a short-lived child
    does (``_map_from_outside``).

    Raises:
        OSError: the kernel refused (no user namespaces; root without ``CAP_SETUID``,
            ``CAP_SETGID`` or ``CAP_SETFCAP`` to map its ids).
    """
    if not needs_user_namespace():
        _linux.unshare(flags)
    elif os.geteuid() == 0:
        _map_from_outside(_linux.CLONE_NEWUSER | flags)
    else:
        uid, gid = os.geteuid(), os.getegid()
        _linux.unshare(_linux.CLONE_NEWUSER | flags)
        map_own_ids(uid, gid)


def _map_from_outside(flags: int) -> None:
    """``unshare(flags)`` (a new user namespace among them), then have a child still
    outside it map every uid and gid this process has to themselves.

    A process may write its own new namespace's maps, but only for its own single
    id: more needs ``CAP_SETUID``/``CAP_SETGID`` in the parent namespace, which it
    has just left (and root's uid 0 needs ``CAP_SETFCAP`` there).
    """
    maps = {name: _identity(name) for name in ("uid_map", "gid_map")}
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child that writes the maps
        code = 0
        try:
            os.close(go_w)
            if os.read(go_r, 1) != b"1":
                os._exit(0)  # the unshare failed: the parent raises
            for name, lines in maps.items():
                with open(f"/proc/{os.getppid()}/{name}", "w") as fh:
                    fh.write(lines)
        except OSError as exc:
            code = exc.errno or 1
        finally:
            os._exit(code)
    os.close(go_r)
    try:
        _linux.unshare(flags)
    except OSError:
        os.close(go_w)
        os.waitpid(pid, 0)
        raise
    os.write(go_w, b"1")
    os.close(go_w)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise OSError(
            code,
            f"mapping the ids of a user namespace: {os.strerror(code)} (root needs "
            "CAP_SETUID, CAP_SETGID and CAP_SETFCAP for it)",
        )


def _identity(name: str) -> str:
    """Every id this process's namespace maps, as a map of each to itself."""
    with open(f"/proc/self/{name}") as fh:
        ranges = [line.split() for line in fh if line.strip()]
    return "\n".join(f"{first} {first} {count}" for first, _, count in ranges)


def map_own_ids(uid: int, gid: int) -> None:
    """In a user namespace just made: be ``uid``/``gid`` in it too (no other id maps)."""
    with open("/proc/self/setgroups", "w") as fh:
        fh.write("deny")
    with open("/proc/self/uid_map", "w") as fh:
        fh.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as fh:
        fh.write(f"{gid} {gid} 1")


_NO_NAMESPACES = "no namespaces: "


def _try_namespaces(tmp: str) -> tuple[str | None, str | None]:
    """Whether the zygote's namespaces can be made here, and a new ``/proc`` mounted:
    (None, None), or why not (the namespaces, the ``/proc``). Tried in a child with
    the namespaces the zygote would get, by its own child (pid 1 of the new pid
    namespace: a user namespace may mount only the ``/proc`` of a pid namespace it
    owns), on the empty ``tmp``."""

    def attempt() -> str:
        try:
            unshare_keeping_ids(_linux.CLONE_NEWNS | _linux.CLONE_NEWPID)
        except OSError as exc:
            raise OSError(exc.errno or 1, _NO_NAMESPACES + (exc.strerror or str(exc))) from None
        pid = os.fork()
        if pid == 0:  # pragma: no cover - pid 1 of the namespace
            code = 0
            try:
                _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
                _linux.mount("proc", tmp, "proc", _linux.MS_NOSUID | _linux.MS_NODEV)
            except OSError as exc:
                code = exc.errno or 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code:
            raise OSError(code, f"mount: {os.strerror(code)}")
        return "mounted"

    ok, detail = in_child(attempt)
    if ok:
        return None, None
    if detail.startswith(_NO_NAMESPACES):
        refused = detail.removeprefix(_NO_NAMESPACES)
        return refused, f"new namespaces were refused ({refused}), so no pid namespace"
    return None, (
        f"mounting a /proc of its own was refused ({detail}), so no pid namespace either: "
        "calls see every process here in /proc (a container runtime masking paths of "
        "/proc keeps a gateway in a user namespace from mounting one)"
    )


def _fork_init(ctl_fd: int, tmp: str) -> int:
    """Fork the zygote; return its pid as the supervisor sees it, in it (see ``enter``)."""
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(hold_r)
        os.close(ctl_fd)  # the supervisor's EOF comes from the zygote alone
        _linux.prctl(_linux.PR_SET_DUMPABLE, 0)
        os.write(hold_w, str(pid).encode())  # fork's pid is the supervisor's namespace's
        _wait_for(pid, tmp)
    os.close(hold_w)
    # Die with the waiting process (the supervisor kills that one, by its pid); it may
    # have died before this line: then its end of the pipe is closed already.
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    outer = os.read(hold_r, 32)
    if not outer or select.select([hold_r], [], [], 0)[0]:
        os._exit(1)
    os.close(hold_r)
    return int(outer)


def _wait_for(pid: int, tmp: str) -> None:
    """Wait for the zygote ``pid``, remove ``tmp`` and exit as the zygote did (never returns).

    Ctrl-C in a terminal reaches the whole process group: the server drains, and
    ends the zygote by closing its socket; this process must not end it sooner.
    It is in the host's mount namespace: ``tmp`` there is the folder under the
    zygote's tmpfs (empty), or the calls' directories themselves without one.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            os._exit(70)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            break
    with contextlib.suppress(OSError):
        remove_tree(tmp)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # killed: end the same way, so the supervisor reads the same status
        with contextlib.suppress(OSError, ValueError):  # SIGKILL's cannot be changed
            signal.signal(-code, signal.SIG_DFL)
        with contextlib.suppress(OSError):
            os.kill(os.getpid(), -code)
        code = 128 - code  # a signal it ignores or that did not end it: as a shell says it
    os._exit(code & 0xFF)


def _mount_proc() -> str:
    """Mount a fresh ``/proc`` for this pid namespace, and keep its memory files from
    being executed where the kernel lets us; what of that holds, for the detail.

    ``vm.memfd_noexec`` is per pid namespace (Linux 6.3), but only the host's root may
    write it: not root, it stays what the host set (a new namespace inherits it), and
    a call can run a copy of a program from a memory file (noexec stops files only).

    Raises:
        OSError: the kernel refused, though ``_try_namespaces`` found it would not: the
            zygote does not start (a pid namespace with the host's ``/proc`` would
            have it kill, and look for strays among, the wrong processes).
    """
    flags = _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC
    _linux.mount("proc", "/proc", "proc", flags)
    setting = "/proc/sys/vm/memfd_noexec"
    with contextlib.suppress(OSError), open(setting, "w") as fh:
        fh.write("2")
    try:
        with open(setting) as fh:
            value = fh.read().strip()
    except OSError:
        return "; memory files can be executed (no vm.memfd_noexec before Linux 6.3)"
    if value == "2":
        return ", and cannot execute memory files"
    return (
        f"; memory files can be executed (vm.memfd_noexec {value}: only the host's root may "
        "raise it; set vm.memfd_noexec=2 on the host)"
    )


def _mount_tmp(tmp: str, tmp_mb: int) -> str | None:
    """Mount a tmpfs of ``tmp_mb`` on ``tmp``; None, or why not."""
    options = f"size={tmp_mb}m,nr_inodes={tmp_mb * FILES_PER_MB},mode=0711"
    flags = _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC
    try:
        _linux.mount("tmpfs", tmp, "tmpfs", flags, options)
    except OSError as exc:
        return (
            f"mounting a tmpfs was refused ({exc.strerror or exc}): call directories "
            "are on TMPDIR's disk, which a call could fill"
        )
    return None
