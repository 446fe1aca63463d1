"""The sandbox of a gateway that does not run as root (the container image's uid 10001).

The suite runs as root, so these paths (user namespaces made by the zygote, calls
under the server's own uid) ran nowhere. Here a server process runs as ``nobody``:
in a mount namespace of its own the interpreter's prefix is bound on a folder
``nobody`` can enter (it is below ``/root`` on our machines, mode 0700), and
``setpriv`` drops to uid 65534 before the interpreter starts, so the process is
an ordinary non-root one, and runs this checkout's real sandbox.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

PROGRAM = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from pathlib import Path

    import gateway.executors  # registers the kinds
    from gateway.executors.python import PythonConfig
    from gateway.manifests.catalog import Catalog
    from gateway.manifests.model import Action, CallContext, SandboxLimits
    from gateway.sandbox.supervisor import Supervisor
    from gateway.settings import Settings

    async def main(root: Path) -> None:
        actions = {
            name: Action(
                name=name,
                description=name,
                kind_key="python",
                config=PythonConfig(function=f"nr_actions:{name}"),
                sandbox=SandboxLimits(network=network),
                timeout=5,
            )
            for name, network in (("look", False), ("look_online", True), ("leave", False))
        }
        catalog = Catalog(
            version="t", root=root, gateway_root=root, loaded_at=0, actions=actions
        )
        supervisor = Supervisor(Settings(sandbox_concurrency=2, sandbox_tmp_mb=32))
        await supervisor.start(catalog)
        try:
            out = {"uid": os.geteuid(), "caps": None, "calls": {}}
            for name, action in actions.items():
                result = await supervisor.call(action, CallContext(action=name, arguments={}))
                out["calls"][name] = {"status": result.status, "output": result.output}
            caps = supervisor.capabilities
            out["caps"] = caps and {
                "private_proc": caps.private_proc,
                "proc_detail": caps.private_proc_detail,
                "private_tmp": caps.private_tmp,
                "detail": caps.private_tmp_detail,
            }
        finally:
            await supervisor.aclose()
        print(json.dumps(out))

    asyncio.run(main(Path(sys.argv[1])))
    """
)

ACTIONS = textwrap.dedent(
    """
    import os, socket

    def look():
        st = os.statvfs(".")
        try:
            socket.create_connection(("127.0.0.1", 9), timeout=1).close()
            net = "connected"
        except OSError as exc:
            net = exc.strerror
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        return {"uid": os.geteuid(), "pids": pids, "tmp_mb": st.f_blocks * st.f_frsize >> 20,
                "net": net}

    look_online = look

    def leave():
        # A subprocess the call leaves behind: killed before the call ends, found in /proc.
        import subprocess
        subprocess.Popen(["sleep", "30"])
        return "left"
    """
)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every uid may enter and read (pytest's own are root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="gw-nonroot-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _closed_ancestor(path: Path) -> Path | None:
    """The first folder on the way to ``path`` that other uids cannot enter, if any."""
    for folder in [*reversed(path.parents), path]:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return folder
    return None


def _as_nobody(shared: Path, *argv: str, masked_proc: bool = False) -> list[str]:
    """The command that runs this interpreter with ``argv`` as uid 65534, or skip why.

    Our interpreter lives below ``/root`` (mode 0700): in a mount namespace of its own,
    a tmpfs that anyone may enter covers that folder, with the interpreter's prefix
    bound back at its place, so the virtual environment's links still resolve.
    """
    if os.geteuid() != 0:
        pytest.skip("only root can start a process as another uid")
    tools = {name: shutil.which(name) for name in ("unshare", "setpriv", "mount")}
    if None in tools.values():
        pytest.skip(f"unshare, setpriv and mount are needed: {tools}")
    root = Path(__file__).resolve().parents[2]
    for needed in (root, Path(sys.executable).parent):
        if _closed_ancestor(needed) is not None:
            pytest.skip(f"{_closed_ancestor(needed)} cannot be entered by other users")
    prefix = Path(sys.base_prefix)
    closed = _closed_ancestor(prefix)
    script = 'exec setpriv --reuid=65534 --regid=65534 --clear-groups "$0" "$@"'
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


@pytest.mark.parametrize("masked_proc", [False, True], ids=["host", "masked-proc"])
def test_a_non_root_gateway_isolates_its_calls(shared: Path, masked_proc: bool) -> None:
    """Not root, a zygote's ``network: false`` calls were all refused ("network isolation
    is unavailable here"): it wrote its own uid_map after making itself undumpable, which
    the kernel refuses (EACCES). They run now, without network, under the server's uid,
    on the zygote's tmpfs, and in its own pid namespace and /proc where one can be
    mounted. Where a container runtime masks paths of /proc, none can: the zygote then
    takes no pid namespace (one without its own /proc made every pid it read another
    process's: a call leaving a subprocess timed out, its strays were never found)."""
    if masked_proc and not Path("/proc/keys").exists():
        pytest.skip("no /proc/keys to mask here")
    (shared / "nr_actions.py").write_text(ACTIONS)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "HOME": str(shared),
    }
    command = _as_nobody(shared, "-c", PROGRAM, str(shared), masked_proc=masked_proc)
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["uid"] == 65534
    calls = out["calls"]
    assert calls["look"]["status"] == "succeeded", calls["look"]
    assert calls["leave"] == {"status": "succeeded", "output": "left"}, calls["leave"]
    off = json.loads(calls["look"]["output"])
    online = json.loads(calls["look_online"]["output"])
    assert off["uid"] == online["uid"] == 65534  # the server's own uid
    assert off["net"] == "Network is unreachable", off  # a network namespace of its own
    assert online["net"] != "Network is unreachable", online
    caps = out["caps"]
    assert caps["private_tmp"] is True
    assert caps["detail"] == "call directories on a tmpfs of 32 MB (2048 files) per zygote, noexec"
    assert caps["private_proc"] is not masked_proc, caps
    if not masked_proc:  # only the host's root may set vm.memfd_noexec: said, not claimed
        assert "memory files can be executed" in caps["proc_detail"], caps
    for seen in (off, online):
        assert seen["tmp_mb"] == 32, seen
        if masked_proc:
            assert "mounting a /proc of its own was refused" in caps["proc_detail"], caps
            assert len(seen["pids"]) > 5, seen  # the machine's
        else:
            assert 1 in seen["pids"] and len(seen["pids"]) <= 5, seen
