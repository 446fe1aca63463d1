"""The code a live manifest set runs is the code its load validated, whatever the disk holds.

A zygote that dies (the OOM killer, an operator, or an action killing its
parent where the kernel lets it: Landlock ABI 6 scopes signals, so the tests
kill the zygotes from outside) is restarted by the supervisor; the new one must
import the live catalog's code, not a push the reload rejected since, nor one
that landed on disk after the load imported it. Real server on a loopback
port, real zygotes, real HTTP.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.integration.test_reload import (
    WATCH,
    chat,
    importing,
    status,
    wait_for,
    write_slow_action,
)
from tests.integration.test_sandbox import _our_zygotes

if TYPE_CHECKING:
    from tests.integration.conftest import GatewayServer, ServerFactory

TOOLS_PY = '''
"""Actions of the snapshot tests."""
from snapactions.words import GREETING


def greet(name: str) -> str:
    """Greet a person by name."""
    return "{tag} " + GREETING + " " + name


def shout(text: str) -> str:
    """Shout a text back in capitals."""
    return text.upper() + "!"
'''

BOT_YAML = """
kind: assistant
name: bot
provider: offline
actions: [greet]
---
kind: action
name: greet
description: Greet a person by name.
python:
  function: snapactions.tools:greet
---
kind: action
name: greet_online
description: Greet a person by name, from the zygote with network.
sandbox: {network: true}
python:
  function: snapactions.tools:greet
---
kind: action
name: shout
description: Shout a text back in capitals.
python:
  function: snapactions.tools:shout
"""


def write_code(site: Path, tag: str, greeting: str = "hello", *, shout: bool = True) -> None:
    """(Re)write the action code: answers tagged ``tag``; without ``shout`` the set is invalid
    (the manifests name a function the code no longer has)."""
    code = TOOLS_PY.replace("{tag}", tag)
    if not shout:
        code = code.replace("def shout(", "def renamed_shout(")
    (site / "snapactions" / "tools.py").write_text(code)
    (site / "snapactions" / "words.py").write_text(f"GREETING = {greeting!r}\n")


def write_site(site: Path) -> Path:
    """The v1 site: manifests/ and the snapactions package; returns the manifests dir."""
    (site / "manifests").mkdir(parents=True)
    (site / "snapactions").mkdir()
    (site / "snapactions" / "__init__.py").write_text("")
    write_code(site, "v1")
    (site / "manifests" / "bot.yaml").write_text(BOT_YAML)
    return site / "manifests"


def invoke(server: GatewayServer, action: str, **arguments: Any) -> dict[str, Any]:
    """POST /actions/{action}/invoke; the JSON answer."""
    response = httpx.post(
        f"{server.url}/actions/{action}/invoke", json={"arguments": arguments}, timeout=60
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def reload(server: GatewayServer) -> dict[str, Any]:
    """POST /manifests/reload; the attempt's result."""
    response = httpx.post(f"{server.url}/manifests/reload", timeout=60)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def kill_zygotes() -> None:
    """SIGKILL the test's two zygotes (Python with and without network), the server's
    children here, and wait until they are gone."""
    zygotes = _our_zygotes()
    assert len(zygotes) == 2, zygotes
    for pid in zygotes:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _our_zygotes())


def test_a_rejected_push_never_runs_in_a_restarted_zygote(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """After a push the reload rejected, zygotes restarted (with and without network) still
    run the live set's code, its helper module included, not the rejected code on disk."""
    site = tmp_path / "site"
    server = gateway_server(write_site(site))
    assert invoke(server, "greet", name="Ada")["output"] == "v1 hello Ada"
    live = status(server)["version"]
    write_code(site, "v2", "howdy", shout=False)
    attempt = reload(server)
    assert attempt["result"] == "rejected"
    assert any("shout" in error for error in attempt["errors"])
    kill_zygotes()
    assert invoke(server, "greet", name="Ada")["output"] == "v1 hello Ada"
    assert invoke(server, "greet_online", name="Ada")["output"] == "v1 hello Ada"
    assert invoke(server, "shout", text="hey")["output"] == "HEY!"
    answer = chat(server, 'please greet "Ada"')
    assert answer["tool_calls"][0]["output"] == "v1 hello Ada"
    assert answer["metadata"]["manifest_version"] == live


def test_a_restarted_zygote_runs_the_accepted_push_not_a_later_rejected_one(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """A zygote restarted after an accepted push runs the new code; after a further
    push that is rejected, a restarted zygote still runs the accepted one."""
    site = tmp_path / "site"
    server = gateway_server(write_site(site))
    write_code(site, "v2", "howdy")
    assert reload(server)["result"] == "swapped"
    kill_zygotes()
    assert invoke(server, "greet", name="Ada")["output"] == "v2 howdy Ada"
    assert invoke(server, "greet_online", name="Ada")["output"] == "v2 howdy Ada"
    write_code(site, "v3", "hi", shout=False)
    assert reload(server)["result"] == "rejected"
    kill_zygotes()
    assert invoke(server, "greet", name="Ada")["output"] == "v2 howdy Ada"
    assert invoke(server, "greet_online", name="Ada")["output"] == "v2 howdy Ada"


SLOW_PY = '''
"""Imported after snapactions.tools; waits (at most 20 s) until the test says go, holding
a lock on its own file meanwhile: how the test knows (import-time code may write nowhere)."""
import fcntl
import pathlib
import time

_HERE = pathlib.Path(__file__).parents[2]
if not _HERE.joinpath("go").exists():
    with open(__file__) as _lock:
        fcntl.flock(_lock, fcntl.LOCK_SH)
        _deadline = time.monotonic() + 20
        while not _HERE.joinpath("go").exists() and time.monotonic() < _deadline:
            time.sleep(0.01)


def hello() -> str:
    """Say hello."""
    return "hello"
'''


def test_a_push_landing_after_the_load_imported_the_code_does_not_run(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """An accepted set runs the code its load validated: an invalid push written while the
    load ran (after it imported the code, before the new zygotes started) never runs, not
    even before the reload it triggers rejects it."""
    site = tmp_path / "site"
    manifests = write_site(site)
    # Imported after snapactions.tools (references are imported in sorted order).
    write_slow_action(site, manifests, "zz_slow", SLOW_PY, "snapactions")
    go = tmp_path / "go"
    go.write_text("")
    server = gateway_server(manifests, env=WATCH)
    go.unlink()
    before = status(server)["version"]
    write_code(site, "v2")  # a valid push: the load starts and imports it
    # That load has imported tools.py v2.
    wait_for(lambda: importing(site / "snapactions" / "zz_slow.py"), timeout=60)
    write_code(site, "v3", "hi", shout=False)  # an invalid push lands meanwhile
    go.write_text("")

    def settled() -> dict[str, Any] | None:
        st = status(server)
        attempt = st["last_attempt"]
        return st if st["version"] != before and attempt["result"] == "rejected" else None

    wait_for(settled, timeout=60)
    assert invoke(server, "greet", name="Ada")["output"] == "v2 hello Ada"
