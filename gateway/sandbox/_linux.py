"""Thin ctypes wrappers over the Linux calls the sandbox needs (prctl, unshare, syscall).

Python 3.11 has no ``os.unshare`` and no ``prctl``; these wrappers raise
``OSError`` with the real errno so callers can report why the kernel refused.
This module imports only the standard library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = [
    "CLONE_NEWNET",
    "CLONE_NEWUSER",
    "PR_SET_CHILD_SUBREAPER",
    "PR_SET_DUMPABLE",
    "PR_SET_NO_NEW_PRIVS",
    "PR_SET_PDEATHSIG",
    "landlock_abi",
    "prctl",
    "seccomp_mode",
    "unshare",
]

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_GET_SECCOMP = 21
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
_SYS_LANDLOCK_CREATE_RULESET = 444  # x86_64 and aarch64 share this number
_LANDLOCK_CREATE_RULESET_VERSION = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.prctl.restype = ctypes.c_int
_libc.unshare.argtypes = [ctypes.c_int]
_libc.unshare.restype = ctypes.c_int
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """Call ``prctl(2)``; raise ``OSError`` on failure."""
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def unshare(flags: int) -> None:
    """Call ``unshare(2)``; raise ``OSError`` (EPERM, EINVAL...) when the kernel refuses."""
    _check(_libc.unshare(flags), "unshare")


def seccomp_mode() -> int:
    """Return the current seccomp mode (0 none, 2 filter); ``OSError`` when unsupported."""
    return prctl(PR_GET_SECCOMP)


def landlock_abi() -> int:
    """Return the Landlock ABI version the kernel offers; ``OSError`` when unavailable."""
    result = _libc.syscall(
        ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET),
        ctypes.c_void_p(None),
        ctypes.c_size_t(0),
        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
    )
    return _check(int(result), "landlock_create_ruleset")
