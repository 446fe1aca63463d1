"""`gateway serve` as a process: stopped by a signal while runs stream, it drains and clients
see a clean end; a second one on a taken port stops at once without touching the first's runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests._serve import serve, wait_ready

HOLD_PY = '''
"""An action that runs until the test releases it."""
import pathlib
import time


def hold_until_released() -> str:
    """Hold the run until released."""
    release = pathlib.Path(__file__).with_name("release")
    deadline = time.monotonic() + 60
    while not release.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.01)
    return "released"
'''

HOLD_YAML = """
kind: action
name: hold_until_released
description: Hold the run until released.
timeout: 90
python:
  function: apiactions.holdtools:hold_until_released
---
kind: assistant
name: holder
description: Holds its runs until released.
actions: [hold_until_released]
"""


def _holder(manifests: Path) -> Path:
    """Add the ``holder`` assistant, whose runs (``hold until released``) go on until the
    file returned is created: a run that lasts exactly as long as the test needs it."""
    (manifests / "hold.yaml").write_text(HOLD_YAML)
    (manifests.parent / "apiactions" / "holdtools.py").write_text(HOLD_PY)
    return manifests.parent / "apiactions" / "release"


def _children(pid: int) -> set[int]:
    """The direct children of ``pid`` (the sandbox's zygotes)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return {int(line) for line in found.stdout.split()}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _follow_sse(url: str, events: list[str], at: str, then: Callable[[], object]) -> None:
    """Stream a chat with the ``holder`` assistant (its action runs until the test releases
    it), appending each event's name to ``events``; call ``then`` at the event ``at``."""
    body = {"assistant": "holder", "message": "hold until released", "stream": True}
    with httpx.stream("POST", f"{url}/chat", json=body, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
                if events[-1] == at:
                    then()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_drains_runs_and_ends_every_stream_cleanly(
    api_manifests: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    """On SIGTERM/SIGINT a short run finishes and a long one is cancelled after
    GATEWAY_DRAIN_SECONDS: the SSE stream ends with `done` (it was cut mid-body after
    uvicorn's 10 s), the WebSocket gets `done` then close 1001 (it got 1012 at once,
    with no end of run), /ready is 503 and new runs are refused with 503 meanwhile,
    the runs are stored finished, no zygote or call directory is left, and the exit
    status is 0 (SIGTERM was raised again after the drain: killed, 143)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"GATEWAY_DRAIN_SECONDS": "5", "TMPDIR": str(scratch)}
    release = _holder(api_manifests)
    proc, url = serve(api_manifests, f"sqlite:///{tmp_path}/g.db", tmp_path, env)
    sse: list[str] = []
    ws: list[str] = []
    closed: list[Any] = []
    started = threading.Barrier(3, timeout=60)

    def follow_ws() -> None:
        with ws_connect(f"{url.replace('http', 'ws', 1)}/ws/chat") as socket:
            socket.send(json.dumps({"assistant": "helper", "message": "wait 120 seconds (slow)"}))
            try:
                while True:
                    ws.append(json.loads(socket.recv(60))["event"])
                    if ws[-1] == "thread.run.step.created":
                        started.wait()
            except ConnectionClosed as exc:
                closed.append(exc.rcvd)

    try:
        wait_ready(proc, url)
        zygotes = _children(proc.pid)
        assert zygotes
        threads = [
            threading.Thread(
                target=_follow_sse, args=(url, sse, "thread.run.created", started.wait)
            ),
            threading.Thread(target=follow_ws),
        ]
        for thread in threads:
            thread.start()
        started.wait()
        # TMPDIR reaches the zygotes (they made their folders in /tmp, whatever it said).
        assert any(path.name.startswith("gateway-sandbox-") for path in scratch.iterdir())
        proc.send_signal(stop)
        # The 120 s run holds the drain open for GATEWAY_DRAIN_SECONDS (5 s: the checks
        # below must end within it on a loaded machine); uvicorn notices the signal
        # within 0.1 s.
        deadline = time.monotonic() + 3.5
        while (ready := httpx.get(f"{url}/ready", timeout=10)).status_code == 200:
            assert time.monotonic() < deadline, "/ready stayed 200 after the signal"
            time.sleep(0.05)
        assert ready.status_code == 503, ready.text
        assert ready.json()["error"]["message"] == "the gateway is shutting down"
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        refused = httpx.post(
            f"{url}/chat", json={"assistant": "other", "message": "hi"}, timeout=10
        )
        assert refused.status_code == 503, refused.text
        assert "shutting down" in refused.json()["error"]["message"]
        release.touch()  # the held run ends within the drain
        assert proc.wait(60) == 0  # SIGTERM was re-raised after the drain: -15 (143)
        for thread in threads:
            thread.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sse[-3:] == ["thread.run.completed", "metadata", "done"], sse
    assert ws[-3:] == ["thread.run.failed", "metadata", "done"], ws
    assert closed and closed[0] is not None and closed[0].code == 1001, closed
    with sqlite3.connect(tmp_path / "g.db") as db:
        statuses = sorted(status for (status,) in db.execute("SELECT status FROM runs"))
    assert statuses == ["cancelled", "completed"]
    assert not [pid for pid in zygotes if _alive(pid)]
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_start_up_stops_it_at_once(
    api_manifests: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    """SIGTERM/SIGINT while the start-up waits for an unreachable PostgreSQL stops it, exit 0;
    the signal used to be held until the 30 s wait ended (`docker stop` then killed it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    database = f"postgresql://gw:pw@127.0.0.1:{port}/gw"
    proc, _url = serve(api_manifests, database, tmp_path, {"LOGGING_LEVEL": "INFO"}, capture=True)
    assert proc.stdout is not None
    log = b""
    try:
        while b"event=store.unreachable" not in log:  # the start-up is waiting
            line = proc.stdout.readline()
            assert line, log.decode()
            log += line
        proc.send_signal(stop)
        log += proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.decode()
    assert "did not answer for 30 s" not in text, text
    assert "attempt=4" not in text, text  # 3.5 s after the first: the wait went on
    assert "event=gateway.startup_stopped" in text, text
    assert "Traceback" not in text and "startup_failed" not in text, text
    assert proc.returncode == 0, text


@pytest.mark.parametrize("same_port", [True, False], ids=["same port", "same SQLite file"])
def test_a_second_gateway_stops_before_touching_the_running_ones_runs(
    api_manifests: Path, tmp_path: Path, same_port: bool
) -> None:
    """A second `gateway serve` on the port, or on another port but the SQLite file, of a
    running one exits 3 with one error line naming the address (or the file and the other
    process). It used to open the store first, or to start altogether, marking the running
    gateway's run in progress failed ("interrupted") while it went on."""
    database = f"sqlite:///{tmp_path}/g.db"
    release = _holder(api_manifests)
    proc, url = serve(api_manifests, database, tmp_path)
    port = int(url.rpartition(":")[2])
    sse: list[str] = []
    started = threading.Event()

    second: subprocess.Popen[bytes] | None = None
    try:
        wait_ready(proc, url)
        follower = threading.Thread(
            target=_follow_sse, args=(url, sse, "thread.run.step.created", started.set)
        )
        follower.start()
        assert started.wait(60)
        on = port if same_port else None
        second, _ = serve(api_manifests, database, tmp_path, capture=True, port=on)
        log = second.communicate(timeout=60)[0].decode()
        release.touch()  # the run went on all along the second gateway's life: it ends now
        follower.join(60)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        if second is not None and second.poll() is None:
            second.kill()
            second.wait()
    assert sse[-3:] == ["thread.run.completed", "metadata", "done"], sse
    with sqlite3.connect(tmp_path / "g.db") as db:
        assert [status for (status,) in db.execute("SELECT status FROM runs")] == ["completed"]
    assert second.returncode == 3, log
    errors = [line for line in log.splitlines() if "event=gateway.startup_failed" in line]
    assert len(errors) == 1, log
    if same_port:
        assert f"127.0.0.1:{port}: Address already in use" in errors[0], log
    else:
        assert "GATEWAY_DATABASE_URL" in errors[0] and str(tmp_path / "g.db") in errors[0], log
        assert f"pid {proc.pid}" in errors[0], log
    assert "Traceback" not in log and "run.interrupted" not in log, log


def test_a_json_chat_cancelled_by_the_drain_gets_503(api_manifests: Path, tmp_path: Path) -> None:
    """A non-streaming `POST /chat` or `/v1/chat/completions` whose run outlives
    GATEWAY_DRAIN_SECONDS after SIGTERM gets 503 (the gateway is shutting down: retry),
    which a client or load balancer acts on; it got 409 "the run was cancelled", the
    status of a cancel another request made."""
    env = {"GATEWAY_DRAIN_SECONDS": "1"}
    proc, url = serve(api_manifests, f"sqlite:///{tmp_path}/g.db", tmp_path, env)
    answers: dict[str, httpx.Response] = {}
    message = "wait 120 seconds (slow)"

    def post(name: str, path: str, body: dict[str, Any]) -> None:
        answers[name] = httpx.post(f"{url}{path}", json=body, timeout=60)

    try:
        wait_ready(proc, url)
        threads = [
            threading.Thread(
                target=post, args=("chat", "/chat", {"assistant": "helper", "message": message})
            ),
            threading.Thread(
                target=post,
                args=(
                    "openai",
                    "/v1/chat/completions",
                    {"model": "helper", "messages": [{"role": "user", "content": message}]},
                ),
            ),
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while True:  # both runs are going before the signal
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
            if "\ngateway_runs_active 2.0\n" in metrics:
                break
            assert time.monotonic() < deadline, "the runs did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for name in ("chat", "openai"):
        answer = answers[name]
        assert answer.status_code == 503, (name, answer.text)
        assert "shutting down" in answer.json()["error"]["message"], (name, answer.text)


@pytest.mark.parametrize("damage", ["not_a_database", "newer_schema"])
def test_a_sqlite_file_that_cannot_serve_stops_start_up_with_one_clear_line(
    api_manifests: Path, tmp_path: Path, damage: str
) -> None:
    """A SQLite file that is not a database, or whose schema a newer gateway wrote, stops
    `gateway serve` (exit 3) with one `gateway.startup_failed` line naming
    GATEWAY_DATABASE_URL, the file and the cause; it was a 60-line traceback."""
    path = tmp_path / "g.db"
    if damage == "not_a_database":
        path.write_bytes(b"this is not a SQLite database " * 40)
        cause = "file is not a database"
    else:
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            db.execute("INSERT INTO schema_version (version) VALUES (999)")
        cause = "newer than this gateway"
    proc, _url = serve(api_manifests, f"sqlite:///{path}", tmp_path, capture=True)
    try:
        log = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, log
    errors = [line for line in log.splitlines() if "event=gateway.startup_failed" in line]
    assert len(errors) == 1, log
    assert "GATEWAY_DATABASE_URL" in errors[0] and str(path) in errors[0], log
    assert cause in errors[0], log
    assert "Traceback" not in log, log


def test_a_server_killed_with_its_process_group_leaves_no_sandbox_folder(
    api_manifests: Path, tmp_path: Path
) -> None:
    """systemd's last SIGKILL (or any kill of the server's process group) took the
    processes waiting for the zygotes too, before they removed the zygotes' folders:
    the zygotes are in sessions of their own now, read EOF when the server dies, and
    their folders go."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc, url = serve(
        api_manifests, f"sqlite:///{tmp_path}/g.db", tmp_path, {"TMPDIR": str(scratch)}
    )
    try:
        wait_ready(proc, url)
        folders = [p for p in scratch.iterdir() if p.name.startswith("gateway-sandbox-")]
        assert folders
        zygotes = _children(proc.pid)
        assert zygotes and all(os.getpgid(z) != os.getpgid(proc.pid) for z in zygotes)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while any(p.exists() for p in folders) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(p.exists() for p in folders), folders
