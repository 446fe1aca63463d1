"""seccomp: the deny-list BPF filter every call child runs under, and the container profile.

One table (``_DENY``, per architecture) yields both the filter the zygote
installs on itself once, and every child inherits (``install_seccomp_filter``),
and the container runtime's profile
(``container_seccomp_profile``, committed as ``deploy/seccomp.json``).
``_linux`` re-exports the public names. Imports only the standard library and
``gateway.sandbox._libc``.
"""

from __future__ import annotations

import ctypes
import os

from gateway.sandbox._libc import check, libc

__all__ = ["container_seccomp_profile", "install_no_unix_sockets_filter", "install_seccomp_filter"]

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_EPERM, _ENOSYS = 1, 38
_LD_ABS_W, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_X32_BIT = 0x40000000
_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET

# Denied everywhere: tracing other processes, namespaces and mounts, kernel modules and
# keyrings, BPF and perf, io_uring (it bypasses seccomp for the calls it queues), and
# System V IPC and POSIX message queues (mq_*; Landlock refuses creating one only where
# it applies): segments, queues and semaphores outlive the call that made them (a call
# could leave memory no limit counts, or data for the next call of its uid), and
# root-mode calls could attach root's own.
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
            29,
            30,
            31,
            67,
            64,
            65,
            66,
            220,
            68,
            69,
            70,
            71,
            240,
            241,
            242,
            243,
            244,
            245,
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
            194,
            196,
            195,
            197,
            190,
            193,
            191,
            192,
            186,
            189,
            188,
            187,
            180,
            181,
            182,
            183,
            184,
            185,
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
    "shmget",
    "shmat",
    "shmctl",
    "shmdt",
    "semget",
    "semop",
    "semctl",
    "semtimedop",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
)
"""The names of the ``_DENY`` numbers, in the same order (a test checks them)."""


_CONTAINER_ALLOWS = ("unshare", "mount")
"""What the container's profile allows of the calls' deny-list: the zygote's own set-up."""


def container_seccomp_profile() -> dict[str, object]:
    """The container runtime's seccomp profile (``deploy/seccomp.json``), from ``_DENY``.

    Docker's default profile refuses ``unshare`` without ``CAP_SYS_ADMIN``, so a
    non-root gateway could not give ``network: false`` actions their network
    namespace. This profile denies what every call child's own filter denies,
    except ``unshare`` (the zygote's user, network, pid and mount namespaces) and
    ``mount`` (its tmpfs and ``/proc`` there, see ``_private``; the kernel lets a
    user namespace mount only in mount namespaces it owns): the server and zygote
    get the same deny-list, and actions still get the full one on top.
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
            {"names": [n for n in _DENY_NAMES if n not in _CONTAINER_ALLOWS], **eperm},
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
    result = libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0)
    check(result, "prctl(PR_SET_SECCOMP)")


_COMPILED: list[tuple[ctypes.Array[_SockFilter], _SockFprog]] = []  # built once per process

_SOCKET = {"x86_64": 41}
"""The ``socket`` system call's number, per architecture of ``_DENY``."""
_AF_UNIX = 1


def _no_unix_sockets_program(arch: int, socket_nr: int) -> list[tuple[int, int, int, int]]:
    """BPF: ``socket(AF_UNIX, ...)`` fails with EPERM; anything else is left to the others."""
    return [
        (_LD_ABS_W, 0, 0, 4),  # arch (another one is refused by the deny-list filter)
        (_JEQ_K, 0, 5, arch),
        (_LD_ABS_W, 0, 0, 0),  # syscall number
        (_JEQ_K, 0, 3, socket_nr),
        (_LD_ABS_W, 0, 0, 16),  # socket's domain (low 32 bits of args[0])
        (_JEQ_K, 0, 1, _AF_UNIX),
        (_RET_K, 0, 0, _RET_ERRNO | _EPERM),
        (_RET_K, 0, 0, _RET_ALLOW),
    ]


def install_no_unix_sockets_filter() -> None:
    """Refuse new Unix sockets to this thread and its children (``network: false`` calls).

    A socket file is reached by its path, whatever the network namespace, so
    without this a call with no network still talked to the host's local
    services (a database's, Docker's socket). Only ``socket(AF_UNIX)`` is
    refused: ``socketpair`` (asyncio, subprocess) connects nothing outside the
    call and stays allowed. Stacked on ``install_seccomp_filter``'s.

    Raises:
        OSError: ``ENOSYS`` on an architecture without a table here, or the kernel's errno.
    """
    machine = os.uname().machine
    table = _DENY.get(machine)
    if table is None or machine not in _SOCKET:
        raise OSError(38, f"no seccomp table for {machine}")
    program = _no_unix_sockets_program(table[0], _SOCKET[machine])
    filters = (_SockFilter * len(program))(*(_SockFilter(*ins) for ins in program))
    prog = _SockFprog(len(program), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    result = libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0)
    check(result, "prctl(PR_SET_SECCOMP)")


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
