# ruff: noqa: PTH115 - os.readlink reads a /proc link as a string
"""What a test sees of a sandbox call that a call reports about itself.

A zygote with a private view (``gateway.sandbox._private``) is pid 1 of a pid
namespace of its own, with its calls' directories on a tmpfs mounted in its own
mount namespace: the pid a call reports (``os.getpid()``) is not the host's, and
its directory is not on the host's disk. These helpers translate both; without a
private view they change nothing. ``as_nobody`` runs a sandbox as a non-root server
would (uid 65534), ``as_root_without`` as root short of some capabilities, for the
tests of those paths.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from gateway.sandbox.supervisor import Supervisor

__all__ = [
    "as_nobody",
    "as_root_without",
    "closed_ancestor",
    "host_pid",
    "in_sandbox",
    "sandbox_root",
    "seen",
]


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


def closed_ancestor(path: Path) -> Path | None:
    """The first folder on the way to ``path`` that other uids cannot enter, if any."""
    for folder in [*reversed(path.parents), path]:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return folder
    return None


def as_nobody(shared: Path, *argv: str, masked_proc: bool = False) -> list[str]:
    """The command that runs this interpreter with ``argv`` as uid 65534, or skip why.

    Our interpreter lives below ``/root`` (mode 0700): in a mount namespace of its own,
    a tmpfs that anyone may enter covers that folder, with the interpreter's prefix
    bound back at its place, so the virtual environment's links still resolve.
    """
    setpriv = "--reuid=65534 --regid=65534 --clear-groups"
    return _confined(shared, argv, setpriv, masked_proc)


def as_root_without(shared: Path, *argv: str, caps: str, masked_proc: bool = False) -> list[str]:
    """The command that runs this interpreter with ``argv`` as root without the
    capabilities ``caps`` (``setpriv``'s names, comma-separated: a container's
    default set lacks ``sys_admin``), or skip why; see ``as_nobody`` (calls with uids
    of their own need the interpreter's prefix readable by them too)."""
    dropped = ",".join(f"-{cap}" for cap in caps.split(","))
    return _confined(shared, argv, f"--bounding-set {dropped} --inh-caps {dropped}", masked_proc)


def _confined(shared: Path, argv: tuple[str, ...], setpriv: str, masked_proc: bool) -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("only root can start a process as another uid")
    tools = {name: shutil.which(name) for name in ("unshare", "setpriv", "mount")}
    if None in tools.values():
        pytest.skip(f"unshare, setpriv and mount are needed: {tools}")
    root = Path(__file__).resolve().parents[1]
    for needed in (root, Path(sys.executable).parent):
        if closed_ancestor(needed) is not None:
            pytest.skip(f"{closed_ancestor(needed)} cannot be entered by other users")
    prefix = Path(sys.base_prefix)
    closed = closed_ancestor(prefix)
    script = f'exec setpriv {setpriv} "$0" "$@"'
    if masked_proc:  # as Docker does: a user namespace may then not mount a /proc
        script = f"mount --bind /dev/null /proc/keys && {script}"
    if closed is not None:
        keep = shared / "prefix"
        keep.mkdir()
        script = (
            f"set -e; mount --bind {prefix} {keep}; "
            f"mount -t tmpfs -o mode=0755 gw-nonroot {closed}; "
            f"mkdir -p {prefix}; mount --bind {keep} {prefix}; {script}"
        )
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    return [*command, sys.executable, *argv]
