# ruff: noqa: PTH115 - os.readlink reads a /proc link as a string
"""What a test sees of a sandbox call that a call reports about itself.

A zygote with a private view (``gateway.sandbox._private``) is pid 1 of a pid
namespace of its own, with its calls' directories on a tmpfs mounted in its own
mount namespace: the pid a call reports (``os.getpid()``) is not the host's, and
its directory is not on the host's disk. These helpers translate both; without a
private view they change nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.sandbox.supervisor import Supervisor

__all__ = ["host_pid", "in_sandbox", "sandbox_root", "seen"]


def _zygote(supervisor: Supervisor, network: bool) -> int:
    for (net, _), zygote in supervisor._zygotes.items():
        if net == network and not zygote.dead:
            return zygote.pid
    raise AssertionError(f"no zygote {'with' if network else 'without'} network is running")


def host_pid(supervisor: Supervisor, pid: int, network: bool = False) -> int | None:
    """The host's pid of a process a call named ``pid``; None if its zygote's pid
    namespace does not hold it (any more). ``network``: the call's zygote's (python
    actions run without, by default)."""
    namespaces = {os.readlink(f"/proc/{_zygote(supervisor, network)}/ns/pid")}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid") not in namespaces:
                continue
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and int(line.split()[-1]) == pid:
                return int(entry.name)
    return None


def in_sandbox(supervisor: Supervisor, pid: int, network: bool = False) -> bool:
    """Whether the process a call named ``pid`` still runs (a zombie does not)."""
    found = host_pid(supervisor, pid, network)
    if found is None:
        return False
    try:
        stat = Path(f"/proc/{found}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def sandbox_root(supervisor: Supervisor, network: bool = False) -> Path:
    """``/`` as the zygote (``network``: with network, else without) and its calls see
    it: its calls' directories are below its ``ready.tmp`` there."""
    return Path(f"/proc/{_zygote(supervisor, network)}/root")


def seen(supervisor: Supervisor, path: str, network: bool = False) -> Path:
    """``path`` as a call of the zygote (``network``: see ``sandbox_root``) sees it."""
    return sandbox_root(supervisor, network) / path.lstrip("/")
