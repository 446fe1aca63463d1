"""Thin ctypes wrappers over the Linux calls the sandbox needs (prctl, unshare, seccomp, Landlock).

Python 3.11 has no ``os.unshare``, ``prctl`` or seccomp; these wrappers raise
``OSError`` with the real errno so callers can report why the kernel refused.
The same deny-list also yields the container's seccomp profile
(``container_seccomp_profile``, committed as ``deploy/seccomp.json``).
This module imports only the standard library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import stat
from typing import NamedTuple

__all__ = [
    "CLONE_NEWNET",
    "CLONE_NEWUSER",
    "PR_SET_CHILD_SUBREAPER",
    "PR_SET_DUMPABLE",
    "PR_SET_NO_NEW_PRIVS",
    "PR_SET_PDEATHSIG",
    "LandlockRules",
    "container_seccomp_profile",
    "install_seccomp_filter",
    "landlock_abi",
    "landlock_add_rules",
    "landlock_enforce",
    "landlock_handled",
    "landlock_restrict",
    "landlock_ruleset",
    "prctl",
    "prepare_seccomp_filter",
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
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
_SYS_LANDLOCK_CREATE_RULESET = 444  # x86_64 and aarch64 share these numbers
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]
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


def set_name(name: str) -> None:
    """Set this thread's name (``/proc/<pid>/comm``, 15 bytes at most) for ps and tests."""
    buffer = ctypes.create_string_buffer(name.encode()[:15])
    _check(_libc.prctl(_PR_SET_NAME, ctypes.addressof(buffer), 0, 0, 0), "prctl(PR_SET_NAME)")


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


# Landlock filesystem access rights (linux/landlock.h).
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
FS_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
"""The only rights a rule on a file (not a directory) may carry."""
FS_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
"""Read and execute files, list directories."""
FS_ALL = (1 << 16) - 1
"""Every right (masked with what the ABI handles)."""


def landlock_handled(abi: int) -> int:
    """The filesystem rights Landlock ABI ``abi`` knows (all of them are handled: denied
    unless a rule allows them). Network rights are never handled."""
    if abi < 1:
        return 0
    if abi == 1:
        return FS_REFER - 1
    if abi == 2:
        return FS_TRUNCATE - 1
    if abi < 5:
        return FS_IOCTL_DEV - 1
    return FS_ALL


class LandlockRules(NamedTuple):
    """A filesystem allow-list: the rights handled, and (path, rights) rules beneath paths."""

    handled: int
    rules: tuple[tuple[str, int], ...]


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _syscall(number: int, *args: object) -> int:
    return int(_libc.syscall(ctypes.c_long(number), *args))


def landlock_ruleset(rules: LandlockRules) -> int:
    """Create a ruleset fd (close-on-exec) holding ``rules``; enforce it with ``landlock_enforce``.

    Raises:
        OSError: the kernel refused to create the ruleset or to add a rule.
    """
    attr = _RulesetAttr(rules.handled)
    ruleset = _check(
        _syscall(
            _SYS_LANDLOCK_CREATE_RULESET,
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
            ctypes.c_uint32(0),
        ),
        "landlock_create_ruleset",
    )
    try:
        landlock_add_rules(ruleset, rules.handled, rules.rules)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def landlock_add_rules(ruleset: int, handled: int, rules: tuple[tuple[str, int], ...]) -> int:
    """Add (path, rights) rules to ``ruleset``; return how many were added.

    A path that cannot be opened (missing, no search permission) gets no rule,
    so it stays denied. Rights are masked with ``handled`` (and, on a file, with
    the rights a file can carry).

    Raises:
        OSError: the kernel refused a rule.
    """
    added = 0
    for path, access in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            allowed = access & handled
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                allowed &= FS_FILE_RIGHTS
            if not allowed:
                continue
            beneath = _PathBeneathAttr(allowed, fd)
            _check(
                _syscall(
                    _SYS_LANDLOCK_ADD_RULE,
                    ctypes.c_int(ruleset),
                    ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
                    ctypes.byref(beneath),
                    ctypes.c_uint32(0),
                ),
                f"landlock_add_rule({path})",
            )
            added += 1
        finally:
            os.close(fd)
    return added


def landlock_enforce(ruleset: int) -> None:
    """Restrict this thread (and what it starts) to ``ruleset``, then close it.

    Needs ``PR_SET_NO_NEW_PRIVS`` first.

    Raises:
        OSError: the kernel refused.
    """
    try:
        _check(
            _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)),
            "landlock_restrict_self",
        )
    finally:
        os.close(ruleset)


def landlock_restrict(rules: LandlockRules) -> None:
    """Restrict this thread (and what it starts) to ``rules``; needs no_new_privs first.

    Raises:
        OSError: the kernel refused to create or enforce the ruleset.
    """
    landlock_enforce(landlock_ruleset(rules))


# --- seccomp: a deny-list of calls no action needs ------------------------------------------

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_EPERM, _ENOSYS = 1, 38
_LD_ABS_W, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_X32_BIT = 0x40000000
_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET

# Denied everywhere: tracing other processes, namespaces and mounts, kernel modules and
# keyrings, BPF and perf, io_uring (it bypasses seccomp for the calls it queues).
_DENY = {
    "x86_64": (
        0xC000003E,  # AUDIT_ARCH_X86_64
        [
            101,
            310,
            311,
            165,
            166,
            155,
            161,
            272,
            308,
            321,
            298,
            246,
            320,
            175,
            313,
            176,
            250,
            248,
            249,
            323,
            304,
            169,
            167,
            168,
            163,
            425,
            426,
            427,
        ],
        56,  # clone: refused with namespace flags
        435,  # clone3: its flags are out of reach, so ENOSYS (libc falls back to clone)
    ),
    "aarch64": (
        0xC00000B7,  # AUDIT_ARCH_AARCH64
        [
            117,
            270,
            271,
            40,
            39,
            41,
            51,
            97,
            268,
            280,
            241,
            104,
            294,
            105,
            273,
            106,
            219,
            217,
            218,
            282,
            265,
            142,
            224,
            225,
            89,
            425,
            426,
            427,
        ],
        220,
        435,
    ),
}


_DENY_NAMES = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "bpf",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "open_by_handle_at",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
)
"""The names of the ``_DENY`` numbers, in the same order (a test checks them)."""


def container_seccomp_profile() -> dict[str, object]:
    """The container runtime's seccomp profile (``deploy/seccomp.json``), from ``_DENY``.

    Docker's default profile refuses ``unshare`` without ``CAP_SYS_ADMIN``, so a
    non-root gateway could not give ``network: false`` actions their network
    namespace. This profile denies what every call child's own filter denies,
    except ``unshare`` (the zygote's user + network namespace): the server and
    zygote get the same deny-list, and actions still get the full one on top.
    """
    flags = [1 << bit for bit in range(32) if _NAMESPACE_FLAGS & (1 << bit)]
    eperm = {"action": "SCMP_ACT_ERRNO", "errnoRet": _EPERM}
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [
            {
                "architecture": "SCMP_ARCH_X86_64",
                "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            },
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        ],
        "syscalls": [
            {"names": [n for n in _DENY_NAMES if n != "unshare"], **eperm},
            # clone3's flags are out of a filter's reach: ENOSYS makes libc use clone.
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": _ENOSYS},
            *(
                {
                    "names": ["clone"],
                    **eperm,
                    "args": [{"index": 0, "value": f, "valueTwo": f, "op": "SCMP_CMP_MASKED_EQ"}],
                }
                for f in flags
            ),
        ],
    }


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [
        ("len", ctypes.c_ushort),
        ("filter", ctypes.POINTER(_SockFilter)),
    ]


def _program(
    arch: int, deny: list[int], clone: int, clone3: int
) -> list[tuple[int, int, int, int]]:
    """The BPF program: (code, jt, jf, k) tuples; denials jump to the shared tail."""
    body: list[tuple[int, int, int, int] | tuple[str, int]] = [
        (_LD_ABS_W, 0, 0, 4),  # arch
        ("jne_deny", arch),
        (_LD_ABS_W, 0, 0, 0),  # syscall number
        ("jge_deny", _X32_BIT),
        ("jeq_enosys", clone3),
        *(("jeq_deny", nr) for nr in deny),
        (_JEQ_K, 0, 0, clone),  # patched below: clone -> check its flags
        (_RET_K, 0, 0, _RET_ALLOW),
        (_LD_ABS_W, 0, 0, 16),  # clone's flags (low 32 bits of args[0])
        ("jset_deny", _NAMESPACE_FLAGS),
        (_RET_K, 0, 0, _RET_ALLOW),
    ]
    deny_at = len(body)  # then: deny (EPERM), enosys
    enosys_at = deny_at + 1
    out: list[tuple[int, int, int, int]] = []
    for index, ins in enumerate(body):
        to_deny = deny_at - index - 1
        if ins[0] == "jne_deny":
            out.append((_JEQ_K, 0, to_deny, ins[1]))
        elif ins[0] == "jge_deny":
            out.append((_JGE_K, to_deny, 0, ins[1]))
        elif ins[0] == "jeq_deny":
            out.append((_JEQ_K, to_deny, 0, ins[1]))
        elif ins[0] == "jset_deny":
            out.append((_JSET_K, to_deny, 0, ins[1]))
        elif ins[0] == "jeq_enosys":
            out.append((_JEQ_K, enosys_at - index - 1, 0, ins[1]))
        elif ins[0] == _JEQ_K and ins[3] == clone:
            out.append((_JEQ_K, 1, 0, clone))  # equal: skip the ALLOW, check the flags
        else:
            out.append(ins)  # type: ignore[arg-type]
    out.append((_RET_K, 0, 0, _RET_ERRNO | _EPERM))
    out.append((_RET_K, 0, 0, _RET_ERRNO | _ENOSYS))
    return out


def install_seccomp_filter() -> None:
    """Install the deny-list filter on this thread (needs ``PR_SET_NO_NEW_PRIVS`` first).

    Raises:
        OSError: ``ENOSYS`` on an architecture without a table here, or the kernel's errno.
    """
    prog = _compiled_filter()
    result = _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0)
    _check(result, "prctl(PR_SET_SECCOMP)")


def prepare_seccomp_filter() -> None:
    """Build the filter program now (the zygote does, so no call pays for it after a fork).

    Raises:
        OSError: ``ENOSYS`` on an architecture without a table here.
    """
    _compiled_filter()


_COMPILED: list[tuple[ctypes.Array[_SockFilter], _SockFprog]] = []  # built once per process


def _compiled_filter() -> _SockFprog:
    if not _COMPILED:
        table = _DENY.get(os.uname().machine)
        if table is None:
            raise OSError(38, f"no seccomp table for {os.uname().machine}")
        program = _program(*table)
        filters = (_SockFilter * len(program))(*(_SockFilter(*ins) for ins in program))
        prog = _SockFprog(len(program), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
        _COMPILED.append((filters, prog))  # the array must outlive the pointer to it
    return _COMPILED[0][1]
