"""Supervisor.reload against real zygotes: what is kept, what is replaced, and fresh code;
a restarted zygote runs the code its catalog's load validated (``Catalog.code``)."""

from __future__ import annotations

import asyncio
import os
import py_compile
import shutil
import signal
import struct
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from gateway.executors.http import HttpConfig
from gateway.executors.python import PythonConfig
from gateway.executors.runner import SandboxRunner
from gateway.manifests.catalog import Catalog
from gateway.manifests.loader import load_catalog
from gateway.manifests.model import Action, SandboxLimits
from gateway.sandbox._zygote_keys import zygote_key
from gateway.sandbox.supervisor import Supervisor
from gateway.settings import Settings

CODE = """
import time


def tag() -> str:
    return "{tag}"


def nap(seconds: float = 0.5) -> str:
    time.sleep(seconds)
    return "{tag} woke"
"""


def write_code(root: Path, tag: str) -> Path:
    """(Re)write the test module with ``tag`` (always the same size for a 2-letter tag)."""
    path = root / "rl_actions.py"
    path.write_text(CODE.replace("{tag}", tag))
    return path


def action(name: str, function: str, description: str = "d", **kw: object) -> Action:
    """A python action calling ``rl_actions.<function>``."""
    return Action(
        name=name,
        description=description,
        kind_key="python",
        config=PythonConfig(function=f"rl_actions:{function}"),
        timeout=5,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def root() -> Iterator[Path]:
    """A world-readable directory holding the module (children may run as another uid)."""
    path = Path(tempfile.mkdtemp(prefix="gw-sandbox-reload-"))
    path.chmod(0o755)
    write_code(path, "v1")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def python_zygote(supervisor: Supervisor) -> int:
    """Pid of the zygote running the test's (network: false) Python actions."""
    return supervisor._zygotes[(False, ())].proc.pid


def make_catalog(root: Path, version: str, *actions: Action) -> Catalog:
    """A catalog whose code file is the test module, as the loader reports it."""
    return Catalog(
        version=version,
        root=root,
        gateway_root=root,
        loaded_at=0.0,
        actions={a.name: a for a in actions},
        code_files=(root / "rl_actions.py",),
    )


@pytest.fixture
async def supervisor(root: Path) -> AsyncIterator[Supervisor]:
    """A supervisor started on the v1 catalog; closed after the test."""
    sup = Supervisor(Settings(sandbox_concurrency=4))
    await sup.start(make_catalog(root, "v1", action("tag", "tag"), action("nap", "nap")))
    try:
        yield sup
    finally:
        await sup.aclose()


async def test_manifest_only_reload_keeps_zygotes(root: Path, supervisor: Supervisor) -> None:
    """A new action and an edited description over the same code reuse the running zygotes."""
    runner = SandboxRunner(supervisor)
    before = sorted(supervisor.zygote_pids())
    edited = make_catalog(
        root,
        "v2",
        action("tag", "tag", description="Now described differently."),
        action("nap", "nap"),
        action("tag_again", "tag"),
    )
    await supervisor.reload(edited)
    assert sorted(supervisor.zygote_pids()) == before
    assert (await runner.run(edited, "tag_again", {})).output == "v1"


async def test_code_edit_reload_replaces_zygotes_and_runs_new_code(
    root: Path, supervisor: Supervisor
) -> None:
    """An edited code file (same size, same mtime) starts new zygotes that run the new code."""
    runner = SandboxRunner(supervisor)
    catalog = make_catalog(root, "v1", action("tag", "tag"), action("nap", "nap"))
    assert (await runner.run(catalog, "tag", {})).output == "v1"
    before = python_zygote(supervisor)
    network_on = supervisor._zygotes[(True, ())].proc.pid  # imports no user code
    path = root / "rl_actions.py"
    old = path.stat()
    write_code(root, "v2")
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    await supervisor.reload(msgspec.structs.replace(catalog, version="v2"))
    assert python_zygote(supervisor) != before
    assert supervisor._zygotes[(True, ())].proc.pid == network_on
    assert (await runner.run(catalog, "tag", {})).output == "v2"


async def test_an_http_template_edit_replaces_only_the_http_zygote(
    root: Path, supervisor: Supervisor
) -> None:
    """The http zygote compiles its actions' templates once: an edited template needs a new
    one; an edited description does not, nor does either touch the python zygote."""
    base = [action("tag", "tag"), action("nap", "nap")]
    get = Action(
        name="get",
        description="d",
        kind_key="http",
        config=HttpConfig(url="http://127.0.0.1:9/a/{{ x }}"),
    )
    await supervisor.reload(make_catalog(root, "v2", *base, get))
    key = zygote_key(get)
    first = supervisor._zygotes[key].proc.pid
    python = python_zygote(supervisor)
    described = msgspec.structs.replace(get, description="Described differently.")
    await supervisor.reload(make_catalog(root, "v3", *base, described))
    assert supervisor._zygotes[key].proc.pid == first
    edited = msgspec.structs.replace(get, config=HttpConfig(url="http://127.0.0.1:9/b/{{ x }}"))
    await supervisor.reload(make_catalog(root, "v4", *base, edited))
    assert supervisor._zygotes[key].proc.pid != first
    assert python_zygote(supervisor) == python


async def test_new_action_module_replaces_only_its_zygote(
    root: Path, supervisor: Supervisor
) -> None:
    """A network: true action importing a module adds it to that zygote only."""
    runner = SandboxRunner(supervisor)
    network_off = python_zygote(supervisor)
    network_on = supervisor._zygotes[(True, ())].proc.pid
    (root / "rl_other.py").write_text("def hi() -> str:\n    return 'hi'\n")
    other = Action(
        name="hi",
        description="d",
        kind_key="python",
        config=PythonConfig(function="rl_other:hi"),
        sandbox=SandboxLimits(network=True),
    )
    edited = make_catalog(root, "v2", action("tag", "tag"), action("nap", "nap"), other)
    await supervisor.reload(edited)
    assert python_zygote(supervisor) == network_off
    assert supervisor._zygotes[(True, ())].proc.pid != network_on
    assert (await runner.run(edited, "hi", {})).output == "hi"


async def test_reload_lets_calls_in_flight_finish(root: Path, supervisor: Supervisor) -> None:
    """A call running while a code edit replaces the zygotes finishes on the old code."""
    runner = SandboxRunner(supervisor)
    catalog = make_catalog(root, "v1", action("tag", "tag"), action("nap", "nap"))
    old = python_zygote(supervisor)
    task = asyncio.create_task(runner.run(catalog, "nap", {"seconds": 0.5}))
    await asyncio.sleep(0.2)
    write_code(root, "v2")
    await supervisor.reload(msgspec.structs.replace(catalog, version="v2"))
    assert python_zygote(supervisor) != old
    result = await task
    assert result.output == "v1 woke"
    assert (await runner.run(catalog, "tag", {})).output == "v2"


async def test_stale_bytecode_is_never_run(root: Path) -> None:
    """A valid-looking .pyc of an older same-size, same-mtime source is ignored."""
    path = root / "rl_actions.py"
    py_compile.compile(str(path), cfile=None, doraise=True)  # __pycache__ for the v1 source
    cached = list((root / "__pycache__").glob("rl_actions.*.pyc"))
    assert cached, "py_compile wrote no cache"
    old = path.stat()
    write_code(root, "v3")
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    header = cached[0].read_bytes()[8:16]  # source mtime and size the cache claims to match
    now = path.stat()
    assert header == struct.pack("<II", int(now.st_mtime) & 0xFFFFFFFF, now.st_size)
    sup = Supervisor(Settings(sandbox_concurrency=2))
    catalog = make_catalog(root, "v3", action("tag", "tag"), action("nap", "nap"))
    await sup.start(catalog)
    try:
        assert (await SandboxRunner(sup).run(catalog, "tag", {})).output == "v3"
    finally:
        await sup.aclose()


async def test_failed_reload_keeps_the_live_zygotes(root: Path, supervisor: Supervisor) -> None:
    """When new zygotes cannot start, reload raises and the live ones keep serving."""
    runner = SandboxRunner(supervisor)
    catalog = make_catalog(root, "v1", action("tag", "tag"), action("nap", "nap"))
    before = sorted(supervisor.zygote_pids())
    write_code(root, "v2")
    supervisor._python = "/bin/false"  # every new zygote exits at once
    with pytest.raises(RuntimeError, match="did not start"):
        await supervisor.reload(msgspec.structs.replace(catalog, version="v2"))
    assert sorted(supervisor.zygote_pids()) == before
    assert (await runner.run(catalog, "tag", {})).output == "v1"


def kill_zygotes(supervisor: Supervisor) -> None:
    """SIGKILL every zygote, as the OOM killer would: the next call restarts its zygote."""
    for pid in supervisor.zygote_pids():
        os.kill(pid, signal.SIGKILL)


EXPLODE = '''def explode() -> str:
    """Explode."""
    raise RuntimeError("v1 boom")
'''


async def test_a_traceback_names_the_real_file_and_the_validated_line(
    root: Path, supervisor: Supervisor
) -> None:
    """A traceback from the catalog's code names its real file and line and quotes the line
    that was validated, before and after a zygote restart, whatever the disk holds now."""
    (root / "manifests").mkdir()
    (root / "tb_actions.py").write_text(EXPLODE)
    (root / "manifests" / "a.yaml").write_text(
        "kind: action\nname: explode\ndescription: d\npython: {function: tb_actions:explode}\n"
    )
    catalog = await asyncio.to_thread(load_catalog, root / "manifests")
    await supervisor.reload(catalog)
    runner = SandboxRunner(supervisor)
    # A push that never went live: the raise moved two lines down, line 3 says other things.
    (root / "tb_actions.py").write_text("# pushed\n# later\n" + EXPLODE.replace("v1", "v2"))
    where = f'File "{root.resolve() / "tb_actions.py"}", line 3, in explode'
    for restart in (False, True):
        if restart:
            kill_zygotes(supervisor)
            await asyncio.sleep(0.1)
        with capture_logs() as logs:
            result = await runner.run(catalog, "explode", {})
        assert "v1 boom" in result.output
        [trace] = [e["traceback"] for e in logs if e["event"] == "sandbox.action_error"]
        assert where in trace
        assert 'raise RuntimeError("v1 boom")' in trace
        assert "v2" not in trace


async def test_a_module_knows_its_file_under_the_gateway_root_as_given(
    root: Path, supervisor: Supervisor
) -> None:
    """git-sync's layout: the gateway root is a symlink (``current -> rev1``) that each
    push flips. A snapshotted module's ``__file__`` named the resolved revision
    (``rev1/...``), so files next to it were read from a revision git-sync deletes after
    the next flip; it is under the root as given (``current/...``), as before the
    snapshot, in a first and in a restarted zygote."""
    (root / "rev1").mkdir()
    (root / "rev1" / "where_actions.py").write_text("def where() -> str:\n    return __file__\n")
    (current := root / "current").symlink_to("rev1")
    (root / "manifests").mkdir()
    (root / "manifests" / "a.yaml").write_text(
        "kind: action\nname: where\ndescription: d\npython: {function: where_actions:where}\n"
    )
    catalog = await asyncio.to_thread(load_catalog, root / "manifests", gateway_root=current)
    await supervisor.reload(catalog)
    for restart in (False, True):
        if restart:
            kill_zygotes(supervisor)
            await asyncio.sleep(0.1)
        result = await SandboxRunner(supervisor).run(catalog, "where", {})
        assert (result.status, result.output) == ("succeeded", str(current / "where_actions.py"))


async def test_a_restarted_zygote_needs_nothing_of_the_code_on_disk(
    root: Path, supervisor: Supervisor
) -> None:
    """The catalog's modules come from its snapshot by name: a helper module deleted since,
    or an ``__init__.py`` pushed into what was a namespace package, changes nothing."""
    (root / "manifests").mkdir()
    (root / "ns_actions").mkdir()
    (root / "ns_actions" / "helper.py").write_text("WORD = 'kept'\n")
    (root / "ns_actions" / "tools.py").write_text(
        "from ns_actions.helper import WORD\n\n\ndef word() -> str:\n    return WORD\n"
    )
    (root / "manifests" / "a.yaml").write_text(
        "kind: action\nname: word\ndescription: d\npython: {function: ns_actions.tools:word}\n"
    )
    catalog = await asyncio.to_thread(load_catalog, root / "manifests")
    assert {m.name for m in catalog.code} == {"ns_actions", "ns_actions.tools", "ns_actions.helper"}
    await supervisor.reload(catalog)
    (root / "ns_actions" / "helper.py").unlink()
    (root / "ns_actions" / "__init__.py").write_text("raise SystemExit('never validated')\n")
    kill_zygotes(supervisor)
    await asyncio.sleep(0.1)
    result = await SandboxRunner(supervisor).run(catalog, "word", {})
    assert (result.status, result.output) == ("succeeded", "kept")


async def test_a_snapshot_larger_than_a_control_message_reaches_the_zygote(
    root: Path, supervisor: Supervisor
) -> None:
    """Code of several MiB (over the 1 MiB a control message may carry) is imported from
    the snapshot whole, by a first and a restarted zygote alike."""
    (root / "manifests").mkdir()
    blob = "x" * (3 * 1024 * 1024)
    (root / "big_actions.py").write_text(
        f"BLOB = {blob!r}\n\n\ndef size() -> int:\n    return len(BLOB)\n"
    )
    (root / "manifests" / "a.yaml").write_text(
        "kind: action\nname: size\ndescription: d\npython: {function: big_actions:size}\n"
    )
    catalog = await asyncio.to_thread(load_catalog, root / "manifests")
    (root / "big_actions.py").write_text("def size() -> int:\n    return 0\n")
    await supervisor.reload(catalog)
    runner = SandboxRunner(supervisor)
    assert (await runner.run(catalog, "size", {})).output == str(len(blob))
    kill_zygotes(supervisor)
    await asyncio.sleep(0.1)
    assert (await runner.run(catalog, "size", {})).output == str(len(blob))


async def test_a_rollback_to_the_live_catalog_runs_its_code_not_the_disks(
    root: Path, supervisor: Supervisor
) -> None:
    """When a later swap hook fails, the reloader hands the sandbox the live catalog again:
    its zygotes then run the live catalog's code, though the disk holds the refused one."""
    (root / "manifests").mkdir()
    (root / "manifests" / "a.yaml").write_text(
        "kind: action\nname: tag\ndescription: d\npython: {function: rl_actions:tag}\n"
    )
    live = await asyncio.to_thread(load_catalog, root / "manifests")
    await supervisor.reload(live)
    write_code(root, "v2")
    refused = await asyncio.to_thread(load_catalog, root / "manifests")
    await supervisor.reload(refused)  # the sandbox hook ran; a later hook then failed
    runner = SandboxRunner(supervisor)
    assert (await runner.run(refused, "tag", {})).output == "v2"
    await supervisor.reload(live)  # the roll-back
    assert (await runner.run(live, "tag", {})).output == "v1"
