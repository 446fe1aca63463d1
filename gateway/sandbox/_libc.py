"""The C library handle and errno checking shared by the sandbox's ctypes wrappers.

``_linux`` (prctl, unshare), ``_landlock`` and ``_seccomp`` call the kernel
through ``libc`` and turn a negative return into ``OSError`` with the real
errno via ``check``. This module imports only the standard library.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["check", "libc", "syscall", "trim_heap"]

# The interpreter's own symbols include the C library's. Not ``ctypes.util.find_library``:
# it imports subprocess, threading and tempfile into the zygote, and every fork then runs
# their at-fork hooks (about 170 copy-on-write page faults per call).
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]
libc.prctl.restype = ctypes.c_int
libc.unshare.argtypes = [ctypes.c_int]
libc.unshare.restype = ctypes.c_int
libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
libc.mount.restype = ctypes.c_int
libc.syscall.restype = ctypes.c_long


def check(result: int, what: str) -> int:
    """Return ``result``, or raise ``OSError`` with errno when the call failed (negative)."""
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def syscall(number: int, *args: object) -> int:
    """Call ``syscall(2)`` with ctypes-typed ``args``; the raw (unchecked) result."""
    return int(libc.syscall(ctypes.c_long(number), *args))


def trim_heap() -> None:
    """Give the C heap's free pages back to the kernel (glibc ``malloc_trim``; else nothing).

    Importing modules leaves megabytes of freed compile-time garbage in the heap;
    every page still mapped is one more page-table entry a ``fork`` copies and an
    ``exit`` tears down, so the zygote trims once before it starts forking.
    """
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
