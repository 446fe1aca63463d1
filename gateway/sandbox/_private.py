# os.path on purpose, like the zygote: this runs in it.
# ruff: noqa: PTH115, PTH123
"""The zygote's private view: its own pid and mount namespaces, /proc and scratch tmpfs.

Without them a call sees the whole host (or container) through ``/proc``: every
process's command line (a ``psql postgres://user:password@...`` included), the
host's connections in ``/proc/<pid>/net`` even from a ``network: false`` call, and
it can signal any process of its uid by pid. And its working directory lives on
``TMPDIR``'s disk, which one call could fill, files or inodes, for the whole host.

``enter`` (called by the zygote once ``Init`` came, after the supervisor put it in
its cgroups) moves the zygote into a new mount and pid namespace (inside a new user
namespace when it is not root) and forks: the child becomes pid 1 of the new
namespace, the real zygote, and the original process only waits for it and exits
with its status (``_wait_for``). In the child:

- ``/proc`` is mounted afresh: it lists only the zygote, its spares and calls and
  what they start. Processes outside have no pid here, so a call cannot signal them;
  and pid 1 ignores every signal from its namespace it has no handler for, so a call
  cannot kill its zygote with SIGKILL (its other calls would die with it).
- the call-directory root (``tmp``) becomes a tmpfs of ``GATEWAY_SANDBOX_TMP_MB``
  (and ``FILES_PER_MB`` inodes per MB): a call that fills it gets ENOSPC, like its
  concurrent calls on the same zygote, but the host's disk stays untouched. Its
  pages are memory, counted by the zygote's memory cgroup (the supervisor's bound
  adds the size). It is ``noexec``: a call cannot run a program it wrote or
  downloaded there, nor map a library from it (``python script.py`` still reads a
  script it wrote; ``./script`` is refused).

Mounts are private to the namespace (``MS_PRIVATE`` from ``/`` down, first): nothing
propagates to the host, and everything goes when the zygote's last process does.
Where the kernel refuses (no ``CAP_SYS_ADMIN`` and no user namespaces, or a
container's ``/proc`` with masked paths, which the kernel does not let a user
namespace remount), the zygote goes on without that part and says why
(``PrivateView``, shown by ``gateway doctor`` and logged once), as it does for
Landlock or seccomp.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal

from gateway.sandbox import _linux
from gateway.sandbox.protocol import PrivateView

__all__ = ["FILES_PER_MB", "enter", "map_own_ids"]

FILES_PER_MB = 256
"""Inodes of the scratch tmpfs per MB of its size (files and directories: 65,536 for
256 MB): a call making a million empty files hits ENOSPC, not the zygote's removal."""


def enter(ctl_fd: int, tmp: str, tmp_mb: int) -> tuple[PrivateView, int]:
    """Become pid 1 of new namespaces with a private ``/proc`` and ``tmp`` on a tmpfs.

    Returns the view and this zygote's pid as the supervisor sees it (the outer
    namespace's: its memory is read, and its children are found, through that
    pid). Returns in the new zygote only: the process that called it waits for
    that zygote and exits with its status, having closed ``ctl_fd``. When the
    kernel refuses the namespaces, returns at once in the caller, with the reason.
    """
    uid, gid = os.geteuid(), os.getegid()
    flags = _linux.CLONE_NEWNS | _linux.CLONE_NEWPID
    try:
        if uid == 0:
            _linux.unshare(flags)
        else:
            _linux.unshare(_linux.CLONE_NEWUSER | flags)
            map_own_ids(uid, gid)
    except OSError as exc:
        why = f"the kernel refused new pid and mount namespaces ({exc.strerror or exc})"
        return PrivateView(
            private_proc=False,
            private_proc_detail=f"{why}: calls see every process here in /proc",
            private_tmp=False,
            private_tmp_detail=f"{why}: call directories are on the disk of {tmp}",
        ), os.getpid()
    host_pid = _fork_init(ctl_fd)
    proc_refused = _mount_proc()
    tmp_refused = _mount_tmp(tmp, tmp_mb)
    return PrivateView(
        private_proc=proc_refused is None,
        private_proc_detail=proc_refused
        or "a pid namespace and /proc of its own: calls see and signal only the sandbox's "
        "processes",
        private_tmp=tmp_refused is None,
        private_tmp_detail=tmp_refused
        or f"call directories on a tmpfs of {tmp_mb} MB ({tmp_mb * FILES_PER_MB} files) "
        "per zygote, noexec",
    ), host_pid


def map_own_ids(uid: int, gid: int) -> None:
    """In a user namespace just made: be ``uid``/``gid`` in it too (no other id maps)."""
    with open("/proc/self/setgroups", "w") as fh:
        fh.write("deny")
    with open("/proc/self/uid_map", "w") as fh:
        fh.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as fh:
        fh.write(f"{gid} {gid} 1")


def _fork_init(ctl_fd: int) -> int:
    """Fork pid 1 of the new pid namespace; return its outer pid, in it (see ``enter``)."""
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(hold_r)
        os.close(ctl_fd)  # the supervisor's EOF comes from the zygote alone
        _wait_for(pid)
    os.close(hold_w)
    # Die with the waiting process (the supervisor kills that one, by its pid); it may
    # have died before this line: then its end of the pipe is closed already.
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if select.select([hold_r], [], [], 0)[0]:
        os._exit(1)
    os.close(hold_r)
    # The host's /proc, not mounted over yet, names this process by its outer pid.
    return int(os.readlink("/proc/self"))


def _wait_for(pid: int) -> None:
    """Wait for the zygote ``pid`` and exit as it did (never returns).

    Ctrl-C in a terminal reaches the whole process group: the server drains, and
    ends the zygote by closing its socket; this process must not end it sooner.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            os._exit(70)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            break
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # killed: end the same way, so the supervisor reads the same status
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


def _mount_proc() -> str | None:
    """Mount a fresh ``/proc`` for this pid namespace; None, or why not."""
    try:
        _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
        _linux.mount("proc", "/proc", "proc", _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC)
    except OSError as exc:
        return (
            "a pid namespace of its own (calls cannot signal processes outside the "
            "sandbox), but /proc is the host's: mounting a new one was refused "
            f"({exc.strerror or exc}), so calls still see every process's command line"
        )
    return None


def _mount_tmp(tmp: str, tmp_mb: int) -> str | None:
    """Mount a tmpfs of ``tmp_mb`` on ``tmp``; None, or why not."""
    options = f"size={tmp_mb}m,nr_inodes={tmp_mb * FILES_PER_MB},mode=0711"
    try:
        with contextlib.suppress(OSError):  # done by _mount_proc unless it failed early
            _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
        flags = _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC
        _linux.mount("tmpfs", tmp, "tmpfs", flags, options)
    except OSError as exc:
        return (
            f"mounting a tmpfs was refused ({exc.strerror or exc}): call directories "
            f"are on the disk of {tmp}, which a call could fill"
        )
    return None
