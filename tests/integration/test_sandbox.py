"""The sandbox against real subprocesses: every failure mode, and nothing left behind."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from gateway.executors.python import PythonConfig
from gateway.executors.runner import SandboxRunner
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Action, CallContext, SandboxLimits
from gateway.sandbox import _linux
from gateway.sandbox._cgroup import open_sandbox_cgroups
from gateway.sandbox.probes import SANDBOX_UID_BASE
from gateway.sandbox.protocol import Kill, encode
from gateway.sandbox.supervisor import _ZYGOTE_TASKS, Supervisor
from gateway.sandbox.worker import CALL_NAME, SPARE_NAME
from gateway.sandbox.zygote import REMOVER_NAME
from gateway.settings import Settings
from tests._sandbox_view import in_sandbox, seen

ACTIONS = """
import asyncio, os, signal, socket, subprocess, sys, time

def ok(name="world"):
    return f"hello {name}"

async def async_ok(n: int = 2):
    await asyncio.sleep(0)
    return {"double": n * 2}

def spin():
    while True:
        pass

def nap(seconds=30.0):
    time.sleep(seconds)
    return "woke"

def bomb():
    return len(bytearray(4 * 1024 * 1024 * 1024))

def grow():
    chunks = []
    while True:
        chunks.append(b"x" * (1 << 20))

def crash():
    os.abort()

def boom():
    raise ValueError("the widget is broken")

def big():
    return "x" * (20 * 1024 * 1024)

class Refused(Exception):
    error_type = "refused"

    def __init__(self, detail):
        super().__init__("the order is closed")
        self.detail = detail

def typed(detail: dict):
    raise Refused(detail)

def typed_odd():
    raise Refused({"when": object(), "order": 7, "bad\\ud800key": 1})

def controls():
    return "\\x01\\"" * (40 * 1024)

def shout():
    sys.stdout.write("y" * (20 * 1024 * 1024))
    sys.stdout.flush()
    return "done"

def forge():
    os.write(3, (50 * 1024 * 1024).to_bytes(4, "big") + b"{" * 65536)
    time.sleep(30)

def orphan():
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    return proc.pid

def orphan_then_hang():
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    print(proc.pid, flush=True)
    with open("pid", "w") as fh:
        fh.write(str(proc.pid))
    time.sleep(300)

def kill_parent():
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(5)
    return "survived"

def connect(port: int):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return "connected"
    except OSError as exc:
        return f"refused: {exc}"

def whoami():
    with open("/proc/self/status") as fh:
        caps = {k: v.strip() for k, v in (l.split(":") for l in fh if l.startswith("Cap"))}
    return {"uid": os.getuid(), "cwd": os.getcwd(), "pid": os.getpid(), "caps": caps,
            "fds": sorted(int(f) for f in os.listdir("/proc/self/fd"))}

def signal_(pid: int):
    try:
        os.kill(pid, 0)
        return "allowed"
    except OSError as exc:
        return exc.strerror

def environ():
    return dict(os.environ)

def scan(needle: str):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if needle.encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found

def fork_many(n: int = 200):
    made = 0
    for _ in range(n):
        try:
            pid = os.fork()
        except OSError as exc:
            return {"made": made, "errno": exc.errno}
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        made += 1
    return {"made": made, "errno": 0}

async def gave_up_on_a_thread():
    try:
        return await asyncio.wait_for(asyncio.to_thread(time.sleep, 30), 0.2)
    except asyncio.TimeoutError:
        return "gave up"

async def left_a_task():
    async def stubborn():
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                pass
    asyncio.get_running_loop().create_task(stubborn())
    await asyncio.sleep(0)
    return "returned"

def connect_unix(path: str):
    try:
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(path)
        return "connected"
    except OSError as exc:
        return f"refused: {exc}"

def undecodable_name():
    return "report-" + os.fsdecode(b"\\xff") + ".csv"  # as os.listdir gives it

def undecodable_error():
    raise ValueError("no file " + os.fsdecode(b"\\xff"))

def close_result():
    os.close(3)
    return "done"

def replace_result():
    fd = os.open("replaced", os.O_CREAT | os.O_WRONLY)
    os.dup2(fd, 3)
    return "done"

def forge_frame(size: int):
    from gateway.sandbox.protocol import CallResult, frame
    os.write(3, frame(CallResult(ok=True, output="x" * size)))
    os._exit(0)

def forge_error(size: int):
    from gateway.sandbox.protocol import CallResult, frame
    os.write(3, frame(CallResult(ok=False, error_type="boom", message="m" * size)))
    os._exit(0)

def forge_deep():
    from gateway.sandbox.protocol import HEADER
    body = b'{"ok":false,"error_type":"x","detail":{"a":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    os.write(3, HEADER.pack(len(body)) + body)
    os._exit(0)

def leave_no_fds():
    subprocess.Popen(["sleep", "60"])
    kept = []
    try:
        while True:
            kept.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    return f"opened {len(kept)}"

def exit_with(code: int):
    sys.stdout.flush()
    os._exit(code)

class Unreadable(Exception):
    def __str__(self):
        raise RuntimeError("no message for you")

class BadType(Exception):
    @property
    def error_type(self):
        raise RuntimeError("no type either")

class Lying(str):
    def encode(self, *args, **kwargs):
        raise RuntimeError("no bytes")

    def __getitem__(self, key):
        raise RuntimeError("no slices")

class NamelessMeta(type):
    def __getattribute__(cls, name):
        if name in ("__qualname__", "__module__", "__name__"):
            raise RuntimeError("no " + name)
        return super().__getattribute__(name)

class Nameless(Exception, metaclass=NamelessMeta):
    def __str__(self):
        raise RuntimeError("no message")

def hostile(what: str):
    if what == "message":
        raise Unreadable()
    if what == "traceback":
        raise Nameless()
    if what == "type":
        raise BadType("x")
    return Lying("a plain answer")

def secret_at_cut(where: str, pad: int):
    token = os.environ["SANDBOX_TEST_TOKEN"]
    if where == "output":
        return "y" * pad + token
    if where == "forged":
        from gateway.sandbox.protocol import CallResult, frame
        os.write(3, frame(CallResult(ok=True, output="y" * pad + token)))
        os._exit(0)
    if where == "traceback":
        raise ValueError(token + "z" * pad)
    if where == "stdout":
        print("y" * pad + token, flush=True)
        return "printed"
    raise ValueError("m" * pad + token)

def write_file(size_mb: int):
    with open("big.bin", "wb") as fh:
        fh.write(b"z" * (size_mb * 1024 * 1024))
    return "written"

def many_files(n: int):
    for i in range(n):
        os.close(os.open(f"f{i}", os.O_CREAT | os.O_WRONLY, 0o600))
    return os.getcwd()

def fill_scratch(files: int, mb: int, hold: float = 0):
    # Make `files` empty files, then write `mb` MB in 1 MB files; say where it stopped
    # (after `hold` seconds with what it made).
    made = written = 0
    try:
        for made in range(files):
            os.close(os.open(f"e{made}", os.O_CREAT | os.O_WRONLY, 0o600))
        made = files
        for written in range(mb):
            with open(f"w{written}", "wb") as fh:
                fh.write(b"w" * (1 << 20))
        written = mb
    except OSError as exc:
        time.sleep(hold)
        return {"made": made, "written": written, "error": exc.strerror}
    st = os.statvfs(".")
    return {"made": made, "written": written, "error": None,
            "size_mb": st.f_blocks * st.f_frsize >> 20, "files": st.f_files}

def run_own_program():
    # Write a program into the call's directory and run it: a script and a copy of a binary.
    import shutil, stat
    with open("hello.sh", "w") as fh:
        fh.write("#!/bin/sh\\necho ran\\n")
    shutil.copy("/bin/true", "mytrue")
    ran = {}
    for name in ("hello.sh", "mytrue"):
        os.chmod(name, 0o755)
        try:
            ran[name] = subprocess.run(["./" + name], capture_output=True).returncode
        except OSError as exc:
            ran[name] = exc.strerror
    # The way around a noexec folder: a copy of the program in a memory file.
    fd = os.memfd_create("copy")
    with open("/bin/true", "rb") as fh:
        os.write(fd, fh.read())
    try:
        ran["memfd"] = subprocess.run([f"/proc/self/fd/{fd}"], pass_fds=(fd,)).returncode
    except OSError as exc:
        ran["memfd"] = exc.strerror
    return ran

def proc_view(needle: str):
    # What /proc shows a call: pids, those whose command line holds `needle`, and the
    # TCP ports listening in any process's network namespace.
    pids, found, ports = [], [], set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pids.append(int(name))
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                if needle.encode() in fh.read():
                    found.append(int(name))
            with open(f"/proc/{name}/net/tcp") as fh:
                for line in fh.readlines()[1:]:
                    local, state = line.split()[1], line.split()[3]
                    if state == "0A":  # LISTEN
                        ports.add(int(local.rsplit(":", 1)[1], 16))
        except OSError:
            pass
    with open("/proc/1/cmdline", "rb") as fh:
        one = fh.read().split(b"\\0")
    return {"pids": sorted(pids), "found": found, "ports": sorted(ports),
            "one": [part.decode(errors="replace") for part in one[:4]]}

def daemon_then_exit():
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.write(w, b"up")
            time.sleep(300)
        os._exit(0)
    os.read(r, 2)
    os._exit(0)

def sysv_ipc():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    def made(result):  # the call's own errno, read before the next call sets another
        return result if result >= 0 else -ctypes.get_errno()
    return {
        "shm": made(libc.shmget(0, 1 << 20, 0o1600)),  # IPC_PRIVATE, IPC_CREAT | 0600
        "msg": made(libc.msgget(0, 0o1600)),
        "sem": made(libc.semget(0, 1, 0o1600)),
        # POSIX message queues live in the IPC namespace too (mq_open: O_CREAT | O_RDWR).
        "mq": made(libc.mq_open(f"/gw-mq-{os.getpid()}".encode(), 0o102, 0o600, None)),
        "pid": os.getpid(),
    }

def flood(seconds: float):
    chunk = b"x" * (1 << 16)
    written, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        written += os.write(1, chunk)
    return written

def abstract_own():
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(f"\\0gw-own-{os.getpid()}")
    server.listen()
    if os.fork() == 0:  # a process of the call's own connects to it
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(f"\\0gw-own-{os.getppid()}")
        os._exit(0)
    server.accept()
    return "connected"

def answer_then_linger():
    from gateway.sandbox.protocol import CallResult, frame
    os.write(3, frame(CallResult(ok=True, output=str(os.getpid()))))
    time.sleep(300)
"""


@pytest.fixture
def action_root() -> Iterator[Path]:
    """A world-readable directory holding the test actions (children may run as another uid)."""
    root = Path(tempfile.mkdtemp(prefix="gw-sandbox-test-"))
    root.chmod(0o755)
    (root / "sbx_actions.py").write_text(textwrap.dedent(ACTIONS))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def make_action(name: str, function: str | None = None, **kw: Any) -> Action:
    """A python action calling ``sbx_actions.<function or name>``."""
    return Action(
        name=name,
        description=f"test action {name}",
        parameters=kw.pop("parameters", None),
        kind_key="python",
        config=PythonConfig(function=f"sbx_actions:{function or name}"),
        **kw,
    )


ACTION_LIST = [
    make_action("ok", parameters={"type": "object", "properties": {"name": {"type": "string"}}}),
    make_action("async_ok"),
    make_action("spin", timeout=1),
    make_action("spin_cpu", "spin", timeout=10, sandbox=SandboxLimits(cpu_seconds=1)),
    make_action("nap", timeout=0.5),
    make_action("nap_long", "nap", timeout=5),
    make_action("bomb", sandbox=SandboxLimits(memory_mb=64)),
    make_action("grow", sandbox=SandboxLimits(memory_mb=64), timeout=20),
    make_action("crash"),
    make_action("boom"),
    make_action("typed"),
    make_action("typed_odd"),
    make_action("big", sandbox=SandboxLimits(max_output_kb=64)),
    make_action("controls", sandbox=SandboxLimits(max_output_kb=64)),
    make_action("shout", sandbox=SandboxLimits(max_output_kb=64)),
    make_action("forge", timeout=10),
    make_action("orphan"),
    make_action("orphan_then_hang", timeout=1),
    make_action("kill_parent"),
    make_action("connect_off", "connect", sandbox=SandboxLimits(network=False)),
    make_action("connect_on", "connect", sandbox=SandboxLimits(network=True)),
    make_action("whoami"),
    make_action("fill_scratch", sandbox=SandboxLimits(max_file_size_mb=2), timeout=20),
    make_action("proc_view", sandbox=SandboxLimits(network=False)),
    make_action("run_own_program"),
    make_action("signal", "signal_"),
    make_action("scan"),
    make_action("environ"),
    make_action("environ_secret", "environ", secrets=["SANDBOX_TEST_TOKEN"]),
    make_action(
        "secret_at_cut",
        secrets=["SANDBOX_TEST_TOKEN"],
        parameters={
            "type": "object",
            "properties": {"where": {"type": "string"}, "pad": {"type": "integer"}},
        },
        sandbox=SandboxLimits(max_output_kb=1),
    ),
    make_action("write_file", sandbox=SandboxLimits(max_file_size_mb=1)),
    make_action("fork_many", sandbox=SandboxLimits(max_processes=8), timeout=20),
    make_action("close_result"),
    make_action("undecodable_name"),
    make_action("undecodable_error"),
    make_action("unix_off", "connect_unix", sandbox=SandboxLimits(network=False)),
    make_action("unix_on", "connect_unix", sandbox=SandboxLimits(network=True)),
    make_action("gave_up_on_a_thread", timeout=3),
    make_action("left_a_task", timeout=3),
    make_action("replace_result"),
    make_action(
        "forge_frame",
        parameters={"type": "object", "properties": {"size": {"type": "integer"}}},
        sandbox=SandboxLimits(max_output_kb=1),
    ),
    make_action(
        "forge_error",
        parameters={"type": "object", "properties": {"size": {"type": "integer"}}},
        sandbox=SandboxLimits(max_output_kb=1),
    ),
    make_action("forge_deep"),
    make_action("leave_no_fds", sandbox=SandboxLimits(max_open_files=64)),
    make_action(
        "exit_with",
        parameters={"type": "object", "properties": {"code": {"type": "integer"}}},
    ),
    make_action(
        "hostile",
        parameters={"type": "object", "properties": {"what": {"type": "string"}}},
    ),
    make_action("daemon_then_exit"),
    make_action(
        "many_files",
        parameters={"type": "object", "properties": {"n": {"type": "integer"}}},
        timeout=60,
    ),
    make_action("sysv_ipc"),
    make_action("answer_then_linger", timeout=20),
    make_action("flood", sandbox=SandboxLimits(max_output_kb=64)),
    make_action("abstract_own", sandbox=SandboxLimits(network=True)),
]


@pytest.fixture
def catalog(action_root: Path) -> Catalog:
    """A catalog of the test actions rooted in ``action_root``."""
    return Catalog(
        version="test",
        root=action_root,
        gateway_root=action_root,
        loaded_at=0.0,
        actions={a.name: a for a in ACTION_LIST},
    )


def _landlock_abi() -> int:
    try:
        return _linux.landlock_abi()
    except OSError:
        return 0


CALL_USERS = ["auto"] if os.geteuid() != 0 else ["own", "root"] if _landlock_abi() >= 6 else ["own"]
"""As root, every test runs with calls under their own uid, and under uid 0 without
capabilities (the fallback when the deployment is closed to other users)."""


@pytest.fixture(params=CALL_USERS)
async def supervisor(catalog: Catalog, request: pytest.FixtureRequest) -> AsyncIterator[Supervisor]:
    """A started supervisor; closed after the test."""
    # A tmpfs of 1 GB (65,536 files): the large-directory tests make 50,000.
    settings = Settings(sandbox_concurrency=4, sandbox_user=request.param, sandbox_tmp_mb=1024)
    sup = Supervisor(settings)
    await sup.start(catalog)
    try:
        yield sup
    finally:
        await sup.aclose()


@pytest.fixture
def runner(supervisor: Supervisor) -> SandboxRunner:
    """The runner over the test supervisor, with a controlled environment for secrets."""
    return SandboxRunner(supervisor, environ={"SANDBOX_TEST_TOKEN": "tok-123456789"})


def _descendants(pids: list[int]) -> list[int]:
    """Every live (non-zombie) process below ``pids``."""
    parents: dict[int, int] = {}
    states: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        name = entry.name
        if not name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if stat[stat.find(b"(") + 1 : stat.rfind(b")")] == SPARE_NAME.encode():
            continue  # the zygote's pre-forked child waiting for the next call
        parents[int(name)] = int(fields[1])
        states[int(name)] = fields[0].decode()
    found: list[int] = []
    frontier = set(pids)
    while frontier:
        children = {p for p, pp in parents.items() if pp in frontier}
        found += [p for p in children if states[p] != "Z"]
        frontier = children
    return found


async def assert_nothing_left(supervisor: Supervisor) -> None:
    """No process is left below any zygote (the exiting child gets a moment to go)."""
    deadline = time.monotonic() + 3
    while True:
        left = _descendants(supervisor.zygote_pids())
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"processes left behind: {left}")
        await asyncio.sleep(0.02)


async def call_then_ok(
    runner: SandboxRunner,
    catalog: Catalog,
    supervisor: Supervisor,
    name: str,
    args: dict[str, Any] | None = None,
) -> Any:
    """Call ``name``, then check a normal call still works and nothing leaked."""
    result = await runner.run(catalog, name, args or {})
    again = await runner.run(catalog, "ok", {"name": "again"})
    assert again.status == "succeeded", again
    assert again.output == "hello again"
    await assert_nothing_left(supervisor)
    return result


def error_of(output: str) -> dict[str, Any]:
    """The ``error`` object of a failed call's output."""
    return json.loads(output)["error"]


async def test_plain_call_returns_text(runner: SandboxRunner, catalog: Catalog) -> None:
    """A sync action's str return value goes back as is."""
    result = await runner.run(catalog, "ok", '{"name": "Ada"}')
    assert result.status == "succeeded"
    assert result.output == "hello Ada"
    assert result.duration_ms > 0


async def test_async_action_returns_json(runner: SandboxRunner, catalog: Catalog) -> None:
    """An async action is awaited and a non-str value is sent as JSON."""
    result = await runner.run(catalog, "async_ok", {"n": 21})
    assert json.loads(result.output) == {"double": 42}


async def test_infinite_loop_times_out(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A busy loop is killed at the wall-clock timeout and reported as timed_out."""
    started = time.monotonic()
    result = await call_then_ok(runner, catalog, supervisor, "spin")
    assert result.status == "timed_out"
    assert result.error_type == "timeout"
    assert time.monotonic() - started < 5


async def test_cpu_limit_kills_busy_loop(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """The CPU-seconds rlimit stops a busy loop before the wall-clock timeout."""
    result = await call_then_ok(runner, catalog, supervisor, "spin_cpu")
    assert result.status == "failed"
    assert result.error_type in ("cpu_limit", "killed")


async def test_sleep_past_timeout(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """Sleeping past the timeout is killed and reported as timed_out with a message."""
    result = await call_then_ok(runner, catalog, supervisor, "nap")
    assert result.status == "timed_out"
    assert "0.5s" in error_of(result.output)["message"]


@pytest.mark.parametrize("name", ["bomb", "grow"])
async def test_memory_bomb(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor, name: str
) -> None:
    """Allocating past memory_mb fails the call as a memory error, not the server."""
    result = await call_then_ok(runner, catalog, supervisor, name)
    assert result.status == "failed"
    assert result.error_type in ("memory", "killed")


async def test_abort_is_a_crash(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """os.abort() in an action comes back as a crashed tool error."""
    result = await call_then_ok(runner, catalog, supervisor, "crash")
    assert result.status == "failed"
    assert result.error_type == "crashed"
    assert "abort" in error_of(result.output)["message"]


async def test_exception_is_structured(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """An exception becomes {"error": {"type", "message"}} without a traceback."""
    result = await call_then_ok(runner, catalog, supervisor, "boom")
    assert result.status == "failed"
    assert result.error_type == "exception"
    error = error_of(result.output)
    assert error["message"] == "ValueError: the widget is broken"
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "detail",
    [
        {"outcome": "timed_out"},
        {"started": 0, "error_type": "x"},
        {"type": "succeeded", "message": "all good"},
    ],
)
async def test_a_typed_error_cannot_rewrite_its_own_outcome(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor, detail: dict[str, Any]
) -> None:
    """An exception's ``detail`` adds fields; it cannot change the status, type or message."""
    result = await call_then_ok(
        runner, catalog, supervisor, "typed", {"detail": {**detail, "order": 7}}
    )
    assert result.status == "failed", result
    assert result.error_type == "refused"
    error = error_of(result.output)
    assert error["type"] == "refused"
    assert error["message"] == "the order is closed"
    assert error["order"] == 7


async def test_a_typed_error_with_detail_json_cannot_carry_still_reports_it(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A ``detail`` value JSON cannot carry is dropped; the error itself still comes back."""
    result = await call_then_ok(runner, catalog, supervisor, "typed_odd")
    assert result.status == "failed", result
    error = error_of(result.output)
    assert (error["type"], error["message"]) == ("refused", "the order is closed")
    assert "when" not in error
    assert error["order"] == 7 and error["bad\ufffdkey"] == 1  # a lone surrogate replaced


async def test_huge_result_is_truncated(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A 20 MB return value is cut to max_output_kb and marked truncated."""
    result = await call_then_ok(runner, catalog, supervisor, "big")
    assert result.status == "succeeded"
    assert result.truncated
    assert 64 * 1024 <= len(result.output) < 65 * 1024
    assert "truncated" in result.output


async def test_a_result_that_escapes_long_is_truncated_not_refused(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A result of control characters and quotes (up to 6 bytes each in the result's JSON)
    is cut to max_output_kb and marked truncated, like any long result."""
    result = await call_then_ok(runner, catalog, supervisor, "controls")
    assert result.status == "succeeded", result
    assert result.truncated
    assert result.output.startswith('\x01"' * 100)


async def test_huge_stdout_does_not_deadlock(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """Printing 20 MB is drained while the call runs, so the action finishes."""
    result = await call_then_ok(runner, catalog, supervisor, "shout")
    assert result.status == "succeeded"
    assert result.output == "done"


async def test_output_past_the_cap_is_not_read_as_fast_as_it_is_written(
    runner: SandboxRunner, catalog: Catalog
) -> None:
    """The server read a child's stdout as fast as it came, to drop all past
    max_output_kb: an action writing nonstop pushed a gigabyte a second through the
    server's event loop (a fifth of a CPU per such call, taken from every request).
    Past the cap it is now thrown away in the kernel, a megabyte every 20 ms at most."""
    result = await runner.run(catalog, "flood", {"seconds": 1.0})
    assert result.status == "succeeded", result
    assert int(result.output) < 256 * 1024 * 1024  # unbounded: 1-2 GB here


async def test_forged_result_frame_is_refused(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """An action announcing a 50 MB result on the result socket is killed, not buffered."""
    started = time.monotonic()
    result = await call_then_ok(runner, catalog, supervisor, "forge")
    assert result.error_type == "output_too_large"
    assert time.monotonic() - started < 8


async def test_orphan_in_new_session_is_killed(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A process started with start_new_session=True does not outlive its call."""
    result = await call_then_ok(runner, catalog, supervisor, "orphan")
    assert result.status == "succeeded"
    assert not in_sandbox(supervisor, int(result.output))


async def test_orphan_of_timed_out_call_is_killed(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """When a call is killed at its timeout, what it started in a new session dies too."""
    result = await call_then_ok(runner, catalog, supervisor, "orphan_then_hang")
    assert result.status == "timed_out"


async def test_action_killing_its_parent(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """An action that kills its parent fails alone; the next call works."""
    result = await call_then_ok(runner, catalog, supervisor, "kill_parent")
    assert result.status == "failed"


async def test_dead_zygote_is_restarted(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """Killing every zygote from outside is repaired transparently on the next call."""
    for pid in supervisor.zygote_pids():
        os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.1)
    result = await runner.run(catalog, "ok", {"name": "back"})
    assert result.output == "hello back"
    assert supervisor.stats.restarts >= 1


async def test_killing_the_started_process_takes_its_zygote_and_spares(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """With a private view the zygote is a child of the process the supervisor started
    (``_private``), which the supervisor kills when a zygote is stuck or its start is
    cancelled: the zygote, its spares and calls must go with it, not live on unseen."""
    await runner.run(catalog, "ok", {})
    await _spares_lent(supervisor)
    zygotes = [z for z in supervisor._zygotes.values() if z.pid != z.proc.pid]
    if not zygotes:
        pytest.skip("no zygote runs in a pid namespace of its own here")
    running = [z.pid for z in zygotes] + _spares(supervisor)
    assert all(_alive(pid) for pid in running)
    for zygote in zygotes:
        os.kill(zygote.proc.pid, signal.SIGKILL)
    await _until(lambda: not any(_alive(pid) for pid in running), "the zygotes to be gone")
    assert (await runner.run(catalog, "ok", {"name": "back"})).output == "hello back"
    assert supervisor.stats.restarts >= 1


async def test_sigint_does_not_end_a_zygote(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """Python's own SIGINT handler made SIGINT (Ctrl-C in a terminal reaches the whole
    process group; a call of the zygote's uid may send one too) a KeyboardInterrupt that
    ended the zygote with every call on it. Zygotes ignore it; the server ends them."""
    await runner.run(catalog, "ok", {})
    running = asyncio.create_task(runner.run(catalog, "nap_long", {"seconds": 1}))
    await _until(lambda: bool(_running_calls(supervisor)), "the call to run")
    for pid in supervisor.zygote_pids():
        os.kill(pid, signal.SIGINT)
    assert (await running).output == "woke"
    assert (await runner.run(catalog, "ok", {"name": "after"})).output == "hello after"
    assert supervisor.stats.restarts == 0


async def test_a_zygote_killed_by_sigkill_is_reported_so(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """The process the supervisor started (which waits for the zygote, ``_private``)
    exits as the zygote did: after a SIGKILL (the OOM killer's, an operator's) it
    crashed setting SIGKILL's handler, printed a traceback and exited 1."""
    await runner.run(catalog, "ok", {})
    zygotes = [z for z in supervisor._zygotes.values() if z.pid != z.proc.pid]
    if not zygotes:
        pytest.skip("no zygote is a child of the process started here")
    for zygote in zygotes:
        os.kill(zygote.pid, signal.SIGKILL)
    for zygote in zygotes:
        code = await asyncio.to_thread(zygote.proc.wait, 10)
        assert code == -signal.SIGKILL, code
    assert (await runner.run(catalog, "ok", {"name": "back"})).output == "hello back"


async def test_a_call_racing_the_zygotes_death_is_retried(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A call sent after its zygote died, before the server noticed, runs on a fresh one.

    The test waits (without yielding to the event loop, so the server has not read
    the zygote's EOF yet) until the spares have died too: a call a spare took
    before dying may have run, and is rightly reported as crashed, not retried.
    """
    for round_ in range(3):
        deadline = time.monotonic() + 5
        while not (spares := _spares(supervisor)) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for pid in supervisor.zygote_pids():
            os.kill(pid, signal.SIGKILL)
        while any(_alive(pid) for pid in spares) and time.monotonic() < deadline:
            time.sleep(0.005)  # on purpose: the loop must not run yet
        result = await runner.run(catalog, "ok", {"name": f"race {round_}"})
        assert result.output == f"hello race {round_}", result
    await assert_nothing_left(supervisor)


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP listener on 127.0.0.1 (host network namespace); yields its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


async def test_dead_spares_are_skipped(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """Spares killed while they wait for a call are replaced; calls never land on them."""
    for _ in range(3):
        deadline = time.monotonic() + 5
        while not (spares := _spares(supervisor)) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert spares, "no spare is waiting"
        for pid in spares:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        result = await runner.run(catalog, "ok", {"name": "spare"})
        assert result.output == "hello spare", result
    assert supervisor.stats.restarts == 0
    await assert_nothing_left(supervisor)


async def test_a_calm_call_refills_after_it_ends_a_busy_one_at_once(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A call alone keeps one idle spare while it runs (its refill waits for its end, so
    it does not compete with the call for a CPU); a second call at once refills now."""
    await runner.run(catalog, "ok", {"name": "first"})
    await _until(lambda: not _running_calls(supervisor), "the zygote to reap that call")
    await asyncio.sleep(0.05)  # well past _CALM_GAP since it ended
    calm = asyncio.create_task(runner.run(catalog, "nap_long", {"seconds": 0.5}))
    await _until(lambda: bool(_running_calls(supervisor)), "the call to start")
    call = _running_calls(supervisor)[0]
    zygote = _parent(Path(f"/proc/{call}"))
    counts = []
    while True:
        spares = len(_children_named(SPARE_NAME, zygote))
        if not _alive(call):  # counted after the call ended (and its refill came): not kept
            break
        counts.append(spares)
        await asyncio.sleep(0.01)
    assert (await calm).output == "woke"
    assert len(counts) >= 3 and max(counts) == 1, counts
    await _until(lambda: len(_children_named(SPARE_NAME, zygote)) == 2, "the refill after it")

    # Two calls at once: the second is not calm, so both spares are back while they run.
    both = [asyncio.create_task(runner.run(catalog, "nap_long", {"seconds": 4})) for _ in range(2)]
    await _until(lambda: len(_running_calls(supervisor)) == 2, "two calls running")
    await _until(lambda: len(_children_named(SPARE_NAME, zygote)) == 2, "the refill")
    assert len(_running_calls(supervisor)) == 2, "the refill came only after the calls"
    for task in both:  # done checking: no need to wait for the naps
        task.cancel()
    await asyncio.gather(*both, return_exceptions=True)


async def _until(check: Callable[[], bool], what: str = "the condition") -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def _running_calls(supervisor: Supervisor) -> list[int]:
    return _children_named(CALL_NAME, *supervisor.zygote_pids())


def _children_named(name: str, *parents: int) -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _comm(entry) == name and _parent(entry) in parents
    ]


def _spares(supervisor: Supervisor) -> list[int]:
    return _children_named(SPARE_NAME, *supervisor.zygote_pids())


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def _comm(entry: Path) -> str:
    try:
        return (entry / "comm").read_text().strip()
    except OSError:
        return ""


def _parent(entry: Path) -> int:
    try:
        stat = (entry / "stat").read_bytes()
    except OSError:
        return -1
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


async def test_network_false_cannot_connect(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor, listener: int
) -> None:
    """network: false cannot reach even 127.0.0.1, while network: true can."""
    on = await runner.run(catalog, "connect_on", {"port": listener})
    assert on.output == "connected"
    off = await call_then_ok(runner, catalog, supervisor, "connect_off", {"port": listener})
    assert off.status == "succeeded"
    assert off.output.startswith("refused")


async def test_child_is_confined(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A child has a fresh private cwd, only fds 0-3 (plus listdir's), and, as root, its own uid."""
    first = json.loads((await runner.run(catalog, "whoami", {})).output)
    second = json.loads((await runner.run(catalog, "whoami", {})).output)
    assert first["cwd"] != second["cwd"]
    # Emptied before the answer; the (empty) directory itself goes when the child is reaped.
    cwd = seen(supervisor, first["cwd"])
    assert cwd.parent.is_dir()  # where it was, as its zygote sees it
    deadline = time.monotonic() + 3
    while cwd.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert not cwd.exists()
    assert set(first["fds"]) <= {0, 1, 2, 3, 4}
    mode = supervisor.call_user[0]
    if mode == "own":
        assert first["uid"] >= SANDBOX_UID_BASE
        assert first["uid"] != os.getuid()
        # A uid is reused as late as possible: the next call gets the least recently used.
        assert second["uid"] != first["uid"]
    elif mode == "root":
        assert first["uid"] == 0
        # No capability at all, and none to regain: bounding and ambient sets are empty.
        assert {int(v, 16) for v in first["caps"].values()} == {0}, first["caps"]


async def test_calls_cannot_signal_or_read_other_processes(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """No call may signal the server or its zygote, nor read a root process's environment.

    With a private view (``_private``) processes outside the sandbox have no pid in
    it, and the zygote is its pid 1. Else, as root with calls under uid 0 (no
    capabilities) this rests on Landlock's scopes (signals, ptrace); with calls
    under their own uid on ownership too.
    """
    token = f"needle-{os.getpid()}-{time.monotonic_ns()}"
    other = subprocess.Popen(["sleep", "30"], env={"PLANTED": token})  # dumpable, our uid
    private = supervisor.capabilities is not None and supervisor.capabilities.private_proc
    try:
        targets = [os.getpid(), other.pid, *supervisor.zygote_pids()]
        for pid in [*targets, *([1] if private else [])]:
            result = await runner.run(catalog, "signal", {"pid": pid})
            if private and pid != 1:
                assert result.output == "No such process", (pid, result)
            elif supervisor.call_user[0] != "same" or _landlock_abi() >= 6:
                assert result.output == "Operation not permitted", (pid, result)
        found = await runner.run(catalog, "scan", {"needle": token})
        assert json.loads(found.output) == [], found
    finally:
        other.kill()
        other.wait()


async def test_a_call_sees_only_the_sandboxs_processes(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor, listener: int
) -> None:
    """/proc showed a call every process of the host: command lines (a password given
    as an argument), and from a ``network: false`` call the host's connections through
    any process's /proc/<pid>/net. With a private view the call sees its zygote (pid 1),
    the zygote's spares and calls, and nothing of the host."""
    if supervisor.capabilities is None or not supervisor.capabilities.private_proc:
        reason = supervisor.capabilities and supervisor.capabilities.private_proc_detail
        pytest.skip(f"no private /proc here: {reason}")
    token = f"needle-{os.getpid()}-{time.monotonic_ns()}"
    other = subprocess.Popen(["sh", "-c", f"sleep 30; : {token}"])  # world-readable cmdline
    try:
        await _until(lambda: token.encode() in Path(f"/proc/{other.pid}/cmdline").read_bytes())
        assert listener in _listening_ports()  # the host sees it
        view = json.loads((await runner.run(catalog, "proc_view", {"needle": token})).output)
    finally:
        other.kill()
        other.wait()
    assert view["found"] == [], view
    assert listener not in view["ports"], view
    # pid 1 is its zygote (python -I -B -c BOOT); the rest are its spares and this call.
    assert view["one"][1:4] == ["-I", "-B", "-c"], view
    assert 1 in view["pids"] and len(view["pids"]) <= 8, view


def _listening_ports() -> set[int]:
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A":
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def test_a_call_fills_its_zygotes_tmpfs_not_the_disk(catalog: Catalog) -> None:
    """A call's directory lived on TMPDIR's disk: one call could fill the disk, or its
    inodes, for the whole host (max_file_size_mb bounds a file, not their number). With
    a private view the calls' directories are on a tmpfs of GATEWAY_SANDBOX_TMP_MB per
    zygote (256 inodes per MB): the call gets ENOSPC, its files go with it, and the
    next call has the room again."""
    sup = Supervisor(Settings(sandbox_concurrency=2, sandbox_user=CALL_USERS[0], sandbox_tmp_mb=16))
    await sup.start(catalog)
    try:
        if sup.capabilities is None or not sup.capabilities.private_tmp:
            reason = sup.capabilities and sup.capabilities.private_tmp_detail
            pytest.skip(f"no private tmpfs here: {reason}")
        assert "tmpfs of 16 MB (1024 files)" in sup.capabilities.private_tmp_detail
        runner = SandboxRunner(sup)
        zygote = next(z for (net, _), z in sup._zygotes.items() if not net)
        assert zygote.ready is not None
        scratch = seen(sup, zygote.ready.tmp)

        async def emptied() -> None:  # a large tree goes in a remover, after the answer
            def empty() -> bool:
                st = os.statvfs(scratch)
                return st.f_ffree > 1000 and st.f_bfree * st.f_frsize > 15 << 20

            await _until(empty, "the call's files to be removed")

        inodes = await runner.run(catalog, "fill_scratch", {"files": 5000, "mb": 0})
        made = json.loads(inodes.output)
        assert made["error"] == "No space left on device", made
        assert 1000 < made["made"] < 1024, made  # the root and the call's directory count
        await emptied()
        space = await runner.run(catalog, "fill_scratch", {"files": 0, "mb": 40})
        written = json.loads(space.output)
        assert written["error"] == "No space left on device", written
        assert 10 <= written["written"] <= 16, written  # whole 1 MB files, then ENOSPC
        await emptied()
        fits = json.loads(
            (await runner.run(catalog, "fill_scratch", {"files": 100, "mb": 12})).output
        )
        assert fits == {"made": 100, "written": 12, "error": None, "size_mb": 16, "files": 1024}
        # And the host's folder under it holds nothing.
        for zygote in sup._zygotes.values():
            assert zygote.ready is not None and not any(Path(zygote.ready.tmp).iterdir())
    finally:
        await sup.aclose()


async def test_a_call_cannot_run_a_program_it_wrote(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A call's directory is on a noexec tmpfs: a program it wrote or downloaded there (a
    miner, an exploit) does not run, a script or a binary alike, nor a copy in a memory
    file where the kernel lets the zygote forbid that (vm.memfd_noexec, as root); the
    next call works."""
    if supervisor.capabilities is None or not supervisor.capabilities.private_tmp:
        reason = supervisor.capabilities and supervisor.capabilities.private_tmp_detail
        pytest.skip(f"no private tmpfs here: {reason}")
    result = await call_then_ok(runner, catalog, supervisor, "run_own_program")
    ran = json.loads(result.output)
    assert ran.pop("hello.sh") == ran.pop("mytrue") == "Permission denied", ran
    # A copy in a memory file, where the zygote could set vm.memfd_noexec (root).
    assert supervisor.capabilities.private_proc, supervisor.capabilities
    if "cannot execute memory files" in supervisor.capabilities.private_proc_detail:
        assert ran == {"memfd": "Permission denied"}, ran
    else:
        assert "memory files can be executed" in supervisor.capabilities.private_proc_detail


async def test_calls_beside_one_that_filled_the_tmpfs_are_told_why(catalog: Catalog) -> None:
    """While a call holds its zygote's tmpfs full, a new spare cannot make its directory:
    it said "confining the child failed" (logged as an ERROR every 0.1 s, the zygote's
    retry), or a call waited and timed out with "no sandbox process was free". Both now
    name the full scratch space, logged once; when the call ends, calls run again.

    Each call that ends gives its directory's inode back, which the next spare takes: so
    two calls hold the spares made before the tmpfs filled, and the next call finds none.
    """
    settings = Settings(sandbox_concurrency=4, sandbox_user=CALL_USERS[0], sandbox_tmp_mb=16)
    sup = Supervisor(settings)
    await sup.start(catalog)
    try:
        if sup.capabilities is None or not sup.capabilities.private_tmp:
            pytest.skip("no private tmpfs here")
        runner = SandboxRunner(sup)
        zygote = next(z for (net, _), z in sup._zygotes.items() if not net)
        assert zygote.ready is not None
        scratch = seen(sup, zygote.ready.tmp)
        with capture_logs() as logs:
            holder = asyncio.create_task(
                runner.run(catalog, "fill_scratch", {"files": 5000, "mb": 0, "hold": 4})
            )
            # Its files: a directory needs an inode, not room for data.
            await _until(lambda: os.statvfs(scratch).f_ffree == 0, "the tmpfs to be full")
            blockers = [
                asyncio.create_task(runner.run(catalog, "nap_long", {"seconds": 1.5}))
                for _ in range(2)
            ]
            await asyncio.sleep(0.3)  # they took the spares made before it filled, if any
            probe = await runner.run(catalog, "nap", {"seconds": 0})
            results = [probe, *await asyncio.gather(*blockers)]
            messages = [error_of(r.output)["message"] for r in results if r.status != "succeeded"]
            assert probe.status != "succeeded", (probe, results)
            for message in messages:
                assert "scratch space (GATEWAY_SANDBOX_TMP_MB) is full" in message, messages
            held = json.loads((await holder).output)
            assert held["error"] == "No space left on device", held
        assert (await runner.run(catalog, "nap", {"seconds": 0})).output == "woke"
        events = [e["event"] for e in logs]
        assert events.count("sandbox.scratch_full") == 1, events
        assert "sandbox.spare_failed" not in events, events
    finally:
        await sup.aclose()


async def test_environment_has_only_declared_secrets(
    runner: SandboxRunner, catalog: Catalog
) -> None:
    """An action sees a minimal environment plus exactly the secrets it declared."""
    plain = json.loads((await runner.run(catalog, "environ", {})).output)
    assert "SANDBOX_TEST_TOKEN" not in plain
    assert set(plain) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR"}
    # The declared secret reaches the environment, but its value is redacted from the output.
    declared = await runner.run(catalog, "environ_secret", {})
    env = json.loads(declared.output)
    assert env["SANDBOX_TEST_TOKEN"] == "[redacted]"


@pytest.mark.parametrize("secret", ['pä"ss\\wörd-1', "clé\nsur deux lignes", '\u20ac-quote"-tab\t'])
async def test_a_secret_with_non_ascii_and_escaped_characters_is_masked_in_json(
    supervisor: Supervisor, catalog: Catalog, secret: str
) -> None:
    """A result sent as JSON escapes a secret's quote, backslash or line break but keeps
    its non-ASCII text as is: no masked form matched that (JSON with ``\\uXXXX`` escapes,
    repr with other quoting), so a password such as ``pä"ss\\wörd`` reached the model."""
    runner = SandboxRunner(supervisor, environ={"SANDBOX_TEST_TOKEN": secret})
    result = await runner.run(catalog, "environ_secret", {})
    assert json.loads(result.output)["SANDBOX_TEST_TOKEN"] == "[redacted]", result.output


async def test_a_secret_that_is_not_utf8_is_a_configuration_error(
    supervisor: Supervisor, catalog: Catalog
) -> None:
    """A secret whose bytes are not UTF-8 (a Latin-1 password; Python reads it with
    surrogates) failed every call as ``internal_error: UnicodeEncodeError`` with a
    traceback in the log: it is a ``configuration_error`` naming the secret, never its
    value, and the action does not run."""
    value = os.fsdecode(b"pass-w\xf6rd-77")
    runner = SandboxRunner(supervisor, environ={"SANDBOX_TEST_TOKEN": value})
    with capture_logs() as logs:
        result = await runner.run(catalog, "environ_secret", {})
    assert result.error_type == "configuration_error", result
    message = json.loads(result.output)["error"]["message"]
    assert "SANDBOX_TEST_TOKEN" in message and "UTF-8" in message, message
    assert "pass-w" not in result.output
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["executors.secret_invalid"]
    assert "pass-w" not in repr(logs)


async def test_a_secret_cut_by_a_limit_is_masked_whole(
    runner: SandboxRunner, catalog: Catalog
) -> None:
    """A declared secret straddling a cut (the result at max_output_kb, in the child or
    in the server for a frame the action wrote itself, an error's message at 2,000
    characters, a traceback's start) was cut first and masked after, so its first or last
    characters were no longer the whole secret and reached the model and the log."""
    token = "tok-123456789"  # the runner's SANDBOX_TEST_TOKEN
    cases = {"output": 1024 - 6, "forged": 1024 - 6, "message": 2000 - len("ValueError: ") - 6}
    for where, pad in cases.items():
        result = await runner.run(catalog, "secret_at_cut", {"where": where, "pad": pad})
        assert token[:4] not in result.output, (where, result)  # nor any of its prefixes
    with capture_logs() as logs:
        failed = await runner.run(catalog, "secret_at_cut", {"where": "traceback", "pad": 8000})
    assert failed.status == "failed", failed
    traceback = next(e["traceback"] for e in logs if e["event"] == "sandbox.action_error")
    assert token[-4:] not in traceback and token[:4] not in traceback, traceback[:200]
    # What it printed, kept up to max_output_kb for the debug log: cut mid-secret too.
    with capture_logs() as logs:
        printed = await runner.run(catalog, "secret_at_cut", {"where": "stdout", "pad": 1024 - 6})
    assert printed.output == "printed", printed
    output = next(e for e in logs if e["event"] == "sandbox.output")
    assert output["dropped"] > 0 and output["output"].startswith("y"), output
    assert token[:4] not in output["output"], output["output"][-40:]


async def test_a_fork_bomb_is_bounded(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """With a uid of its own a call makes at most ``max_processes`` processes (itself
    included); under uid 0 its zygote's pids cgroup bounds it (all calls at once: 4 slots
    x 32, plus the spares). Then nothing of it is left and the next call works."""
    own = supervisor.call_user[0] == "own"
    if not own and supervisor._cgroups is None:
        pytest.skip(
            f"no process limit for calls as {supervisor.call_user[0]} here: "
            f"{supervisor.process_limit[1]}"
        )
    # The bounds count every process of the uid (or cgroup): a previous call's children
    # that are still being reaped take a few.
    bounds = (4, 7) if own else (4 * 32 - 12, 4 * 32 + 8)
    for attempt in range(2):  # and again: the count is back once the call ended
        result = await call_then_ok(runner, catalog, supervisor, "fork_many", {"n": 200})
        assert result.status == "succeeded", result
        made = json.loads(result.output)
        assert made["errno"] == errno.EAGAIN, (attempt, made)
        assert bounds[0] <= made["made"] <= bounds[1], (attempt, made)


def test_a_zygote_cgroup_made_but_not_yet_entered_is_not_pruned() -> None:
    """Zygotes start together: one's cgroup, made but still empty, must survive the other's
    prune (it was removed, and entering it failed with ENODEV: no bound for that zygote)."""
    cgroups, why = open_sandbox_cgroups()
    if cgroups is None:
        pytest.skip(f"no pids cgroups here: {why}")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (cgroups.path / f"z{sleeper.pid}").mkdir()  # made, not yet entered
        gone = subprocess.Popen(["true"])
        gone.wait()
        (cgroups.path / f"z{gone.pid}").mkdir()  # its zygote is gone
        cgroups.prune()  # as another zygote's enter does
        assert (cgroups.path / f"z{sleeper.pid}").is_dir()
        assert not (cgroups.path / f"z{gone.pid}").exists()
        cgroups.enter(sleeper.pid, 8)  # the kernel takes it: the cgroup is still there
        assert str(sleeper.pid) in (cgroups.path / f"z{sleeper.pid}" / "cgroup.procs").read_text()
    finally:
        sleeper.kill()
        sleeper.wait()
        cgroups.close()
    assert not cgroups.path.exists()


async def test_zygote_cgroups_are_removed_when_the_sandbox_closes(catalog: Catalog) -> None:
    """Each zygote of calls as uid 0 runs in a pids cgroup of its own, and in a memory
    cgroup of its own (bounded once it is ready); none outlives the supervisor."""
    sup = Supervisor(Settings(sandbox_concurrency=2, sandbox_user="root"))
    await sup.start(catalog)
    cgroups = sup._cgroups
    try:
        if cgroups is None:
            pytest.skip(f"no pids cgroups here: {sup.process_limit[1]}")
        # Named after the process the supervisor started (the zygote may be its child).
        pids = [zygote.proc.pid for zygote in sup._zygotes.values()]
        assert sorted(p.name for p in cgroups.path.iterdir() if p.is_dir()) == sorted(
            f"z{pid}" for pid in pids
        )
        for pid in pids:
            tasks = 2 * 32 + _ZYGOTE_TASKS
            assert int((cgroups.path / f"z{pid}" / "pids.max").read_text()) == tasks
            assert str(cgroups.path.name) in Path(f"/proc/{pid}/cgroup").read_text()
        memory = cgroups.paths.get("memory")
        name = "memory.max" if cgroups.versions.get("memory") == 2 else "memory.limit_in_bytes"
        for pid in pids if memory is not None else ():
            limit = (memory / f"z{pid}" / name).read_text()
            assert 64 << 20 < int(limit) < 8 << 30, limit  # not the v1 "unlimited"
            assert str(memory.name) in Path(f"/proc/{pid}/cgroup").read_text()
        result = await SandboxRunner(sup).run(catalog, "ok", {})
        assert result.status == "succeeded"
    finally:
        await sup.aclose()
    assert not any(path.exists() for path in cgroups.paths.values())
    assert sup.process_limit == (False, "closed")
    assert sup.memory_limit == (False, "closed")


async def test_a_refused_memory_cgroup_keeps_the_process_bound(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One kernel refusal of a zygote's memory cgroup (v1 memory cgroup ids run out:
    ENOSPC) switched the pids bound off too, for every later zygote: both controllers
    were entered in one step and one error disabled both. They are entered one at a
    time: the fork-bomb bound stays, and only the memory bound goes (logged)."""
    from gateway.sandbox._cgroup import SandboxCgroups

    enter = SandboxCgroups.enter

    def refuse_memory(self: SandboxCgroups, pid: int, *args: Any, **kwargs: Any) -> Path:
        if kwargs.get("memory"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return enter(self, pid, *args, **kwargs)

    monkeypatch.setattr(SandboxCgroups, "enter", refuse_memory)
    sup = Supervisor(Settings(sandbox_concurrency=2, sandbox_user="root"))
    await sup.start(catalog)
    try:
        if sup._cgroups is None or "memory" not in sup._cgroups.paths:
            pytest.skip(f"no pids and memory cgroups here: {sup.process_limit[1]}")
        assert sup.process_limit[0], sup.process_limit
        assert not sup.memory_limit[0] and "memory cgroup" in sup.memory_limit[1]
        for zygote in sup._zygotes.values():
            tasks = (sup._cgroups.path / f"z{zygote.proc.pid}" / "pids.max").read_text()
            assert int(tasks) == 2 * 32 + _ZYGOTE_TASKS
        result = await SandboxRunner(sup).run(catalog, "ok", {})
        assert result.status == "succeeded"
    finally:
        await sup.aclose()


async def test_file_size_limit(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """Writing past max_file_size_mb fails with an error instead of filling the disk."""
    result = await call_then_ok(runner, catalog, supervisor, "write_file", {"size_mb": 4})
    assert result.status == "failed"
    assert "File too large" in error_of(result.output)["message"]


async def test_cancel_kills_the_call(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """Cancelling the awaiting task kills the running child."""
    action = catalog.actions["nap"]
    slow = Action(name="slow", description="d", timeout=30, kind_key="python", config=action.config)
    task = asyncio.create_task(
        runner.run(
            Catalog(
                version="x",
                root=catalog.root,
                gateway_root=catalog.root,
                loaded_at=0,
                actions={"slow": slow},
            ),
            "slow",
            {},
        )
    )
    await asyncio.sleep(0.3)
    assert _descendants(supervisor.zygote_pids())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_nothing_left(supervisor)


async def test_concurrency_limit_queues(action_root: Path, catalog: Catalog) -> None:
    """With sandbox_concurrency=2, four 0.3 s calls take at least two rounds."""
    sup = Supervisor(Settings(sandbox_concurrency=2))
    await sup.start(catalog)
    try:
        runner = SandboxRunner(sup)
        nap = Action(
            name="nap3",
            description="d",
            timeout=5,
            kind_key="python",
            config=PythonConfig(function="sbx_actions:nap"),
        )
        cat = Catalog(
            version="x",
            root=action_root,
            gateway_root=action_root,
            loaded_at=0,
            actions={"nap3": nap},
        )
        started = time.monotonic()
        results = await asyncio.gather(
            *(runner.run(cat, "nap3", {"seconds": 0.3}) for _ in range(4))
        )
        assert all(r.output == "woke" for r in results)
        assert time.monotonic() - started >= 0.55
    finally:
        await sup.aclose()


async def test_a_call_queued_past_its_timeout_never_runs(action_root: Path) -> None:
    """The timeout covers the wait for a slot: a call still queued at it fails, not run."""
    sup = Supervisor(Settings(sandbox_concurrency=1))
    nap = Action(
        name="nap",
        description="d",
        timeout=10,
        kind_key="python",
        config=PythonConfig(function="sbx_actions:nap"),
    )
    quick = Action(
        name="quick",
        description="d",
        timeout=0.5,
        kind_key="python",
        config=PythonConfig(function="sbx_actions:ok"),
    )
    await sup.start(
        Catalog(
            version="x",
            root=action_root,
            gateway_root=action_root,
            loaded_at=0,
            actions={"nap": nap, "quick": quick},
        )
    )
    try:
        first = asyncio.create_task(
            sup.call(nap, CallContext(action="nap", arguments={"seconds": 2.0}))
        )
        while sup.stats.active == 0:
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(sup.call(quick, CallContext(action="quick", arguments={})))
        cancelled = asyncio.create_task(sup.call(quick, CallContext(action="quick", arguments={})))
        await asyncio.sleep(0.1)
        assert sup.stats.queued == 2
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert sup.stats.queued == 1
        result = await waiting
        assert result.status == "timed_out"
        assert result.error_type == "timeout"
        message = error_of(result.output)["message"]
        assert "no sandbox slot was free within 0.45s of its 0.5s timeout" in message
        assert sup.stats.queued == 0
        # It never ran: the nap is still the only call the zygote has going.
        assert not first.done()
        calls = [
            p for p in _descendants(sup.zygote_pids()) if _comm(Path(f"/proc/{p}")) == "gw-call"
        ]
        assert len(calls) == 1
        assert (await first).output == "woke"
        # The slot the cancelled call waited for was not lost.
        after = await sup.call(quick, CallContext(action="quick", arguments={}))
        assert after.output == "hello world"
    finally:
        await sup.aclose()


async def test_a_queued_call_is_not_started_with_too_little_time_left(
    action_root: Path, catalog: Catalog
) -> None:
    """A slot freed when less than a tenth of the call's timeout is left is not used: the
    call fails as queued, unrun, instead of being started only to be killed."""
    sup = Supervisor(Settings(sandbox_concurrency=1))
    await sup.start(catalog)
    try:
        quick = msgspec.structs.replace(catalog.actions["ok"], timeout=1.0)
        await sup._limiter.acquire()  # the only slot, held by "another call"
        queued = asyncio.create_task(sup.call(quick, CallContext(action="ok", arguments={})))
        await asyncio.sleep(0.95)  # the call gave up at 0.9 s: 0.1 s left is not enough
        sup._limiter.release()
        result = await queued
        assert result.status == "timed_out", result
        assert "within 0.9s of its 1s timeout; the action did not run" in result.output
        assert sup.stats.timeouts == 1
        assert (await sup.call(quick, CallContext(action="ok", arguments={}))).status == (
            "succeeded"
        )
    finally:
        await sup.aclose()


async def test_a_freed_slot_goes_to_the_oldest_queued_call(
    action_root: Path, catalog: Catalog
) -> None:
    """A call that ends and at once makes another does not get the slot it freed ahead of a
    call already queued (that call, overtaken again and again, would time out)."""
    sup = Supervisor(Settings(sandbox_concurrency=1))
    await sup.start(catalog)
    finished: list[str] = []

    async def run(name: str, action: str, arguments: dict[str, Any]) -> None:
        result = await sup.call(
            catalog.actions[action], CallContext(action=action, arguments=arguments)
        )
        assert result.status == "succeeded", result
        finished.append(name)

    async def nap_then_call_again() -> None:
        await run("nap", "nap_long", {"seconds": 0.3})
        await run("newcomer", "ok", {})  # asks for a slot in the same step as it frees one

    try:
        holder = asyncio.create_task(nap_then_call_again())
        await _until(lambda: sup.stats.active == 1, "the nap to hold the slot")
        older = asyncio.create_task(run("queued", "ok", {}))
        await _until(lambda: sup.stats.queued == 1, "the call to queue")
        await asyncio.gather(holder, older)
        assert finished == ["nap", "queued", "newcomer"]
    finally:
        await sup.aclose()


async def test_invalid_arguments_do_not_run(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """Arguments failing the schema are a tool error naming the argument; nothing runs."""
    calls = supervisor.stats.calls
    result = await runner.run(catalog, "ok", {"name": 5})
    assert result.status == "failed"
    assert result.error_type == "invalid_arguments"
    assert error_of(result.output)["argument"] == "name"
    bad_json = await runner.run(catalog, "ok", "{not json")
    assert bad_json.error_type == "invalid_arguments"
    assert supervisor.stats.calls == calls


async def test_code_interpreter(runner: SandboxRunner, catalog: Catalog, listener: int) -> None:
    """code_interpreter returns the program's output, and its errors, with network off."""
    result = await runner.run(catalog, "code_interpreter", {"code": "print(6 * 7)"})
    assert result.output == "42\n"
    failed = await runner.run(catalog, "code_interpreter", {"code": "1/0"})
    assert failed.status == "failed"
    assert "ZeroDivisionError" in error_of(failed.output)["output"]
    probe = (
        "import socket\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {listener}), timeout=2)\n"
        "    print('connected')\nexcept OSError:\n    print('no network')\n"
    )
    net = await runner.run(catalog, "code_interpreter", {"code": probe})
    assert net.output == "no network\n"


async def test_network_isolation_refused_is_a_clear_error(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """When the kernel refused a network namespace, network: false calls fail, never run."""
    import msgspec

    from gateway.sandbox.supervisor import _key

    zygote = supervisor._zygotes[_key(catalog.actions["whoami"])]
    assert zygote.ready is not None
    zygote.ready = msgspec.structs.replace(
        zygote.ready, network_isolated=False, network_error="unshare: Operation not permitted"
    )
    result = await runner.run(catalog, "whoami", {})
    assert result.status == "failed"
    assert result.error_type == "sandbox_error"
    assert "Operation not permitted" in error_of(result.output)["message"]


async def test_seccomp_denies_namespaces_and_ptrace(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """Where seccomp works, an action cannot create namespaces or ptrace, but can spawn."""
    assert supervisor.capabilities is not None
    if not supervisor.capabilities.seccomp:
        pytest.skip(f"seccomp unavailable: {supervisor.capabilities.seccomp_detail}")
    code = (
        "import ctypes, subprocess\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n"
        "print('ptrace', libc.ptrace(0, 0, 0, 0), ctypes.get_errno())\n"
        "print(subprocess.run(['echo', 'spawned'], capture_output=True, text=True).stdout)\n"
    )
    result = await runner.run(catalog, "code_interpreter", {"code": code})
    assert "unshare -1 1" in result.output
    assert "ptrace -1 1" in result.output
    assert "spawned" in result.output


async def test_system_v_ipc_and_posix_message_queues_are_denied(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A System V shared memory segment, message queue or semaphore set, or a POSIX
    message queue, outlives the call that made it: a call could leave memory that no
    limit of its counts (1 MB here, any size), or data for the next call with its uid; as
    uid 0, attach root's own. Their system calls now fail with EPERM, like the rest of
    the deny-list."""
    assert supervisor.capabilities is not None
    if not supervisor.capabilities.seccomp:
        pytest.skip(f"seccomp unavailable: {supervisor.capabilities.seccomp_detail}")
    result = await runner.run(catalog, "sysv_ipc", {})
    made = json.loads(result.output)
    libc = ctypes.CDLL(None, use_errno=True)
    # What a call made without the filter is not left on the machine (0: IPC_RMID).
    remove = {"shm": libc.shmctl, "msg": libc.msgctl, "sem": libc.semctl}
    for kind, ident in made.items():
        if kind in remove and ident >= 0:
            remove[kind](ident, 0, 0)  # semctl(id, semnum 0, IPC_RMID) as the others
    libc.mq_unlink(f"/gw-mq-{made.pop('pid')}".encode())
    denied = -errno.EPERM
    assert made == {"shm": denied, "msg": denied, "sem": denied, "mq": denied}


async def test_a_call_directory_made_unreadable_is_still_removed(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A call that locks folders of its directory (chmod 0, no write bit) cannot leave them
    behind: the zygote, without capabilities under ``root`` and the same uid when not root,
    could not list them, so every such call kept its files on disk until shutdown."""
    code = (
        "import os\n"
        "os.makedirs('locked/deeper/deepest')\n"
        "with open('locked/deeper/deepest/data.bin', 'wb') as fh:\n"
        "    fh.write(b'x' * 1024)\n"
        "os.makedirs('readonly')\n"
        "open('readonly/f', 'w').close()\n"
        "os.chmod('readonly', 0o500)\n"
        "os.chmod('locked/deeper/deepest', 0)\n"
        "os.chmod('locked/deeper', 0)\n"
        "os.chmod('locked', 0)\n"
        "print(os.getcwd())\n"
    )
    result = await runner.run(catalog, "code_interpreter", {"code": code})
    assert result.status == "succeeded", result
    cwd = seen(supervisor, result.output.strip(), network=True)
    assert cwd.parent.is_dir()  # where it was, as its zygote sees it
    await _until(lambda: not cwd.exists(), f"the call directory {cwd} to be removed")


_MANY_FILES = 50_000
"""Files of a call directory far past what the zygote removes itself (512 entries): a
few tenths of a second to remove on a tmpfs, while the test's calls take milliseconds."""


@pytest.fixture
def tmpfs_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Zygotes started meanwhile make their call directories on a tmpfs where there is
    one: creating a file costs 0.2 ms on this machine's busy disk, 5 us there."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield
        return
    base = Path(tempfile.mkdtemp(dir=shm, prefix="gw-sandbox-test-"))
    base.chmod(0o711)  # calls with a uid of their own go through it to their directory
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    try:
        yield
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_a_large_call_directory_does_not_hold_its_zygote(
    tmpfs_tmp: None, runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A call leaving tens of thousands of files blocked its zygote while it removed them
    (no child reaped, no spare forked: a kill then replaced the zygote, every call on it
    crashed); a remover removes them now, and a call the zygote must reap (it crashed) is
    answered while that tree is still there; the tree goes in the end."""
    made = await runner.run(catalog, "many_files", {"n": _MANY_FILES})
    assert made.status == "succeeded", made
    cwd = seen(supervisor, made.output.strip())
    # Its child answered before it exited: once the zygote reaped it, the tree is its.
    await _until(lambda: not _running_calls(supervisor), "the call's child to be reaped")
    crashed = await runner.run(catalog, "crash", {})
    assert crashed.status == "failed", crashed
    assert error_of(crashed.output)["type"] == "crashed"
    assert cwd.exists(), "the zygote removed the tree before it reaped the next call"
    assert _children_named(REMOVER_NAME, *supervisor.zygote_pids())
    deadline = time.monotonic() + 60
    while cwd.exists():
        assert time.monotonic() < deadline, f"{cwd} was not removed"
        await asyncio.sleep(0.05)
    await _until(lambda: not _children_named(REMOVER_NAME, *supervisor.zygote_pids()))
    again = await runner.run(catalog, "ok", {"name": "again"})
    assert again.output == "hello again"
    await assert_nothing_left(supervisor)


async def test_shutdown_removes_what_a_remover_left(tmpfs_tmp: None, catalog: Catalog) -> None:
    """A tree still being removed when the sandbox closes does not stay on disk: the
    zygote kills its remover and removes its whole folder."""
    sup = Supervisor(
        Settings(sandbox_concurrency=2, sandbox_user=CALL_USERS[0], sandbox_tmp_mb=1024)
    )
    await sup.start(catalog)
    try:
        made = await SandboxRunner(sup).run(catalog, "many_files", {"n": _MANY_FILES})
        assert made.status == "succeeded", made
        await _until(lambda: bool(_children_named(REMOVER_NAME, *sup.zygote_pids())))
        removers = _children_named(REMOVER_NAME, *sup.zygote_pids())
        # The tree is in the zygote's folder: on the host's disk, or on a tmpfs of the
        # zygote's own mount namespace (gone with it), over that folder.
        folders = [Path(z.ready.tmp) for z in sup._zygotes.values() if z.ready]
        assert seen(sup, made.output.strip()).is_dir()
    finally:
        await sup.aclose()
    assert not Path(made.output.strip()).exists()
    assert folders and not any(folder.exists() for folder in folders)
    assert not any(_alive(pid) for pid in removers)


@pytest.mark.parametrize("name", ["close_result", "replace_result"])
async def test_an_action_that_closes_the_result_channel_is_told_so(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor, name: str
) -> None:
    """An action that closes fd 3 or dup2s over it loses its result; the error says that,
    not 'the sandbox could not set up the call: confining the child failed' (the action
    ran: it was no setup failure)."""
    result = await call_then_ok(runner, catalog, supervisor, name)
    assert result.status == "failed"
    assert result.error_type == "crashed", result
    message = error_of(result.output)["message"]
    assert "file descriptor 3" in message
    assert "set up" not in message


async def test_a_result_frame_the_action_wrote_itself_is_held_to_the_limits(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """The child cuts a result at max_output_kb, but an action can write a frame of its own
    on fd 3: up to the frame cap (6x the limit and more) went to the model uncut. Now the
    server cuts what it decodes the same way (and an error's message at 2000 characters)."""
    forged = await call_then_ok(runner, catalog, supervisor, "forge_frame", {"size": 5000})
    assert forged.status == "succeeded", forged
    assert forged.truncated
    assert forged.output == "x" * 1024 + "\n[output truncated: 5000 bytes, limit 1 KB]"
    small = await runner.run(catalog, "forge_frame", {"size": 1000})
    assert small.output == "x" * 1000 and not small.truncated
    error = await call_then_ok(runner, catalog, supervisor, "forge_error", {"size": 50000})
    assert error.error_type == "boom", error
    assert error_of(error.output)["message"] == "m" * 2000


async def test_a_result_frame_nested_too_deeply_is_an_invalid_result(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A frame nested past msgspec's depth guard raised RecursionError in the server, which
    surfaced as 'the sandbox could not run the call' (and a sandbox.call_error log line);
    it is an invalid result sent by the action, like any frame that does not decode."""
    result = await call_then_ok(runner, catalog, supervisor, "forge_deep")
    assert result.error_type == "sandbox_error", result
    assert error_of(result.output)["message"] == "the action sent an invalid result"


async def test_an_action_that_used_up_its_files_still_answers(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """An action that left a child running and every file descriptor of its limit open
    lost its result: cleaning up lists /proc, which needs one more descriptor (EMFILE),
    and the child exited 71, read as 'the sandbox could not set up the call'. The child
    now frees descriptors the action no longer needs before cleaning up."""
    result = await call_then_ok(runner, catalog, supervisor, "leave_no_fds")
    assert result.status == "succeeded", result
    assert result.output.startswith("opened ")


@pytest.mark.parametrize("code", [74, 71, 72])
async def test_an_action_exiting_with_a_sandbox_exit_code_is_not_mistaken_for_the_sandbox(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor, code: int
) -> None:
    """An action's own os._exit(74) read as 'the action closed file descriptor 3', and
    os._exit(71) / (72) as 'the sandbox could not set up the call' (sandbox_error): exit
    codes the sandbox uses. Now 74 names both causes, and 71/72 after the child took the
    call are the action's own exit status."""
    result = await call_then_ok(runner, catalog, supervisor, "exit_with", {"code": code})
    assert result.status == "failed"
    assert result.error_type == "crashed", result
    message = error_of(result.output)["message"]
    assert "set up" not in message
    if code == 74:
        assert "file descriptor 3" in message and "os._exit(74)" in message, message
    else:
        assert f"status {code}" in message, message


async def test_a_daemon_left_by_an_action_that_ended_its_own_process_is_killed(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """An action that started a daemon in a session of its own (fork, setsid, fork) and
    then ended its process with os._exit(0) skipped the child's cleanup, and the zygote
    took status 0 for a clean exit: the daemon lived on for good, as the call's uid.
    The zygote now sweeps for strays shortly after such an exit."""
    result = await call_then_ok(runner, catalog, supervisor, "daemon_then_exit")
    assert result.error_type == "crashed", result


async def test_an_action_that_answers_itself_and_lingers_is_killed(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """An action may write its own result frame on fd 3 and keep running: the server took
    the answer, freed the slot and never looked back, so the process outlived its
    timeout (300 s here, or a CPU hog), uncounted by the concurrency limit. A child
    still there a moment after its answer is now killed."""
    with capture_logs() as logs:
        result = await runner.run(catalog, "answer_then_linger", {})
        assert result.status == "succeeded", result
        # Killed ``_ANSWERED_GRACE`` (1 s) after its answer: given time on a loaded machine
        # (assert_nothing_left's 3 s failed once under -n 2), far less than its 300 s sleep.
        deadline = time.monotonic() + 15
        while in_sandbox(supervisor, int(result.output)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not in_sandbox(supervisor, int(result.output))
        await call_then_ok(runner, catalog, supervisor, "ok", {"name": "x"})
    lingered = [e for e in logs if e["event"] == "sandbox.kept_running_after_result"]
    assert [e["action"] for e in lingered] == ["answer_then_linger"], logs


async def test_a_zygote_late_to_report_a_clean_exit_is_not_a_lingering_child(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A child that answered and exited at once, whose zygote was busy (stopped here; in
    life removing a large call directory) and reported the exit after the 1 s grace, was
    logged as kept_running_after_result, a false alarm: the warning now needs the kill
    to have found it running (exit by SIGKILL)."""
    await runner.run(catalog, "ok", {})  # the zygotes are up
    # Stopped, a zygote forks nothing: wait until each has lent both its spares (a calm
    # call's replacement comes after it ended), or the next call finds none (failed once).
    deadline = time.monotonic() + 10
    while any(len(z.spares) < 2 for z in supervisor._zygotes.values()):
        assert time.monotonic() < deadline, "the zygotes did not lend their spares"
        await asyncio.sleep(0.01)
    zygotes = supervisor.zygote_pids()
    for pid in zygotes:
        os.kill(pid, signal.SIGSTOP)
    try:
        with capture_logs() as logs:
            result = await runner.run(catalog, "ok", {"name": "late"})  # a spare, no zygote
            await asyncio.sleep(1.5)  # past the grace: the watch sends Kill, unread yet
            for pid in zygotes:
                os.kill(pid, signal.SIGCONT)
            await assert_nothing_left(supervisor)
            await asyncio.sleep(0.2)  # the Exited report reaches the watch
    finally:
        for pid in zygotes:
            os.kill(pid, signal.SIGCONT)
    assert result.output == "hello late"
    assert not [e for e in logs if e["event"] == "sandbox.kept_running_after_result"], logs


@pytest.mark.parametrize(
    ("what", "status", "expected"),
    [
        ("message", "failed", "the action raised Unreadable, whose message could not be read"),
        ("type", "failed", "the action raised BadType, whose message could not be read"),
        ("traceback", "failed", "the action raised Nameless, whose message could not be read"),
        ("value", "succeeded", "a plain answer"),
    ],
)
async def test_hostile_exceptions_and_values_are_reported_as_the_actions(
    runner: SandboxRunner,
    catalog: Catalog,
    supervisor: Supervisor,
    what: str,
    status: str,
    expected: str,
) -> None:
    """An exception whose __str__ or error_type raises, or a str subclass whose methods
    raise, escaped the child's result handling: the spare exited 71 and the call read as
    'the sandbox could not set up the call' (sandbox_error). Now the exception is reported
    by its type and the value is sent as plain text."""
    result = await call_then_ok(runner, catalog, supervisor, "hostile", {"what": what})
    assert result.status == status, result
    if status == "succeeded":
        assert result.output == expected
    else:
        assert result.error_type == "exception", result
        assert error_of(result.output)["message"] == expected


async def test_code_interpreter_printing_past_the_file_size_limit_says_so(
    runner: SandboxRunner, catalog: Catalog
) -> None:
    """The program's output is captured in a memory file, under the call's file size limit
    (16 MB): printing past it stopped the program with a bare 'OSError: File too large',
    and the traceback written into the full capture failed too, so none of the output
    and no hint came back. Now the error says the output passed the limit, with the
    output and the traceback."""
    code = "import sys\nprint('start')\nfor i in range(200000):\n    print('y' * 100)\n"
    result = await runner.run(catalog, "code_interpreter", {"code": code})
    assert result.status == "failed"
    error = error_of(result.output)
    assert "output passed the 16 MB file size limit" in error["message"], error
    assert "yyyy" in error["output"]
    assert "Traceback" in error["output"]


@pytest.mark.parametrize(
    ("name", "output"), [("gave_up_on_a_thread", "gave up"), ("left_a_task", "returned")]
)
async def test_an_async_action_that_returned_is_not_held_by_what_it_left_running(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor, name: str, output: str
) -> None:
    """An async action that returned while a ``to_thread`` thread or a task ignoring
    cancellation still ran: ``asyncio.run`` waited for them at its shutdown, so the call
    timed out and its value was lost. Now its value comes back at once."""
    started = time.monotonic()
    result = await call_then_ok(runner, catalog, supervisor, name)
    assert result.status == "succeeded", result
    assert result.output == output
    assert time.monotonic() - started < 2.5


@pytest.fixture
def unix_listener() -> Iterator[str]:
    """A Unix socket anyone may connect to (as a local database's or Docker's may be)."""
    folder = Path(tempfile.mkdtemp(prefix="gw-unix-"))
    folder.chmod(0o755)
    path = str(folder / "service.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    Path(path).chmod(0o777)
    server.listen(8)
    try:
        yield path
    finally:
        server.close()
        shutil.rmtree(folder, ignore_errors=True)


async def test_network_false_cannot_reach_unix_sockets(
    runner: SandboxRunner, catalog: Catalog, unix_listener: str
) -> None:
    """A Unix socket file is no part of the network namespace: network: false calls (and
    every code_interpreter program) reached the host's local services through theirs
    (PostgreSQL's /run/postgresql socket, MySQL's, Docker's). Now they cannot create a
    Unix socket at all; network: true calls still can."""
    off = await runner.run(catalog, "unix_off", {"path": unix_listener})
    assert off.output.startswith("refused"), off
    on = await runner.run(catalog, "unix_on", {"path": unix_listener})
    assert on.output == "connected", on
    code = (
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({unix_listener!r})\n"
        "print('connected')\n"
    )
    model = await runner.run(catalog, "code_interpreter", {"code": code})
    assert model.status == "failed", model
    assert "connected" not in error_of(model.output)["output"]
    # What Python itself needs of AF_UNIX (socket pairs: asyncio, subprocess) still works.
    pair = "import socket\na, b = socket.socketpair()\na.sendall(b'ok')\nprint(b.recv(2))\n"
    assert (await runner.run(catalog, "code_interpreter", {"code": pair})).output == "b'ok'\n"


@pytest.fixture
def abstract_listener() -> Iterator[str]:
    """A Unix socket in the abstract namespace (no file: no permission check at all), as
    a container runtime's shim or a desktop session may listen on in the host's."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"\0gw-test-{os.urandom(6).hex()}"
    server.bind(name)
    server.listen(8)
    with server:
        yield name


async def test_network_true_cannot_reach_the_hosts_abstract_unix_sockets(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor, abstract_listener: str
) -> None:
    """A network: true call runs in the host's network namespace, whose abstract Unix
    sockets have no owner or mode: any call, whatever its uid, connected to the server's
    or the host's (containerd-shim's, CVE-2020-15257). Where Landlock scopes them (ABI 6),
    a call now reaches only those its own processes bound."""
    if _landlock_abi() < 6:
        pytest.skip("Landlock ABI 6 scopes abstract Unix sockets")
    on = await runner.run(catalog, "unix_on", {"path": abstract_listener})
    assert on.output.startswith("refused"), on
    own = await runner.run(catalog, "abstract_own", {})
    assert own.output == "connected", own


@pytest.mark.skipif(
    not Path("/etc/shadow").exists() or Path("/etc/shadow").stat().st_mode & 0o004 != 0,
    reason="needs a private /etc/shadow",
)
async def test_files_in_etc_other_users_cannot_read_are_not_readable(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """/etc is on the allow-list (DNS, TLS, passwd), but its private files are not: under
    calls_run_as root (uid 0 without capabilities) a call read /etc/shadow, and would
    read /etc/ssh's host keys or /etc/ssl/private, by ownership. The world-readable
    files of /etc stay readable."""
    if not supervisor.capabilities or not supervisor.capabilities.landlock:
        pytest.skip("needs Landlock")
    code = (
        "for path in ('/etc/shadow', '/etc/passwd'):\n"
        "    try:\n"
        "        open(path).read()\n"
        "        print(path, 'read')\n"
        "    except OSError as exc:\n"
        "        print(path, 'denied', exc.errno)\n"
    )
    result = await runner.run(catalog, "code_interpreter", {"code": code})
    assert "/etc/shadow denied 13" in result.output, result.output
    assert "/etc/passwd read" in result.output


async def test_a_result_with_a_lone_surrogate_comes_back(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A str holding a lone surrogate (a file name from os.listdir that is not UTF-8) made
    the result frame fail to encode: the call read 'the sandbox could not set up the call:
    confining the child failed'. Now the value (or the error) comes back, with U+FFFD."""
    name = await call_then_ok(runner, catalog, supervisor, "undecodable_name")
    assert name.status == "succeeded", name
    assert name.output == "report-\ufffd.csv"
    error = await runner.run(catalog, "undecodable_error", {})
    assert error.error_type == "exception", error
    assert error_of(error.output)["message"] == "ValueError: no file \ufffd"


def _our_zygotes() -> list[int]:
    """Live zygote processes this test process started (any supervisor's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _parent(entry) != os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if b"gateway.sandbox.zygote" in cmdline and state != b"Z":
            found.append(int(entry.name))
    return found


async def test_a_call_cancelled_while_its_zygote_restarts_leaves_no_zygote(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """The zygote a call was starting (its old one had died) when the call was cancelled
    lived on, with its spares, for as long as the server: nobody knew it. Now it is
    killed with the cancelled start, and the next call starts a fresh one."""
    for pid in supervisor.zygote_pids():
        os.kill(pid, signal.SIGKILL)
    await _until(lambda: not _our_zygotes(), "the killed zygotes to be gone")
    task = asyncio.create_task(runner.run(catalog, "ok", {}))
    await _until(lambda: bool(_our_zygotes()), "a zygote to be starting")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until(lambda: not _our_zygotes(), "the cancelled start's zygote to be gone")
    again = await runner.run(catalog, "ok", {"name": "again"})
    assert again.output == "hello again"


@contextlib.contextmanager
def _control_sockets_full(supervisor: Supervisor) -> Iterator[None]:
    """Stop every zygote and fill its control socket: the supervisor's next send waits.

    The filler is ``Kill`` of a serial that never exists (a no-op for the zygote once
    it runs again, on leaving the block).
    """
    zygotes = list(supervisor._zygotes.values())
    for zygote in zygotes:
        os.kill(zygote.pid, signal.SIGSTOP)
    try:
        filler = encode(Kill(id=2**40))
        for zygote in zygotes:
            with contextlib.suppress(BlockingIOError):
                while True:
                    zygote.sock.send(filler)
        yield
    finally:
        for zygote in zygotes:
            os.kill(zygote.pid, signal.SIGCONT)


async def _spares_lent(supervisor: Supervisor) -> None:
    await _until(
        lambda: all(len(z.spares) == 2 for z in supervisor._zygotes.values()), "the spares"
    )


async def test_a_call_cancelled_while_handing_over_never_runs_untracked(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """Cancelled while telling the zygote ``Used`` (its control socket full), a call used
    to leave its spare holding the call's fds: the action ran with no wall-clock kill.
    Now the spare gets the call only after ``Used`` went, so nothing runs."""
    await _spares_lent(supervisor)
    with _control_sockets_full(supervisor):
        task = asyncio.create_task(runner.run(catalog, "nap_long", {"seconds": 30}))
        await _until(
            lambda: any(len(z.spares) < 2 for z in supervisor._zygotes.values()),
            "the call to take a spare",
        )
        await asyncio.sleep(0.2)  # what the spare would do with the call, it does now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await _until(lambda: not _running_calls(supervisor), "no call to be running")
    assert (await runner.run(catalog, "ok", {"name": "again"})).output == "hello again"
    await assert_nothing_left(supervisor)


async def test_a_call_past_its_deadline_while_handing_over_never_runs_untracked(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """The call's deadline passing while ``Used`` waits on a full control socket is a
    ``timed_out`` call that did not run, and no child runs it behind the result."""
    await _spares_lent(supervisor)
    with _control_sockets_full(supervisor):
        result = await runner.run(catalog, "nap", {"seconds": 30})
        assert result.status == "timed_out", result
        assert "no sandbox process was free" in error_of(result.output)["message"]
        await asyncio.sleep(0.2)
        assert not _running_calls(supervisor)
    await _until(lambda: not _running_calls(supervisor), "no call to be running")
    await assert_nothing_left(supervisor)


async def test_a_call_cancelled_again_while_its_kill_waits_is_still_killed(
    runner: SandboxRunner, catalog: Catalog, supervisor: Supervisor
) -> None:
    """A cancelled call whose ``Kill`` waited on a full control socket and that was
    cancelled again (shutdown, a second cancel) used to drop the kill: its child ran on
    untracked. The kill now runs to the end on its own."""
    task = asyncio.create_task(runner.run(catalog, "nap_long", {"seconds": 30}))
    await _until(lambda: bool(_running_calls(supervisor)), "the call to run")
    with _control_sockets_full(supervisor):
        task.cancel()
        await asyncio.sleep(0.2)  # the kill is waiting for room on the control socket
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await _until(lambda: not _running_calls(supervisor), "the call to be killed")
    assert (await runner.run(catalog, "ok", {"name": "again"})).output == "hello again"
    await assert_nothing_left(supervisor)
