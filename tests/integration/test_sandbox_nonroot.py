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
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.sandbox.probes import SANDBOX_UID_BASE
from tests._sandbox_view import as_nobody, as_root_without

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
    out = _run(shared, as_nobody(shared, "-c", PROGRAM, str(shared), masked_proc=masked_proc))
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


@pytest.mark.parametrize("masked_proc", [False, True], ids=["host", "masked-proc"])
def test_root_without_sys_admin_isolates_its_calls(shared: Path, masked_proc: bool) -> None:
    """Root without CAP_SYS_ADMIN (a container's default capabilities, or a service that
    dropped it) refused every ``network: false`` call ("the kernel refused a new
    network namespace") and had no private view: it tried the namespaces as root only.
    It now makes them in a user namespace where every id it has is mapped to itself
    (a child outside writes the map), so calls still get uids of their own."""
    if masked_proc and not Path("/proc/keys").exists():
        pytest.skip("no /proc/keys to mask here")
    (shared / "nr_actions.py").write_text(ACTIONS)
    command = as_root_without(
        shared, "-c", PROGRAM, str(shared), caps="sys_admin", masked_proc=masked_proc
    )
    out = _run(shared, command)
    assert out["uid"] == 0
    calls = out["calls"]
    assert calls["look"]["status"] == "succeeded", calls["look"]
    assert calls["leave"] == {"status": "succeeded", "output": "left"}, calls["leave"]
    off = json.loads(calls["look"]["output"])
    online = json.loads(calls["look_online"]["output"])
    assert off["uid"] >= SANDBOX_UID_BASE and online["uid"] >= SANDBOX_UID_BASE, (off, online)
    assert off["net"] == "Network is unreachable", off
    assert online["net"] != "Network is unreachable", online
    caps = out["caps"]
    assert caps["private_tmp"] is True, caps
    assert caps["private_proc"] is not masked_proc, caps
    for seen in (off, online):
        assert seen["tmp_mb"] == 32, seen
        if not masked_proc:
            assert 1 in seen["pids"] and len(seen["pids"]) <= 5, seen


def test_root_that_cannot_map_its_ids_says_so(shared: Path) -> None:
    """Without CAP_SETFCAP as well, root cannot map uid 0 in a user namespace: the zygote
    goes on without namespaces and says why, and calls with network keep their uids
    (a namespace it had entered but not mapped would have run them as uid 65534)."""
    (shared / "nr_actions.py").write_text(ACTIONS)
    command = as_root_without(shared, "-c", PROGRAM, str(shared), caps="sys_admin,setfcap")
    out = _run(shared, command)
    calls = out["calls"]
    assert calls["look"]["status"] == "failed", calls["look"]
    assert "network isolation is unavailable here" in calls["look"]["output"], calls["look"]
    assert "CAP_SETFCAP" in calls["look"]["output"], calls["look"]
    online = json.loads(calls["look_online"]["output"])
    assert online["uid"] >= SANDBOX_UID_BASE, online
    caps = out["caps"]
    assert caps["private_tmp"] is False and caps["private_proc"] is False, caps
    assert "mapping the ids of a user namespace" in caps["detail"], caps


def _run(shared: Path, command: list[str]) -> dict[str, Any]:
    """Run ``PROGRAM``'s ``command``; what it printed."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "HOME": str(shared),
    }
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out
