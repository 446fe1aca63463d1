"""Memory a call holds without mapping it (memory files) is bounded by its zygote's cgroup.

``memory_mb`` is ``RLIMIT_AS``: address space. A memory file (``memfd_create``,
a file in ``/dev/shm``) keeps its pages with no mapping, so a call could hold
256 open files x 16 MB, far past its limit, and a few calls the host's memory.
Each zygote's memory cgroup bounds them (see ``gateway.sandbox._cgroup``): here
two slots of ``memory_mb: 32`` make a bound of about 200 MB. Real server on a
loopback port, real zygotes, real HTTP; run as root (cgroups).
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.sandbox.supervisor import Supervisor
from gateway.settings import Settings
from tests.integration.conftest import GatewayServer, ServerFactory

HOG = '''
"""Actions that hold memory in memory files, never mapped."""
import os

CHUNK = 16 << 20  # max_file_size_mb


def fill_memfd(files: int = 40) -> str:
    """Fill memory files 16 MB at a time, holding them open."""
    held = []
    for i in range(files):
        fd = os.memfd_create(f"hog{i}")
        for offset in range(0, CHUNK, 1 << 20):
            os.pwrite(fd, b"m" * (1 << 20), offset)
        held.append(fd)
    return f"held {len(held) * 16} MB"


def fill_shm(files: int = 40) -> str:
    """Fill files in /dev/shm 16 MB at a time (left there, as an attacker would)."""
    for i in range(files):
        try:
            path = f"/dev/shm/gateway-test-hog-{os.getpid()}-{i}"
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        except OSError as exc:
            return f"refused: {exc.strerror}"
        for offset in range(0, CHUNK, 1 << 20):
            os.pwrite(fd, b"s" * (1 << 20), offset)
        os.close(fd)
    return f"wrote {files * 16} MB"


def ok() -> str:
    """Answer at once."""
    return "ok"


def child_hog() -> str:
    """A subprocess fills memory files until the OOM killer takes it; the call answers."""
    pid = os.fork()
    if pid == 0:
        resident = bytearray(8 << 20)  # more resident than its parent: the one killed
        for i in range(0, len(resident), 4096):
            resident[i] = 1
        fill_memfd()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return f"child ended: {os.waitstatus_to_exitcode(status)}"


def spin() -> str:
    """Burn CPU past the hard limit: SIGXCPU ignored, the kernel's SIGKILL ends it."""
    import signal

    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
    while True:
        pass
'''

ACTION = """
kind: action
name: {name}
description: {name} (memory test).
timeout: 30
sandbox: {{memory_mb: {memory_mb}, network: true}}
python:
  function: memhog.hog:{name}
"""


NAMES = ("fill_memfd", "fill_shm", "ok", "child_hog")
SPIN = """
kind: action
name: spin
description: spin (memory test).
timeout: 30
sandbox: {memory_mb: 32, network: true, cpu_seconds: 1}
python:
  function: memhog.hog:spin
"""


def _write_actions(manifests: Path, memory_mb: int = 32) -> None:
    (manifests / "actions.yaml").write_text(
        "---".join([*(ACTION.format(name=n, memory_mb=memory_mb) for n in NAMES), SPIN])
    )


def _write_site(site: Path) -> Path:
    """The hog actions under ``site``; returns the manifests root."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make cgroups")
    (site / "memhog").mkdir()
    (site / "memhog" / "__init__.py").write_text("")
    (site / "memhog" / "hog.py").write_text(textwrap.dedent(HOG))
    manifests = site / "manifests"
    manifests.mkdir()
    _write_actions(manifests)
    return manifests


ENV = {"GATEWAY_SANDBOX_CONCURRENCY": "2", "GATEWAY_SANDBOX_TMP_MB": "16"}
"""Two calls at a time; each zygote's tmpfs (``_private``), memory its bound adds: 16 MB."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """A server whose network zygote runs only these actions, two at a time."""
    manifests = _write_site(tmp_path_factory.mktemp("memsite"))
    data = tmp_path_factory.mktemp("memdata")
    environ = {
        "GATEWAY_MANIFESTS": str(manifests),
        "GATEWAY_DATABASE_URL": f"sqlite:///{data}/gateway.db",
        "GATEWAY_WATCH": "false",
        "LOGGING_LEVEL": "WARNING",
        **ENV,
    }
    running = GatewayServer(Settings.from_env(environ, dotenv=None)).start()
    yield running
    running.stop()


def _supervisor(server: GatewayServer) -> Supervisor:
    runner = getattr(server.services.runner, "inner", None)  # inside the metrics' wrapper
    supervisor = getattr(runner, "_supervisor", None)
    assert isinstance(supervisor, Supervisor), runner
    if not supervisor.memory_limit[0]:
        pytest.skip(f"no memory cgroups here: {supervisor.memory_limit[1]}")
    return supervisor


def _zygote_cgroup(supervisor: Supervisor) -> Path:
    """The memory cgroup of the zygote with network (the one running these actions)."""
    assert supervisor._cgroups is not None
    zygote = supervisor._zygotes[(True, ())]
    return supervisor._cgroups.paths["memory"] / f"z{zygote.proc.pid}"


def _usage(cgroup: Path) -> int:
    for name in ("memory.current", "memory.usage_in_bytes"):
        if (cgroup / name).exists():
            return int((cgroup / name).read_text())
    raise AssertionError(f"no memory usage file in {cgroup}")


def _limit(cgroup: Path) -> int:
    for name in ("memory.max", "memory.limit_in_bytes"):
        if (cgroup / name).exists():
            return int((cgroup / name).read_text())
    raise AssertionError(f"no memory limit file in {cgroup}")


def _invoke(server: GatewayServer, name: str) -> dict[str, object]:
    response = httpx.post(f"{server.url}/actions/{name}/invoke", json={"arguments": {}}, timeout=60)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_memory_files_past_the_zygotes_bound_kill_the_call_not_the_server(
    server: GatewayServer,
) -> None:
    """A call filling memory files it never maps (640 MB under memory_mb: 32) is killed by
    the OOM killer inside its zygote's memory cgroup (2 slots x (32 MB + the zygote's
    copy) + the zygote, its spares and headroom: about 200 MB) and fails with a memory
    error naming memory_mb; the zygote survives (the call is the OOM killer's first
    choice), its memory is free again, and the next call works."""
    supervisor = _supervisor(server)
    zygote = supervisor._zygotes[(True, ())].proc.pid
    result = _invoke(server, "fill_memfd")
    assert result["status"] == "failed", result
    error = json.loads(str(result["output"]))["error"]
    assert error["type"] == "memory", error
    assert "memory_mb 32" in error["message"] and "or another" in error["message"], error
    assert supervisor._zygotes[(True, ())].proc.pid == zygote  # not restarted
    assert supervisor.stats.restarts == 0
    cgroup = _zygote_cgroup(supervisor)
    # 180-215 MB seen, by call user, and the zygote's tmpfs (16 MB)
    assert 64 << 20 < _limit(cgroup) < (256 + 16) << 20, _limit(cgroup)
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    assert _invoke(server, "ok")["output"] == "ok"
    # The memory files died with the call: the cgroup holds about the zygote and spares.
    assert _usage(cgroup) < 64 << 20, _usage(cgroup)


def test_an_oom_kill_of_a_calls_subprocess_is_not_blamed_on_the_next_killed_call(
    server: GatewayServer,
) -> None:
    """The OOM killer taking a call's subprocess (the call answers) raised its zygote's
    count of OOM kills, and the next call SIGKILLed on that zygote for another reason (the
    hard CPU limit) was reported as out of memory: the count is compared with the one the
    call started with."""
    _supervisor(server)
    hog = _invoke(server, "child_hog")
    assert hog["output"] == "child ended: -9", hog
    result = _invoke(server, "spin")
    assert result["status"] == "failed", result
    error = json.loads(str(result["output"]))["error"]
    assert error["type"] != "memory", error
    assert "SIGKILL" in error["message"], error


def test_dev_shm_files_are_refused_or_bounded_and_none_is_left(server: GatewayServer) -> None:
    """A call writing files in /dev/shm (memory, and never removed by anyone) is refused
    where Landlock keeps /dev read-only; elsewhere it is killed at its zygote's bound
    like any memory file. No file of it is left in /dev/shm, and the next call works."""
    supervisor = _supervisor(server)
    shm = Path("/dev/shm")
    before = set(shm.iterdir())
    result = _invoke(server, "fill_shm")
    left = [p.name for p in set(shm.iterdir()) - before if p.name.startswith("gateway-test-hog")]
    for name in left:  # never leave 600 MB of the test machine's memory behind
        (shm / name).unlink()
    landlock = supervisor.capabilities is not None and supervisor.capabilities.landlock
    if landlock:
        assert result["status"] == "succeeded", result
        assert str(result["output"]).startswith("refused: Permission denied"), result
        assert left == [], left
    else:
        assert result["status"] == "failed", result
        assert '"type":"memory"' in str(result["output"]), result
        if left:  # nothing removes them: they would hold the zygote's memory for good
            pytest.xfail(f"a call's files in /dev/shm outlive it without Landlock: {left[:3]}")
    assert _invoke(server, "ok")["output"] == "ok"


def test_a_reload_that_keeps_the_zygote_bounds_it_again(
    gateway_server: ServerFactory, tmp_path: Path
) -> None:
    """An edit of memory_mb alone keeps the zygote (limits travel with each call), so its
    memory cgroup, bounded for the old memory_mb, would OOM-kill calls well within the
    new one: a reload bounds a kept zygote again (2 slots x 32 MB more here)."""
    manifests = _write_site(tmp_path)
    server = gateway_server(manifests, env=ENV)
    supervisor = _supervisor(server)
    zygote = supervisor._zygotes[(True, ())].proc.pid
    before = _limit(_zygote_cgroup(supervisor))
    _write_actions(manifests, memory_mb=64)
    response = httpx.post(f"{server.url}/manifests/reload", timeout=60)
    assert response.status_code == 200, response.text
    assert supervisor._zygotes[(True, ())].proc.pid == zygote  # kept
    after = _limit(_zygote_cgroup(supervisor))
    # Its private memory is measured again: a few pages more or less.
    assert abs(after - before - 2 * (32 << 20)) < 4 << 20, (before, after)
    # Lowered again, the bound stays: calls of the old set may still run under the old
    # memory_mb (a lower v2 memory.max OOM-kills at once); the zygote's replacement
    # gets the lower one.
    _write_actions(manifests, memory_mb=16)
    response = httpx.post(f"{server.url}/manifests/reload", timeout=60)
    assert response.status_code == 200, response.text
    assert supervisor._zygotes[(True, ())].proc.pid == zygote  # kept
    assert _limit(_zygote_cgroup(supervisor)) == after


def test_all_zygotes_together_are_bounded_and_a_reload_bounds_them_again(
    gateway_server: ServerFactory, tmp_path: Path
) -> None:
    """Each zygote's bound allows all the calls the server may run at once, so with 2-4
    zygotes their sum bounded nothing an operator would plan for: the server's memory
    directory holds them all to GATEWAY_SANDBOX_CONCURRENCY x the largest memory_mb (plus
    each zygote's share), well under that sum, and a reload raising memory_mb raises it
    (2 slots x 512 MB here)."""
    manifests = _write_site(tmp_path)
    _write_actions(manifests, memory_mb=512)  # as code_interpreter's, on the other zygote
    server = gateway_server(manifests, env=ENV)
    supervisor = _supervisor(server)
    assert supervisor._cgroups is not None
    parent = supervisor._cgroups.paths["memory"]
    before = _limit(parent)
    memory = supervisor._cgroups.paths["memory"]
    zygotes = [memory / f"z{z.proc.pid}" for z in supervisor._zygotes.values() if not z.dead]
    assert len(zygotes) >= 2
    # 2 calls of 512 MB (the catalog's largest) at least; far below the sum (2 x 2 x 512 MB).
    assert 2 * (512 << 20) < before < sum(_limit(z) for z in zygotes), before
    _write_actions(manifests, memory_mb=1024)
    response = httpx.post(f"{server.url}/manifests/reload", timeout=60)
    assert response.status_code == 200, response.text
    after = _limit(parent)
    # Private memory is measured again: a few pages more or less.
    assert abs(after - before - 2 * (512 << 20)) < 8 << 20, (before, after)
