"""Capability probe: which isolation features the kernel grants here.

Runs inside the zygote (a fresh interpreter, never the server), forking a
short-lived child per feature so a feature that half-works cannot damage the
zygote. ``gateway doctor`` prints the result; the supervisor logs it once.
Imports only the standard library and ``gateway.sandbox``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from gateway.sandbox import _linux
from gateway.sandbox.protocol import Capabilities

__all__ = ["SANDBOX_GID", "SANDBOX_UID_BASE", "in_child", "probe"]

SANDBOX_UID_BASE = 64000
"""When the gateway runs as root, call slot ``n`` runs as uid ``SANDBOX_UID_BASE + n``."""
SANDBOX_GID = 65534
"""...and as gid 65534 (``nogroup``), so data an action writes can be shared by group."""


def in_child(test: Callable[[], str]) -> tuple[bool, str]:
    """Run ``test`` in a forked child; (ok, detail) from its exit status and message."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        os.close(read_fd)
        code = 0
        try:
            detail = test()
        except OSError as exc:
            detail, code = exc.strerror or str(exc), 1
        except Exception as exc:
            detail, code = repr(exc), 1
        os.write(write_fd, detail.encode()[:512])
        os._exit(code)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 512):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0, b"".join(chunks).decode(errors="replace")


def _netns() -> str:
    from gateway.sandbox._private import needs_user_namespace, unshare_keeping_ids

    if not needs_user_namespace():
        _linux.unshare(_linux.CLONE_NEWNET)
        return "new network namespace (root)"
    unshare_keeping_ids(_linux.CLONE_NEWNET)
    return "new network namespace inside a user namespace"


def _userns() -> str:
    _linux.unshare(_linux.CLONE_NEWUSER)
    return "unprivileged user namespaces allowed"


def _setuid() -> str:
    if os.geteuid() != 0:
        raise OSError(1, f"not root (uid {os.geteuid()}): actions run as the server's uid")
    os.setgroups([])
    os.setresgid(SANDBOX_GID, SANDBOX_GID, SANDBOX_GID)
    os.setresuid(SANDBOX_UID_BASE, SANDBOX_UID_BASE, SANDBOX_UID_BASE)
    return f"calls can get uid {SANDBOX_UID_BASE}+slot, gid {SANDBOX_GID} (see calls_run_as)"


def _seccomp() -> str:
    _linux.seccomp_mode()
    _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
    _linux.install_seccomp_filter()
    return "deny-list filter on every call (ptrace, namespaces, mount, bpf, io_uring, keys...)"


def _landlock() -> str:
    try:
        abi = _linux.landlock_abi()
        _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
        _linux.landlock_restrict(_linux.LandlockRules(_linux.landlock_handled(abi), ()))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OSError(
            exc.errno or 0,
            f"unavailable ({reason}): actions are confined by file permissions, "
            "and kept out of the protected paths by mounts (see masked)",
        ) from None
    return (
        f"ABI version {abi}; applied on every call: read-only system and Python "
        "directories and the action code, the call's own directory read-write"
    )


def probe() -> Capabilities:
    """Probe every feature in a throw-away child and return what works."""
    net = in_child(_netns)
    userns = in_child(_userns)
    setuid = in_child(_setuid)
    seccomp = in_child(_seccomp)
    landlock = in_child(_landlock)
    return Capabilities(
        uid=os.geteuid(),
        network_namespace=net[0],
        network_namespace_detail=net[1],
        drop_privileges=setuid[0],
        drop_privileges_detail=setuid[1],
        user_namespace=userns[0],
        user_namespace_detail=userns[1],
        seccomp=seccomp[0],
        seccomp_detail=seccomp[1],
        landlock=landlock[0],
        landlock_detail=landlock[1],
    )
