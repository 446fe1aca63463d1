"""Hot reload against the real server: real file writes, real sandbox, real HTTP."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import GatewayServer, ServerFactory

WATCH = {"GATEWAY_WATCH": "true", "GATEWAY_RELOAD_DEBOUNCE_MS": "50"}

TOOLS_PY = '''
"""Actions of the reload tests."""
import time


def greet(name: str) -> str:
    """Greet a person by name."""
    return "{tag} hello " + name


def shout(text: str) -> str:
    """Shout a text back in capitals."""
    return text.upper() + "!"


def pause_briefly() -> str:
    """Pause briefly, then report the code version."""
    time.sleep(0.4)
    return "{tag} paused"
'''

BOT_YAML = """
kind: assistant
name: bot
provider: offline
actions: [{actions}]
---
kind: action
name: greet
description: Greet a person by name.
python:
  function: reloadactions.tools:greet
---
kind: action
name: pause_briefly
description: Pause briefly, then report the code version.
timeout: 30
python:
  function: reloadactions.tools:pause_briefly
"""


def write_site(root: Path, *, tag: str = "v1", actions: str = "greet, pause_briefly") -> Path:
    """Write manifests/ and the reloadactions package under ``root``; return the manifests dir."""
    (root / "manifests").mkdir(parents=True, exist_ok=True)
    (root / "reloadactions").mkdir(exist_ok=True)
    (root / "reloadactions" / "__init__.py").write_text("")
    write_code(root, tag)
    (root / "manifests" / "bot.yaml").write_text(BOT_YAML.format(actions=actions))
    return root / "manifests"


def write_code(root: Path, tag: str) -> None:
    """(Re)write the action code with ``tag`` in its answers."""
    (root / "reloadactions" / "tools.py").write_text(TOOLS_PY.replace("{tag}", tag))


def wait_for(probe: Callable[[], Any], timeout: float = 10.0) -> tuple[Any, float]:
    """Poll ``probe`` until it returns something truthy; return it and the seconds it took."""
    start = time.monotonic()
    while True:
        value = probe()
        if value:
            return value, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not reached within {timeout}s")
        time.sleep(0.01)


def status(server: GatewayServer | str) -> dict[str, Any]:
    """GET /manifests/status of ``server`` (or of the gateway at that base URL)."""
    base = server if isinstance(server, str) else server.url
    response = httpx.get(base + "/manifests/status", timeout=10)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def tool_names(server: GatewayServer, assistant: str = "bot") -> set[str]:
    """The tool names the model sees for ``assistant``."""
    response = httpx.get(f"{server.url}/assistants/{assistant}/tools", timeout=10)
    assert response.status_code == 200
    return {t["function"]["name"] for t in response.json()}


def chat(server: GatewayServer, message: str) -> dict[str, Any]:
    """POST /chat (new thread) and return the JSON answer, asserting a 200."""
    response = httpx.post(
        server.url + "/chat", json={"assistant": "bot", "message": message}, timeout=60
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_new_action_referenced_by_the_assistant_goes_live(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """Adding an action file and referencing it makes the tool visible and callable."""
    site = tmp_path / "site"
    manifests = write_site(site)
    server = gateway_server(manifests, env=WATCH)
    assert tool_names(server) == {"greet", "pause_briefly"}
    (manifests / "shout.yaml").write_text(
        "kind: action\nname: shout\ndescription: Shout a text back in capitals.\n"
        "python:\n  function: reloadactions.tools:shout\n"
    )
    (manifests / "bot.yaml").write_text(BOT_YAML.format(actions="greet, pause_briefly, shout"))
    _, seconds = wait_for(lambda: "shout" in tool_names(server))
    print(f"write -> tool visible over HTTP: {seconds * 1000:.0f} ms")
    answer = chat(server, 'please shout "hey there"')
    assert answer["tool_calls"][0]["name"] == "shout"
    assert answer["tool_calls"][0]["output"] == "HEY THERE!"


def test_broken_set_is_reported_old_set_serves_then_fix_recovers(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """A broken file shows in /manifests/status and metrics while chats keep working."""
    manifests = write_site(tmp_path / "site")
    server = gateway_server(manifests, env=WATCH)
    good = status(server)["version"]
    broken = manifests / "broken.yaml"
    broken.write_text(
        "kind: action\nname: bad\ndescription: Broken on purpose.\n"
        "python:\n  function: reloadactions.tools:no_such_function\n"
    )
    st, _ = wait_for(lambda: (s := status(server))["last_attempt"]["result"] == "rejected" and s)
    assert st["version"] == good
    assert any(re.search(r"broken\.yaml:\d+:\d+: ", e) for e in st["last_attempt"]["errors"])
    assert httpx.get(server.url + "/ready", timeout=10).status_code == 200
    answer = chat(server, 'please greet "Ada"')
    assert answer["tool_calls"][0]["output"] == "v1 hello Ada"
    assert answer["metadata"]["manifest_version"] == good
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert re.search(r'gateway_reloads_total\{result="rejected"\} [1-9]', metrics)
    broken.write_text(
        "kind: action\nname: bad\ndescription: Fixed now.\n"
        "python:\n  function: reloadactions.tools:shout\n"
    )
    st, _ = wait_for(lambda: (s := status(server))["last_attempt"]["result"] == "swapped" and s)
    assert st["last_attempt"]["errors"] == []
    assert st["version"] != good
    assert "broken.yaml" in st["files"]


def test_a_push_is_refused_whole_with_every_problem_of_each_document_listed(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """The reload shares validate's loader: an action failing its schema also shows its
    import problem in the same rejected attempt (before, only a second push showed it),
    and nothing of the push goes live, not even its valid new action."""
    manifests = write_site(tmp_path / "site")
    server = gateway_server(manifests, env=WATCH)
    good = status(server)["version"]
    (manifests / "shout.yaml").write_text(
        "kind: action\nname: shout\ndescription: Shout a text back in capitals.\n"
        "python:\n  function: reloadactions.tools:shout\n"
    )
    broken = BOT_YAML.format(actions="greet, pause_briefly, shout").replace(
        "  function: reloadactions.tools:greet",
        "  function: reloadactions.tools:no_such_function\ntimeout: 900",
    )
    (manifests / "bot.yaml").write_text(broken)
    st, _ = wait_for(lambda: (s := status(server))["last_attempt"]["result"] == "rejected" and s)
    errors = st["last_attempt"]["errors"]
    assert len(errors) == 2, errors
    assert re.search(r"bot\.yaml:11:\d+: .*has no attribute 'no_such_function'", errors[0])
    assert re.search(r"bot\.yaml:12:\d+: timeout: 900 is greater than the maximum", errors[1])
    assert st["version"] == good
    assert tool_names(server) == {"greet", "pause_briefly"}
    assert chat(server, 'please greet "Ada"')["tool_calls"][0]["output"] == "v1 hello Ada"


def test_a_hostile_push_is_rejected_and_the_live_set_keeps_serving(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """Files built to crash or hang the loader are located problems; chats go on meanwhile.

    200,000 nested brackets overflowed the C YAML composer's stack (the whole
    server died), a ten-line alias bomb expanded without end, and a FIFO named
    like a manifest blocked the reload thread forever.
    """
    manifests = write_site(tmp_path / "site")
    server = gateway_server(manifests, env=WATCH)
    good = status(server)["version"]
    depth = 200_000
    (manifests / "deep.yaml").write_text("kind: assistant\nname: deep\nx: " + "[" * depth)
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (manifests / "bomb.yaml").write_text("\n".join(bomb) + "\n")
    os.mkfifo(manifests / "pipe.yaml")
    (manifests / "device.yaml").symlink_to("/dev/null")

    def rejected() -> dict[str, Any] | None:
        st = status(server)
        errors = " ".join(st["last_attempt"]["errors"])
        every = all(f"{name}.yaml:" in errors for name in ("deep", "bomb", "pipe", "device"))
        return st if st["last_attempt"]["result"] == "rejected" and every else None

    st, _ = wait_for(rejected, timeout=30)
    assert st["version"] == good
    errors = st["last_attempt"]["errors"]
    assert any(re.search(r"deep\.yaml:3:\d+: collections nested deeper", e) for e in errors)
    assert any(re.search(r"bomb\.yaml:\d+:\d+: aliases expand", e) for e in errors)
    assert any(re.search(r"pipe\.yaml:1:1: cannot read: not a regular file", e) for e in errors)
    answer = chat(server, 'please greet "Ada"')
    assert answer["tool_calls"][0]["output"] == "v1 hello Ada"
    for name in ("deep", "bomb", "pipe", "device"):
        (manifests / f"{name}.yaml").unlink()
    st, _ = wait_for(lambda: (s := status(server))["last_attempt"]["result"] != "rejected" and s)
    assert st["version"] == good and st["last_attempt"]["result"] in ("unchanged", "swapped")


def test_gateway_started_on_a_broken_set_becomes_ready_when_fixed(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """Booting on an invalid set is not ready (503); fixing the file makes it ready and serving."""
    manifests = write_site(tmp_path / "site")
    bot = manifests / "bot.yaml"
    bot.write_text(bot.read_text().replace("tools:greet", "tools:missing_function"))
    server = gateway_server(manifests, env=WATCH)
    assert httpx.get(server.url + "/ready", timeout=10).status_code == 503
    assert status(server)["last_attempt"]["result"] == "rejected"
    write_site(tmp_path / "site")
    wait_for(lambda: httpx.get(server.url + "/ready", timeout=10).status_code == 200)
    assert chat(server, 'please greet "Ada"')["tool_calls"][0]["output"] == "v1 hello Ada"


def test_editing_python_code_makes_the_next_call_run_new_code(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """After an action's code changes on disk, the next call runs the new code."""
    site = tmp_path / "site"
    server = gateway_server(write_site(site), env=WATCH)
    assert chat(server, 'please greet "Ada"')["tool_calls"][0]["output"] == "v1 hello Ada"
    before = status(server)["version"]
    write_code(site, "version-2")
    wait_for(lambda: status(server)["version"] != before)
    answer = chat(server, 'please greet "Ada"')
    assert answer["tool_calls"][0]["output"] == "version-2 hello Ada"
    assert answer["metadata"]["manifest_version"] != before


def test_same_size_code_edit_within_a_second_runs_new_code(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """An edit that keeps the file size and mtime second (a fast checkout) runs the new code."""
    site = tmp_path / "site"
    server = gateway_server(write_site(site), env=WATCH)
    assert chat(server, 'please greet "Ada"')["tool_calls"][0]["output"] == "v1 hello Ada"
    before = status(server)["version"]
    code = site / "reloadactions" / "tools.py"
    old = code.stat()
    write_code(site, "v2")
    os.utime(code, ns=(old.st_atime_ns, old.st_mtime_ns))  # as if written in the same second
    wait_for(lambda: status(server)["version"] != before)
    assert chat(server, 'please greet "Ada"')["tool_calls"][0]["output"] == "v2 hello Ada"


def test_swapping_a_symlinked_checkout_goes_live(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """Flipping a git-sync style `current` symlink serves the new revision's set and code."""
    write_site(tmp_path / "rev1", tag="rev1")
    write_site(tmp_path / "rev2", tag="rev2", actions="greet, pause_briefly, shout")
    (tmp_path / "rev2" / "manifests" / "shout.yaml").write_text(
        "kind: action\nname: shout\ndescription: Shout a text back in capitals.\n"
        "python:\n  function: reloadactions.tools:shout\n"
    )
    (tmp_path / "current").symlink_to("rev1")
    server = gateway_server(tmp_path / "current" / "manifests", env=WATCH)
    assert chat(server, 'please greet "Ada"')["tool_calls"][0]["output"] == "rev1 hello Ada"
    (tmp_path / "current.new").symlink_to("rev2")
    (tmp_path / "current.new").replace(tmp_path / "current")  # atomic, as git-sync does
    wait_for(lambda: "shout" in tool_names(server))
    assert chat(server, 'please greet "Ada"')["tool_calls"][0]["output"] == "rev2 hello Ada"


def test_configmap_update_goes_live(tmp_path: Path, gateway_server: ServerFactory) -> None:
    """A Kubernetes ConfigMap volume update (files -> ..data -> ..<ts>/, swapped) goes live."""
    site = tmp_path / "site"
    write_site(site)  # code in site/reloadactions; manifests come from the "ConfigMap"
    volume = tmp_path / "configmap"

    def publish(stamp: str, actions: str) -> None:
        data = volume / f"..{stamp}"
        data.mkdir(parents=True)
        (data / "bot.yaml").write_text(BOT_YAML.format(actions=actions))
        (data / "shout.yaml").write_text(
            "kind: action\nname: shout\ndescription: Shout a text back in capitals.\n"
            "python:\n  function: reloadactions.tools:shout\n"
        )
        (volume / "..data_tmp").symlink_to(data.name)
        (volume / "..data_tmp").replace(volume / "..data")  # the kubelet's atomic swap
        for name in ("bot.yaml", "shout.yaml"):
            if not (volume / name).is_symlink():
                (volume / name).symlink_to(f"..data/{name}")

    publish("2026_11_24_01", "greet, pause_briefly")
    server = gateway_server(volume, env={**WATCH, "GATEWAY_ROOT": str(site)})
    assert tool_names(server) == {"greet", "pause_briefly"}
    publish("2026_11_24_02", "greet, pause_briefly, shout")
    wait_for(lambda: "shout" in tool_names(server))
    assert chat(server, 'please shout "ok"')["tool_calls"][0]["output"] == "OK!"


def test_reload_during_twenty_concurrent_chats_fails_none(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """Code edits and forced reloads while 20 chats run leave every chat successful."""
    site = tmp_path / "site"
    server = gateway_server(write_site(site), env=WATCH)
    first = status(server)["version"]

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            chats = [
                asyncio.create_task(
                    client.post("/chat", json={"assistant": "bot", "message": "pause briefly"})
                )
                for _ in range(20)
            ]
            await asyncio.sleep(0.2)
            write_code(site, "second")
            forced = await client.post("/manifests/reload")
            assert forced.status_code == 200
            await asyncio.sleep(0.3)
            write_code(site, "third-edit")
            return await asyncio.gather(*chats)

    responses = asyncio.run(scenario())
    outputs = []
    for response in responses:
        assert response.status_code == 200, response.text
        body = response.json()
        call = body["tool_calls"][0]
        assert call["status"] == "succeeded", call
        outputs.append(call["output"])
        assert body["metadata"]["manifest_version"]
    assert set(outputs) <= {"v1 paused", "second paused", "third-edit paused"}
    wait_for(
        lambda: chat(server, "pause briefly")["tool_calls"][0]["output"] == "third-edit paused"
    )
    assert status(server)["version"] != first


# -- SIGHUP needs the server as its own process (signals go to the main thread) --


LAUNCHER = """
import uvicorn
from gateway.app import create_app
from gateway.settings import Settings
uvicorn.run(create_app(Settings.from_env(dotenv=None)), host="127.0.0.1", port=0, log_level="info")
"""


class StartProcess(Protocol):
    """Start the gateway in a subprocess over ``manifests``; returns (process, base URL)."""

    def __call__(
        self, manifests: Path, *, env: Mapping[str, str] = ..., prefix: Sequence[str] = ...
    ) -> tuple[subprocess.Popen[bytes], str]: ...


@pytest.fixture
def process_server(tmp_path: Path) -> Iterator[StartProcess]:
    """Factory: run the gateway with uvicorn in a subprocess; yields (process, base URL).

    Watching is off unless ``env`` turns it on; ``prefix`` is put before the
    command (e.g. ``unshare`` to run it under other kernel limits).
    """
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        manifests: Path, *, env: Mapping[str, str] = {}, prefix: Sequence[str] = ()
    ) -> tuple[subprocess.Popen[bytes], str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))}
        environ |= {
            "GATEWAY_MANIFESTS": str(manifests),
            "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path}/gateway.db",
            "GATEWAY_WATCH": "false",
            "ENVIRONMENT": "development",
            **env,
        }
        with (tmp_path / "server.log").open("wb") as log:
            proc = subprocess.Popen(
                [*prefix, sys.executable, "-c", LAUNCHER],
                cwd=tmp_path,
                env=environ,
                stdout=log,
                stderr=log,
            )
        procs.append(proc)
        (url, _) = wait_for(
            lambda: (
                (
                    m := re.search(
                        r"Uvicorn running on (http://127\.0\.0\.1:\d+)",
                        (tmp_path / "server.log").read_text(errors="replace"),
                    )
                )
                and m.group(1)
            ),
            timeout=30,
        )
        return proc, url

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_sighup_reloads_when_watching_is_off(tmp_path: Path, process_server: StartProcess) -> None:
    """With GATEWAY_WATCH=false a write is not picked up, but SIGHUP reloads it."""
    site = tmp_path / "site"
    proc, url = process_server(write_site(site))
    before = httpx.get(url + "/manifests/status", timeout=10).json()
    assert before["watching"] is False
    write_code(site, "version-2")
    time.sleep(0.5)
    assert httpx.get(url + "/manifests/status", timeout=10).json()["version"] == before["version"]
    proc.send_signal(signal.SIGHUP)
    after, _ = wait_for(
        lambda: (
            (s := httpx.get(url + "/manifests/status", timeout=10).json())["version"]
            != before["version"]
            and s
        )
    )
    assert after["last_attempt"]["reason"] == "SIGHUP"
    assert proc.poll() is None


SHOUT_YAML = """
kind: action
name: shout
description: {description}
python:
  function: reloadactions.tools:shout
"""


def few_inotify_watches(count: int) -> list[str]:
    """A command prefix running under at most ``count`` inotify watches (a user namespace).

    ``/proc/sys/user/max_inotify_watches`` is per user namespace: the limit binds
    the server started under the prefix and nothing else on the machine.
    """
    script = f'echo {count} > /proc/sys/user/max_inotify_watches && exec "$@"'
    prefix = ["unshare", "--user", "--map-root-user", "sh", "-c", script, "sh"]
    try:
        probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30, check=False)
    except OSError as exc:
        pytest.skip(f"no unshare here: {exc}")
    if probe.returncode != 0:
        pytest.skip(f"cannot limit inotify watches here: {probe.stderr.decode(errors='replace')}")
    return prefix


def test_an_edit_past_the_inotify_watch_limit_still_goes_live(
    tmp_path: Path, process_server: StartProcess
) -> None:
    """With fs.inotify.max_user_watches exhausted the watcher polls and says so; no edit is lost.

    watchfiles was told to ignore watch errors, so a tree with more directories
    than the limit was watched in part: an edit below the last watched directory
    never reloaded, while /manifests/status said it was watching.
    """
    manifests = write_site(tmp_path / "site")
    deep = manifests.joinpath(*(f"level{i}" for i in range(20)))
    deep.mkdir(parents=True)
    (deep / "shout.yaml").write_text(SHOUT_YAML.format(description="Shout a text back."))
    os.utime(deep / "shout.yaml", (1, 1))  # the edit below changes the mtime's second
    proc, url = process_server(manifests, env=WATCH, prefix=few_inotify_watches(8))
    before = httpx.get(url + "/manifests/status", timeout=10).json()
    assert before["watching"] is True
    (deep / "shout.yaml").write_text(SHOUT_YAML.format(description="Shout it back, loudly."))
    after, _ = wait_for(
        lambda: (
            (s := httpx.get(url + "/manifests/status", timeout=10).json())["version"]
            != before["version"]
            and s
        ),
        timeout=60,
    )
    assert after["last_attempt"]["result"] == "swapped"
    assert after["polling"] is True
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert "reload_watch_polling" in log and "max_user_watches" in log
    assert proc.poll() is None


def test_polling_sees_a_second_edit_within_the_same_second(
    tmp_path: Path, process_server: StartProcess
) -> None:
    """When polling (WATCHFILES_FORCE_POLLING, for NFS), the last of two quick pushes goes live.

    watchfiles' poller compared modification times to the second: a same-size
    write in the second of the push just reloaded was never seen, and the
    gateway kept serving the older push until some other file changed.
    """
    manifests = write_site(tmp_path / "site")
    shout = manifests / "shout.yaml"
    shout.write_text(SHOUT_YAML.format(description="Shout it back, take one."))
    os.utime(shout, (1, 1))
    proc, url = process_server(manifests, env={**WATCH, "WATCHFILES_FORCE_POLLING": "true"})

    def version() -> str:
        answer: str = httpx.get(url + "/manifests/status", timeout=10).json()["version"]
        return answer

    initial = version()
    shout.write_text(SHOUT_YAML.format(description="Shout it back, take two."))
    second, _ = wait_for(lambda: (v := version()) != initial and v, timeout=30)
    stamp = shout.stat().st_mtime_ns
    shout.write_text(SHOUT_YAML.format(description="Shout it back, take six."))
    os.utime(shout, ns=(stamp, stamp))  # as if written in the same second
    wait_for(lambda: version() not in (initial, second), timeout=30)
    assert httpx.get(url + "/manifests/status", timeout=10).json()["polling"] is True
    assert proc.poll() is None


def test_polling_does_not_reload_on_writes_to_a_database_under_the_root(
    tmp_path: Path, process_server: StartProcess
) -> None:
    """When polling, INSERTs into ``root/data/shop.db`` (the README's layout) reload nothing.

    Each transaction creates and deletes ``shop.db-journal``, which changes the
    mtime of ``root/data``: the poller took that directory for a change and ran a
    full load (result ``unchanged``) every poll while the database was written.
    """
    manifests = write_site(tmp_path / "site")
    (manifests / "data").mkdir()
    db = sqlite3.connect(manifests / "data" / "shop.db", isolation_level=None)
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT)")
    proc, url = process_server(manifests, env={**WATCH, "WATCHFILES_FORCE_POLLING": "true"})

    before = status(url)
    assert before["polling"] is True
    # Write for longer than the poller's longest debounce (2 s), so a batch is sent
    # while the writes go on; each transaction creates and deletes the journal.
    start = time.monotonic()
    while time.monotonic() - start < 3.0:
        db.execute("INSERT INTO orders (note) VALUES ('x')")
        time.sleep(0.02)
    db.close()
    # An edit afterwards goes live: the poller ran through the writes (it polls in order).
    (manifests / "shout.yaml").write_text(SHOUT_YAML.format(description="Shout a text back."))
    after, _ = wait_for(lambda: "shout.yaml" in (s := status(url))["files"] and s, timeout=60)
    assert after["reloads"] == {**before["reloads"], "swapped": before["reloads"]["swapped"] + 1}
    assert proc.poll() is None


def test_polling_sees_an_edit_under_a_symlinked_directory(
    tmp_path: Path, process_server: StartProcess
) -> None:
    """When polling, an edit in ``root/team -> ../shared`` goes live (the loader reads it).

    The poller walked the tree without following symlinks, so it saw the link
    ``root/team`` but none of the manifests the loader finds through it: an edit
    there never went live (on NFS, or once the inotify limit was reached).
    """
    manifests = write_site(tmp_path / "site")
    shared = tmp_path / "site" / "shared"
    shared.mkdir()
    (shared / "shout.yaml").write_text(SHOUT_YAML.format(description="Shout a text back."))
    (manifests / "team").symlink_to("../shared", target_is_directory=True)
    (shared / "loop").symlink_to("..", target_is_directory=True)  # walked once, not forever
    proc, url = process_server(manifests, env={**WATCH, "WATCHFILES_FORCE_POLLING": "true"})

    before = status(url)
    assert before["polling"] is True
    assert "team/shout.yaml" in before["files"]
    (shared / "shout.yaml").write_text(SHOUT_YAML.format(description="Shout it back, loudly."))
    after, _ = wait_for(lambda: (s := status(url))["version"] != before["version"] and s, 60)
    assert after["last_attempt"]["result"] == "swapped"
    assert proc.poll() is None


def test_a_new_directory_past_the_inotify_watch_limit_still_goes_live(
    tmp_path: Path, process_server: StartProcess
) -> None:
    """Directories a push adds once the inotify limit is reached are polled, not lost.

    The OS watches of a new directory are added by watchfiles' own thread, which
    drops the error when the limit refuses one: a manifest in a directory added
    past the limit never reloaded, and nothing was logged.
    """
    manifests = write_site(tmp_path / "site")
    proc, url = process_server(manifests, env=WATCH, prefix=few_inotify_watches(8))

    before = status(url)
    assert before["polling"] is False  # the tree fits the limit: OS events
    deep = manifests.joinpath(*(f"level{i}" for i in range(20)))
    deep.mkdir(parents=True)
    (manifests / "shout.yaml").write_text(SHOUT_YAML.format(description="Shout a text back."))
    wait_for(lambda: "shout.yaml" in status(url)["files"], 60)
    whisper = SHOUT_YAML.format(description="Whisper.").replace("name: shout", "name: whisper")
    (deep / "whisper.yaml").write_text(whisper)
    wait_for(lambda: any(f.endswith("level19/whisper.yaml") for f in status(url)["files"]), 60)
    assert status(url)["polling"] is True
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert "reload_watch_polling" in log and "max_user_watches" in log
    assert proc.poll() is None


SLOW_PY = '''
"""Imported slowly while the test holds it: that import waits 1.5 s holding a lock on its
own file, which tells the test that the manifests were read (import-time code may write
nowhere, so it cannot leave a marker file)."""
import fcntl
import pathlib
import time

here = pathlib.Path(__file__).parents[2]  # not watched
if here.joinpath("hold").exists():  # only the import the test holds waits: not the others
    with open(__file__) as _lock:
        fcntl.flock(_lock, fcntl.LOCK_SH)
        time.sleep(1.5)  # the window in which the test writes the rest of the push


def hello() -> str:
    """Say hello."""
    return "hello"
'''


def importing(module: Path) -> bool:
    """Whether an import of ``module`` (``SLOW_PY``) is waiting: it holds a lock on its file."""
    with module.open() as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def write_slow_action(
    site: Path, manifests: Path, module: str, code: str = SLOW_PY, package: str = "reloadactions"
) -> None:
    """Action ``hello`` (``slow.yaml``) running ``package.module``, whose source is ``code``."""
    (site / package / f"{module}.py").write_text(code)
    (manifests / "slow.yaml").write_text(
        "kind: action\nname: hello\ndescription: Say hello.\ntimeout: 30\n"
        f"python:\n  function: {package}.{module}:hello\n"
    )


def test_a_push_during_startup_goes_live(tmp_path: Path, gateway_server: ServerFactory) -> None:
    """A manifest written while the first load runs (a git-sync flip at pod start) goes live.

    The watchers started only after the first load and the sandbox were up: a
    write in between made no event, and the gateway served the set it booted
    with until some later change, while other replicas served the new one.
    """
    site = tmp_path / "site"
    manifests = write_site(site)
    write_slow_action(site, manifests, "slow")
    hold = tmp_path / "hold"
    hold.touch()  # the first load's import, and only it, waits 1.5 s

    def push_while_loading() -> None:
        # The first load has read every manifest.
        wait_for(lambda: importing(site / "reloadactions" / "slow.py"), timeout=60)
        (manifests / "shout.yaml").write_text(SHOUT_YAML.format(description="Shout it."))
        hold.unlink()

    pusher = threading.Thread(target=push_while_loading)
    pusher.start()
    try:
        server = gateway_server(manifests, env=WATCH)
    finally:
        pusher.join()
    wait_for(lambda: "shout.yaml" in status(server)["files"], timeout=30)


def test_a_push_landing_during_a_load_is_not_reported_as_rejected(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """A load that read half a push (manifests new, code not yet) is not reported as rejected.

    A `git pull` changing a manifest and the code it names, landing while a load
    ran, made that load fail ("no function"): an error in the log and in
    gateway_reloads_total{result="rejected"} (an alert) for a push that was fine,
    though the reload already waiting was about to load all of it.
    """
    site = tmp_path / "site"
    manifests = write_site(site)
    # Imported after reloadactions.tools (references are imported in sorted order).
    write_slow_action(site, manifests, "zz_slow")
    server = gateway_server(manifests, env=WATCH)
    hold = tmp_path / "hold"
    hold.touch()  # the next load's import, and only it, waits 1.5 s
    before = status(server)["reloads"]
    # The manifests of the push: an action whose function the code does not have yet.
    (manifests / "shout.yaml").write_text(
        SHOUT_YAML.format(description="Shout.").replace("tools:shout", "tools:shout_twice")
    )
    # That load has imported the old tools.py.
    wait_for(lambda: importing(site / "reloadactions" / "zz_slow.py"), timeout=60)
    code = TOOLS_PY.replace("{tag}", "v2") + (
        "\n\ndef shout_twice(text: str) -> str:\n"
        '    """Shout a text twice."""\n'
        '    return (text.upper() + "! ") * 2\n'
    )
    (site / "reloadactions" / "tools.py").write_text(code)  # the rest of the push
    hold.unlink()  # the load reading it all imports at once
    after, _ = wait_for(lambda: "shout.yaml" in (s := status(server))["files"] and s, 60)
    assert after["last_attempt"]["result"] == "swapped"
    assert after["reloads"]["rejected"] == before["rejected"]
    assert after["last_attempt"]["errors"] == []


def test_an_unreadable_directory_in_the_tree_does_not_stop_watching_the_rest(
    tmp_path: Path, process_server: StartProcess
) -> None:
    """A directory the gateway may not read (an ext4 volume's lost+found) hides no other edit.

    The recursive watch stopped at the first directory it could not watch and
    watchfiles ignored the error: every directory listed after it (readdir
    order) was unwatched, so edits there never went live. The server runs in a
    user namespace where a directory owned by another uid, mode 000, is unreadable.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to hand a directory to another uid")
    manifests = write_site(tmp_path / "site")
    for i in range(30):
        (manifests / f"team{i:02}").mkdir()
        (manifests / f"team{i:02}" / "notes.yaml").write_text(f"# team {i}\n")
    locked = manifests / "lost+found"
    for attempt in range(10):  # until readdir lists some team after it
        locked.mkdir()
        order = os.listdir(manifests)  # noqa: PTH208 - readdir order, as the watcher walks
        after = [n for n in order[order.index(locked.name) + 1 :] if n.startswith("team")]
        if after:
            break
        locked.rmdir()
        locked = manifests / f"lost+found{attempt}"
    assert after, order
    os.chown(locked, 12345, 12345)
    locked.chmod(0)
    proc, url = process_server(manifests, env=WATCH, prefix=few_inotify_watches(100_000))

    def version() -> str:
        answer: str = httpx.get(url + "/manifests/status", timeout=10).json()["version"]
        return answer

    before = version()
    (manifests / after[-1] / "shout.yaml").write_text(SHOUT_YAML.format(description="Shout."))
    wait_for(lambda: version() != before, timeout=30)
    assert proc.poll() is None


@pytest.mark.parametrize("polling", [False, True], ids=["events", "polling"])
def test_a_pushed_file_name_that_is_not_utf8_is_a_named_problem_and_watching_goes_on(
    tmp_path: Path, gateway_server: ServerFactory, polling: bool
) -> None:
    """A push of ``new\\xfe.yaml`` failed the reload with a UnicodeEncodeError naming no
    file; watchfiles' watcher raised on the name, and after three such pushes the gateway
    polled for good; polling, the reason held the name and /manifests/status answered
    500. The reload is rejected naming the file (escaped), watching goes on with events,
    and once the file is gone the next push goes live."""
    manifests = write_site(tmp_path / "site")
    env = {**WATCH, "WATCHFILES_FORCE_POLLING": "true"} if polling else WATCH
    server = gateway_server(manifests, env=env)
    live = status(server)["version"]
    bad = manifests / os.fsdecode(b"new\xfe.yaml")
    named = f"{manifests}/new\\xfe.yaml:1:1: the file name is not valid UTF-8"
    for n in range(1 if polling else 4):  # one more than the watcher's failures before it polls
        seen = status(server)["reloads"]["rejected"]
        bad.write_text(f"kind: assistant\nname: n{n}\n")

        def rejected(seen: int = seen) -> dict[str, Any] | None:
            found = status(server)
            return found if found["reloads"]["rejected"] > seen else None

        report, _ = wait_for(rejected)
        assert report["last_attempt"]["result"] == "rejected", report["last_attempt"]
        assert report["last_attempt"]["errors"][0].startswith(named)
        assert report["version"] == live and report["polling"] is polling
    bad.unlink()
    (manifests / "bot.yaml").write_text(BOT_YAML.format(actions="greet"))
    wait_for(lambda: tool_names(server) == {"greet"})


GS_TOOLS = '''
"""An action that tells where its module is and reads a file beside it."""
from pathlib import Path

def where() -> str:
    """Where this module is, and the price beside it."""
    return f"{__file__} {(Path(__file__).parent / 'price.txt').read_text()}"
'''

GS_YAML = """
kind: action
name: where
description: {description}
python:
  function: gsactions.tools:where
"""


def write_revision(revs: Path, name: str, description: str = "Where it runs.") -> None:
    """One git-sync revision: manifests/ and the gsactions package with its data file."""
    (revs / name / "manifests").mkdir(parents=True)
    (revs / name / "gsactions").mkdir()
    (revs / name / "gsactions" / "__init__.py").write_text("")
    (revs / name / "gsactions" / "tools.py").write_text(GS_TOOLS)
    (revs / name / "gsactions" / "price.txt").write_text("7")
    (revs / name / "manifests" / "a.yaml").write_text(GS_YAML.format(description=description))


def test_git_sync_modules_live_under_the_link_so_a_deleted_revision_takes_nothing(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """With git-sync's layout (``GATEWAY_MANIFESTS=/git/current/manifests``, ``current ->
    revs/r1``) and no GATEWAY_ROOT, the gateway root was the resolved revision: a module's
    ``__file__`` was ``revs/r2/...``, so after a rejected push and git-sync deleting r2 the
    live set's data files were gone (FileNotFoundError); and the root changed with every
    flip. The root is ``current`` as given: ``__file__`` is under it whatever it points to.
    And the zygotes are replaced after the rejected flip too (the reloader's refresh): their
    Landlock rules named the revision then deleted, so reading the data file was refused."""
    revs = tmp_path / "revs"
    write_revision(revs, "r1")
    (current := tmp_path / "current").symlink_to("revs/r1")

    def flip(name: str) -> None:
        (tmp_path / "current.new").symlink_to(f"revs/{name}")
        (tmp_path / "current.new").replace(current)  # atomic, as git-sync does

    def where() -> list[str]:
        response = httpx.post(f"{server.url}/actions/where/invoke", json={"arguments": {}})
        answer = response.json()
        assert answer["status"] == "succeeded", answer
        return str(answer["output"]).strip('"').split()[:2]

    server = gateway_server(current / "manifests", env=WATCH)
    assert where() == [str(current / "gsactions" / "tools.py"), "7"]
    write_revision(revs, "r2", description="Where it runs, said again.")
    flip("r2")
    wait_for(lambda: status(server)["last_attempt"]["result"] == "swapped")
    assert where() == [str(current / "gsactions" / "tools.py"), "7"]
    write_revision(revs, "r3")
    (revs / "r3" / "manifests" / "a.yaml").write_text("kind: action\nname: where\n")
    flip("r3")
    wait_for(lambda: status(server)["last_attempt"]["result"] == "rejected")
    shutil.rmtree(revs / "r1")
    shutil.rmtree(revs / "r2")  # git-sync keeps the revision it flipped to only
    assert where() == [str(current / "gsactions" / "tools.py"), "7"]  # the live set still runs
