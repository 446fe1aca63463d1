"""Whom sandboxed calls run as, when the gateway runs as root.

Three answers (``Init.call_user``):

- ``own``: each call gets a uid of its own (``SANDBOX_UID_BASE + slot``). The
  strongest: file permissions, ``RLIMIT_NPROC`` and signals all separate calls
  from the server and from each other. It needs the deployment (the Python
  installation, the gateway package, the gateway root) enterable and readable
  by other users; otherwise actions cannot even import lazily.
- ``root``: uid 0 with every capability dropped for good (bounding set,
  capset, locked securebits). Root's files stay readable by ownership, so this
  is only safe with Landlock restricting the filesystem and, from ABI 6,
  keeping signals inside the call's own domain (no call can kill the server,
  the zygote or another call); chosen when ``own`` cannot reach the deployment.
- ``same``: not root: calls run as the server's uid (also as root when
  neither of the above is possible: no ``CAP_SETUID`` and no Landlock ABI 6).

``GATEWAY_SANDBOX_USER`` (``auto``, ``own``, ``root``) overrides the choice;
``root`` refuses to start without Landlock ABI 6. Imports the standard library
and ``gateway._reachable`` / ``gateway.sandbox._landlock`` only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from gateway._reachable import first_unreachable
from gateway.sandbox._landlock import landlock_abi

__all__ = ["CallUser", "choose_call_user", "deployment_blocker"]

CallUser = tuple[Literal["own", "root", "same"], str]
"""(mode, why): see the module doc."""

_ROOT_ABI = 6
"""Landlock ABI with signal scoping: the least the ``root`` mode runs under."""


def deployment_blocker(gateway_root: Path) -> Path | None:
    """The first folder other users cannot enter on the way to what a call needs, or None.

    What a call needs: the standard library, site-packages (msgspec), the gateway
    package and the gateway root (action code, manifests).
    """
    import msgspec

    import gateway

    needed = [
        Path(os.__file__).parent,
        Path(msgspec.__file__).parent,
        Path(gateway.__file__).parent,
        Path(sys.executable).parent,
        gateway_root,
    ]
    for path in needed:
        try:
            blocker = first_unreachable(path)
        except OSError:
            continue  # missing: whatever uses it reports it
        if blocker is not None:
            return blocker
    return None


def choose_call_user(wanted: Literal["auto", "own", "root"], gateway_root: Path) -> CallUser:
    """Decide whom calls run as (blocking: stats the deployment).

    Raises:
        RuntimeError: ``root`` was asked for and the kernel lacks Landlock ABI 6.
    """
    if os.geteuid() != 0:
        return "same", f"not root (uid {os.geteuid()})"
    can_switch = _can_switch_uid()
    if wanted == "own":
        if not can_switch:
            raise RuntimeError(
                "GATEWAY_SANDBOX_USER=own cannot be honoured here: no CAP_SETUID/CAP_SETGID"
            )
        return "own", "GATEWAY_SANDBOX_USER=own"
    blocker = deployment_blocker(gateway_root) if wanted == "auto" else None
    if wanted == "auto" and blocker is None and can_switch:
        return "own", "the deployment is readable by other users"
    reason = f"{blocker} cannot be entered by other users" if can_switch else "no CAP_SETUID"
    try:
        abi = landlock_abi()
    except OSError:
        abi = 0
    if abi < _ROOT_ABI:
        why = f"Landlock ABI {abi} (uid 0 without capabilities needs {_ROOT_ABI})"
        if wanted == "root":
            raise RuntimeError(f"GATEWAY_SANDBOX_USER=root cannot be honoured here: {why}")
        if can_switch:
            return "own", f"{reason}, but {why}"
        return "same", f"{reason}, and {why}: calls run as root, under seccomp (and Landlock)"
    if wanted == "root":
        return "root", "GATEWAY_SANDBOX_USER=root"
    return "root", reason


def _can_switch_uid() -> bool:
    """Whether this (root) process holds CAP_SETUID and CAP_SETGID (a container may not)."""
    try:
        with Path("/proc/self/status").open() as fh:
            effective = next(int(line.split()[1], 16) for line in fh if line.startswith("CapEff"))
    except (OSError, StopIteration, ValueError):
        return True  # cannot tell: the spares fail loudly if it is not so
    return bool(effective & (1 << 6) and effective & (1 << 7))
