"""Secrets in the server's environment never reach an action that did not declare them.

The "server" here is a separate Python process started with secrets in its
initial environment (what ``/proc/<pid>/environ`` shows), running a real
``Supervisor``; its actions dump ``os.environ`` and scan ``/proc/*/environ``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ACTIONS = """
import os

def environ():
    return dict(os.environ)

def scan(needles):
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        for needle in needles:
            if needle.encode() in data:
                found.setdefault(needle, []).append(int(pid))
    return found
"""

SERVER = """
import asyncio, json, os, sys
from pathlib import Path
import gateway.executors
from gateway.executors.python import PythonConfig
from gateway.executors.runner import SandboxRunner
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Action
from gateway.sandbox.supervisor import Supervisor
from gateway.settings import Settings

root = Path(sys.argv[1])
needles = json.loads(sys.argv[2])

def act(name, fn, **kw):
    return Action(name=name, description="d", kind_key="python",
                  config=PythonConfig(function=f"leak_actions:{fn}"), **kw)

async def main():
    catalog = Catalog(version="1", root=root, gateway_root=root, loaded_at=0, actions={
        "environ": act("environ", "environ"),
        "declared": act("declared", "environ", secrets=["WEATHER_KEY"]),
        "scan": act("scan", "scan"),
    })
    sup = Supervisor(Settings())
    await sup.start(catalog)
    runner = SandboxRunner(sup)
    out = {
        "planted": [n for n in needles
                    if n.encode() in Path(f"/proc/{os.getpid()}/environ").read_bytes()],
        "environ": json.loads((await runner.run(catalog, "environ", {})).output),
        "declared": json.loads((await runner.run(catalog, "declared", {})).output),
        "scan": (await runner.run(catalog, "scan", {"needles": needles})).output,
    }
    await sup.aclose()
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.fixture
def leak_root() -> Iterator[Path]:
    """A world-readable directory with the leak-hunting actions."""
    root = Path(tempfile.mkdtemp(prefix="gw-leak-test-"))
    root.chmod(0o755)
    (root / "leak_actions.py").write_text(textwrap.dedent(ACTIONS))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_server_secrets_do_not_leak(leak_root: Path) -> None:
    """Dumping os.environ or scanning /proc/*/environ finds none of the server's secrets."""
    needles = {
        "OPENAI_API_KEY": "sk-needle-openai-0001",
        "GATEWAY_API_KEYS": "needle-apikey-0002",
        "GATEWAY_DATABASE_URL": "postgresql://u:needle-dbpass-0003@db/x",
        "WEATHER_KEY": "needle-weather-0004",
    }
    env = {**os.environ, **needles}
    proc = subprocess.run(
        [sys.executable, "-c", SERVER, str(leak_root), json.dumps(list(needles.values()))],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # The secrets really are in the server's /proc/<pid>/environ: the scan could find them.
    assert sorted(out["planted"]) == sorted(needles.values())
    for name in needles:
        assert name not in out["environ"]
    # Only the declared secret is visible, and its value is redacted from what the model reads.
    assert out["declared"]["WEATHER_KEY"] == "[redacted]"
    assert "OPENAI_API_KEY" not in out["declared"]
    assert json.loads(out["scan"]) == {}


FRAMES_ACTION = """
import sys

def frames(reversed_needle):
    needle = reversed_needle[::-1]  # never passed in clear: only the server may hold it
    found = []
    frame = sys._getframe(1)
    while frame is not None:
        found += [f"{frame.f_code.co_name}:{name}" for name, value in frame.f_locals.items()
                  if needle in repr(value)]
        frame = frame.f_back
    return found
"""


async def test_an_action_cannot_read_undeclared_database_urls(leak_root: Path) -> None:
    """A python action's call carries no database URL, so its code cannot find their passwords."""
    from gateway.executors.python import PythonConfig
    from gateway.executors.runner import SandboxRunner
    from gateway.manifests.catalog import Catalog
    from gateway.manifests.model import Action, Database
    from gateway.sandbox.supervisor import Supervisor
    from gateway.settings import Settings

    (leak_root / "frames_actions.py").write_text(textwrap.dedent(FRAMES_ACTION))
    action = Action(
        name="frames",
        description="d",
        kind_key="python",
        config=PythonConfig(function="frames_actions:frames"),
    )
    password = "needle-dbpass-0005"
    catalog = Catalog(
        version="1",
        root=leak_root,
        gateway_root=leak_root,
        loaded_at=0,
        actions={"frames": action},
        databases={"shop": Database(name="shop", url=f"postgresql://u:{password}@127.0.0.1/x")},
    )
    supervisor = Supervisor(Settings())
    await supervisor.start(catalog)
    try:
        result = await SandboxRunner(supervisor).run(
            catalog, "frames", {"reversed_needle": password[::-1]}
        )
    finally:
        await supervisor.aclose()
    assert result.status == "succeeded", result
    assert json.loads(result.output) == []


async def test_a_python_action_cannot_read_variables_substituted_into_its_document(
    leak_root: Path,
) -> None:
    """Values a ``${VAR}`` put into an action's description or examples are masked in
    what it sends back, but travel to its child only when its kind's config holds them
    (an http header, a sql query): a python action's code never finds them."""
    from gateway.executors.runner import SandboxRunner
    from gateway.manifests.loader import load_catalog
    from gateway.sandbox.supervisor import Supervisor
    from gateway.settings import Settings

    (leak_root / "frames_actions.py").write_text(textwrap.dedent(FRAMES_ACTION))
    manifests = leak_root / "manifests"
    manifests.mkdir()
    (manifests / "a.yaml").write_text(
        "kind: action\nname: frames\ndescription: 'Uses the key ${DESC_KEY}.'\n"
        "python: {function: 'frames_actions:frames'}\n"
    )
    needle = "needle-desc-0006"
    catalog = load_catalog(manifests, environ={"DESC_KEY": needle}, gateway_root=leak_root)
    supervisor = Supervisor(Settings())
    await supervisor.start(catalog)
    try:
        result = await SandboxRunner(supervisor).run(
            catalog, "frames", {"reversed_needle": needle[::-1]}
        )
    finally:
        await supervisor.aclose()
    assert result.status == "succeeded", result
    assert json.loads(result.output) == []
