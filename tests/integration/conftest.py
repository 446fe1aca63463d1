"""Fixtures that run the REAL gateway: uvicorn on a free loopback port, in a background thread.

``gateway_server(manifests_dir, env=...)`` (a factory fixture) starts one
server per call with its own temporary SQLite database and stops them all at
the end of the test; it returns a ``GatewayServer`` with ``.url``, ``.ws_url``,
``.settings``, ``.services`` (the live pieces) and ``.call(coro)`` (run a
coroutine on the server's event loop). ``api_manifests`` is a small set of
assistants and actions served by the offline model; ``api_server`` is one
server over it shared by a test module.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import textwrap
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn

from gateway.api.services import Services
from gateway.app import create_app
from gateway.settings import Settings
from gateway.testing.fake_openai import FakeOpenAI

T = TypeVar("T")

ACTIONS_PY = '''
"""Actions of the API test manifests."""
import time


def get_weather(city: str, unit: str = "c") -> dict:
    """Get the current weather for a city."""
    return {"city": city, "temperature": 21, "unit": unit}


def slow_wait(seconds: float) -> str:
    """Wait a number of seconds, then answer."""
    time.sleep(seconds)
    return f"waited {seconds}"


def explode(reason: str) -> str:
    """Explode with a reason."""
    raise RuntimeError("boom: " + reason)
'''

MANIFESTS_YAML = """
kind: action
name: get_weather
description: Get the current weather for a city.
python:
  function: apiactions.apitools:get_weather
---
kind: action
name: slow_wait
description: Wait a number of seconds (slow).
timeout: 30
python:
  function: apiactions.apitools:slow_wait
---
kind: action
name: explode
description: Explode with a reason.
python:
  function: apiactions.apitools:explode
---
kind: assistant
name: helper
display_name: Helper
description: Answers weather questions.
initial_message: Hello! Ask me about the weather.
actions: [get_weather, slow_wait, explode]
---
kind: assistant
name: other
description: A second assistant with no tools.
"""


class GatewayServer:
    """A running gateway (uvicorn in a thread) and how to reach it."""

    def __init__(self, settings: Settings, ws_ping: tuple[float, float] = (20.0, 20.0)) -> None:
        """``ws_ping``: uvicorn's WebSocket keepalive (ping interval, pong timeout), seconds."""
        self.settings = settings
        self.app = create_app(settings)
        self.services: Services = self.app.state["services"]
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
        # and without it Nagle + delayed ACKs add ~40 ms to every response.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port: int = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="on",
            http="h11",
            ws="websockets-sansio",
            ws_ping_interval=ws_ping[0],
            ws_ping_timeout=ws_ping[1],
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, args=(sock,), daemon=True)

    def _run(self, sock: socket.socket) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve(sockets=[sock])

        asyncio.run(main())

    def start(self) -> GatewayServer:
        """Start and wait until the lifespan startup is done."""
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the gateway failed to start (see the captured log)")
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start within 30 s")
            time.sleep(0.01)
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the server's event loop and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Shut down (lifespan shutdown runs) and join the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=15)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout=5)


ServerFactory = Callable[..., GatewayServer]


def write_api_manifests(root: Path) -> Path:
    """Write the API test manifests and actions under ``root``; returns the manifests dir."""
    manifests = root / "manifests"
    actions = root / "apiactions"
    manifests.mkdir(parents=True, exist_ok=True)
    actions.mkdir(parents=True, exist_ok=True)
    (actions / "__init__.py").write_text("")
    (actions / "apitools.py").write_text(textwrap.dedent(ACTIONS_PY))
    (manifests / "api.yaml").write_text(MANIFESTS_YAML)
    return manifests


@pytest.fixture
def api_manifests(tmp_path: Path) -> Path:
    """A fresh copy of the API test manifests (helper, other) in a temp dir."""
    return write_api_manifests(tmp_path / "site")


@pytest.fixture
def gateway_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Factory: ``gateway_server(manifests_dir, env={...})`` starts a real server on loopback.

    Each server gets its own SQLite database in a temp dir; ``GATEWAY_WATCH``
    defaults to false (pass ``env={"GATEWAY_WATCH": "true"}`` to watch);
    ``ws_ping=(interval, timeout)`` shortens uvicorn's WebSocket keepalive (20 s, 20 s).
    The manifests dir is used as given (copy it first if the test edits it).
    """
    servers: list[GatewayServer] = []

    def start(
        manifests_dir: Path,
        env: Mapping[str, str] | None = None,
        ws_ping: tuple[float, float] = (20.0, 20.0),
    ) -> GatewayServer:
        data = tmp_path_factory.mktemp("gateway-data")
        environ = {
            "GATEWAY_MANIFESTS": str(manifests_dir),
            "GATEWAY_DATABASE_URL": f"sqlite:///{data}/gateway.db",
            "GATEWAY_WATCH": "false",
            "GATEWAY_SSE_HEARTBEAT": "15",
            "LOGGING_LEVEL": "WARNING",
            **(env or {}),
        }
        server = GatewayServer(Settings.from_env(environ, dotenv=None), ws_ping)
        servers.append(server)
        return server.start()

    yield start
    for server in reversed(servers):
        server.stop()


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """One open (development, no keys) server over the API test manifests, per module."""
    root = tmp_path_factory.mktemp("api-site")
    manifests = write_api_manifests(root)
    data = tmp_path_factory.mktemp("api-data")
    environ = {
        "GATEWAY_MANIFESTS": str(manifests),
        "GATEWAY_DATABASE_URL": f"sqlite:///{data}/gateway.db",
        "GATEWAY_WATCH": "false",
        "LOGGING_LEVEL": "WARNING",
    }
    server = GatewayServer(Settings.from_env(environ, dotenv=None)).start()
    yield server
    server.stop()


def copy_manifests(src: Path, dst: Path) -> Path:
    """Copy a manifests tree and its siblings (``apiactions/``) under ``dst``; returns the copy."""
    shutil.copytree(src.parent, dst, dirs_exist_ok=True)
    return dst / src.name


@pytest.fixture(scope="module")
def _module_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(models=["fake-model", "other-model"]) as server:
        yield server


@pytest.fixture
def fake(_module_fake: FakeOpenAI) -> FakeOpenAI:
    """A FakeOpenAI over real HTTP, one per test module, reset for each test (nothing
    scripted: it echoes the last user message). Modules needing a fresh server per test
    define their own ``fake``."""
    _module_fake.reset()
    return _module_fake
