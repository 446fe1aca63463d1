"""Thin ctypes wrappers over the Linux calls the sandbox needs (prctl, unshare, seccomp, Landlock).

Python 3.11 has no ``os.unshare``, ``prctl`` or seccomp; these wrappers raise
``OSError`` with the real errno so callers can report why the kernel refused.
This module holds the process calls (``prctl``, ``set_name``, ``unshare``,
``seccomp_mode``) and is the one import callers use: it re-exports Landlock
(``_landlock``) and the seccomp filter and container profile (``_seccomp``).
Callers look Landlock up here (``_linux.landlock_abi``), so tests may patch it.
This module imports only the standard library and those private modules.
"""

from __future__ import annotations

import contextlib
import ctypes

from gateway.sandbox import _seccomp
from gateway.sandbox._landlock import (
    FS_ALL,
    FS_EXECUTE,
    FS_FILE_RIGHTS,
    FS_IOCTL_DEV,
    FS_MAKE_BLOCK,
    FS_MAKE_CHAR,
    FS_MAKE_DIR,
    FS_MAKE_FIFO,
    FS_MAKE_REG,
    FS_MAKE_SOCK,
    FS_MAKE_SYM,
    FS_READ,
    FS_READ_DIR,
    FS_READ_FILE,
    FS_REFER,
    FS_REMOVE_DIR,
    FS_REMOVE_FILE,
    FS_TRUNCATE,
    FS_WRITE_FILE,
    SCOPE_ABSTRACT_UNIX_SOCKET,
    SCOPE_SIGNAL,
    LandlockRules,
    OpenedRules,
    landlock_abi,
    landlock_add_rules,
    landlock_enforce,
    landlock_handled,
    landlock_restrict,
    landlock_ruleset,
    landlock_scoped,
)
from gateway.sandbox._libc import check, libc
from gateway.sandbox._seccomp import (
    container_seccomp_profile,
    install_no_unix_sockets_filter,
    install_seccomp_filter,
)

__all__ = [
    "CAP_SYS_ADMIN",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWUSER",
    "FS_ALL",
    "FS_EXECUTE",
    "FS_FILE_RIGHTS",
    "FS_IOCTL_DEV",
    "FS_MAKE_BLOCK",
    "FS_MAKE_CHAR",
    "FS_MAKE_DIR",
    "FS_MAKE_FIFO",
    "FS_MAKE_REG",
    "FS_MAKE_SOCK",
    "FS_MAKE_SYM",
    "FS_READ",
    "FS_READ_DIR",
    "FS_READ_FILE",
    "FS_REFER",
    "FS_REMOVE_DIR",
    "FS_REMOVE_FILE",
    "FS_TRUNCATE",
    "FS_WRITE_FILE",
    "MS_BIND",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_RDONLY",
    "MS_REC",
    "MS_REMOUNT",
    "PR_SET_CHILD_SUBREAPER",
    "PR_SET_DUMPABLE",
    "PR_SET_NO_NEW_PRIVS",
    "PR_SET_PDEATHSIG",
    "SCOPE_ABSTRACT_UNIX_SOCKET",
    "SCOPE_SIGNAL",
    "LandlockRules",
    "OpenedRules",
    "container_seccomp_profile",
    "drop_capabilities",
    "has_capability",
    "install_no_unix_sockets_filter",
    "install_seccomp_filter",
    "landlock_abi",
    "landlock_add_rules",
    "landlock_enforce",
    "landlock_handled",
    "landlock_restrict",
    "landlock_ruleset",
    "landlock_scoped",
    "mount",
    "prctl",
    "seccomp_mode",
    "set_name",
    "unshare",
]

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
_PR_SET_NAME = 15
PR_GET_SECCOMP = 21
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_PR_SET_SECUREBITS = 28
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_SECURE_ALL_BUT_KEEP_CAPS = 0xEF
"""NOROOT, NO_SETUID_FIXUP and NO_CAP_AMBIENT_RAISE, each with its lock bit."""
_CAPABILITY_VERSION_3 = 0x20080522
CAP_SYS_ADMIN = 21
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

# The seccomp tables, where the tests that check them against the kernel's names look.
_DENY = _seccomp._DENY
_DENY_NAMES = _seccomp._DENY_NAMES
_NAMESPACE_FLAGS = _seccomp._NAMESPACE_FLAGS


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """Call ``prctl(2)``; raise ``OSError`` on failure."""
    return check(libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def set_name(name: str) -> None:
    """Set this thread's name (``/proc/<pid>/comm``, 15 bytes at most) for ps and tests."""
    buffer = ctypes.create_string_buffer(name.encode()[:15])
    check(libc.prctl(_PR_SET_NAME, ctypes.addressof(buffer), 0, 0, 0), "prctl(PR_SET_NAME)")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_capabilities() -> None:
    """Give up every capability for good, keeping uid 0 (the sandbox's root fallback).

    Locks the securebits so uid 0 never regains capabilities (not by ``execve``
    of anything, setuid or not), empties the bounding and ambient sets, then
    clears the effective, permitted and inheritable sets. What stays is the
    ownership of root's files, which Landlock then limits. A process without
    ``CAP_SETPCAP`` (a container that dropped it) cannot touch the securebits
    or the bounding set; clearing the permitted set under ``no_new_privs``
    still keeps ``execve`` from granting anything back.

    Raises:
        OSError: the kernel refused to clear the capability sets.
    """
    with open("/proc/sys/kernel/cap_last_cap", "rb") as fh:  # noqa: PTH123 - procfs
        last = int(fh.read())
    with contextlib.suppress(PermissionError):
        prctl(_PR_SET_SECUREBITS, _SECURE_ALL_BUT_KEEP_CAPS)
    for cap in range(last + 1):
        with contextlib.suppress(PermissionError):
            prctl(_PR_CAPBSET_DROP, cap)
    prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    check(libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")


def has_capability(cap: int) -> bool:
    """Whether this process holds capability ``cap`` (effective) in its user namespace."""
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    check(libc.capget(ctypes.byref(header), ctypes.byref(data)), "capget")
    return bool(data[cap // 32].effective & (1 << cap % 32))


def unshare(flags: int) -> None:
    """Call ``unshare(2)``; raise ``OSError`` (EPERM, EINVAL...) when the kernel refuses."""
    check(libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    """Call ``mount(2)``; raise ``OSError`` (EPERM, EINVAL...) when the kernel refuses."""
    check(
        libc.mount(
            None if source is None else source.encode(),
            target.encode(),
            None if fstype is None else fstype.encode(),
            flags,
            data.encode() or None,
        ),
        "mount",
    )


def seccomp_mode() -> int:
    """Return the current seccomp mode (0 none, 2 filter); ``OSError`` when unsupported."""
    return prctl(PR_GET_SECCOMP)
