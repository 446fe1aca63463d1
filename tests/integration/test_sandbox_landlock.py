"""Landlock confines sandboxed calls to an allow-list: no gateway secrets, stores or stray writes.

A real ``Supervisor`` and ``SandboxRunner`` run ``code_interpreter`` and
``python`` actions against a gateway root holding a planted ``.env`` and a
SQLite file under ``var/``. Every planted file is world-readable and the
outside directory world-writable, so only Landlock (not the uid) can refuse.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import tempfile
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.executors.python import PythonConfig
from gateway.executors.runner import SandboxRunner
from gateway.executors.sql import SqlConfig
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Action, Database
from gateway.sandbox import _linux
from gateway.sandbox.supervisor import Supervisor
from gateway.settings import Settings
from tests._sandbox_view import sandbox_root

try:
    _ABI = _linux.landlock_abi()
except OSError as exc:  # pragma: no cover - depends on the kernel
    pytest.skip(f"Landlock is not supported by this kernel: {exc}", allow_module_level=True)

SECRET = "sk-landlock-test-0123456789"

ACTIONS = """
import os

import ll_helpers
import msgspec


def own_source():
    with open(__file__) as fh:
        source = fh.read()
    import decimal
    import json

    with open(msgspec.__file__) as fh:
        library = fh.read()
    stdlib = None
    try:
        with open(os.__file__) as fh:
            stdlib = "def " in fh.read()
    except OSError as exc:
        stdlib = exc.strerror
    from ll_helpers import lazy  # a sibling package's submodule, first imported here

    return {
        "lazy": lazy.VALUE,
        "own": "def own_source" in source,
        "site_packages": "DecodeError" in library,
        "stdlib": stdlib,
        "imports": json.dumps(str(decimal.Decimal("1.5"))),
    }


def read(path):
    try:
        with open(path, "rb") as fh:
            return {"read": fh.read().decode(errors="replace")}
    except OSError as exc:
        return {"error": exc.strerror}
"""


@pytest.fixture
def gateway_root() -> Iterator[Path]:
    """A world-readable gateway root with actions, manifests, a planted .env and var/ store."""
    root = Path(tempfile.mkdtemp(prefix="gw-landlock-test-"))
    root.chmod(0o755)
    (root / "ll_actions.py").write_text(textwrap.dedent(ACTIONS))
    (root / "ll_helpers").mkdir(mode=0o755)
    (root / "ll_helpers" / "__init__.py").write_text("")
    (root / "ll_helpers" / "lazy.py").write_text("VALUE = 42\n")
    (root / "manifests").mkdir(mode=0o755)
    (root / ".env").write_text(f"OPENAI_API_KEY={SECRET}\n")
    (root / "var").mkdir(mode=0o755)
    with sqlite3.connect(root / "var" / "threads.db") as conn:
        conn.execute("CREATE TABLE t (secret TEXT)")
        conn.execute("INSERT INTO t VALUES (?)", (SECRET,))
    conn.close()
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir()
    outside.chmod(0o777)
    for path in [root / ".env", root / "var" / "threads.db"]:
        path.chmod(0o644)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(outside, ignore_errors=True)


@pytest.fixture
async def runner(gateway_root: Path) -> AsyncIterator[tuple[SandboxRunner, Catalog]]:
    """A started supervisor over a catalog rooted in ``gateway_root``; closed afterwards."""
    actions = {
        name: Action(
            name=name,
            description=name,
            kind_key="python",
            config=PythonConfig(function=f"ll_actions:{name}"),
        )
        for name in ("own_source", "read")
    }
    catalog = Catalog(
        version="test",
        root=gateway_root / "manifests",
        gateway_root=gateway_root,
        loaded_at=0.0,
        actions=actions,
        code_files=(gateway_root / "ll_actions.py",),
    )
    sup = Supervisor(Settings(sandbox_concurrency=2, gateway_root=gateway_root))
    await sup.start(catalog)
    try:
        yield SandboxRunner(sup), catalog
    finally:
        await sup.aclose()


async def _code(pair: tuple[SandboxRunner, Catalog], code: str) -> str:
    runner, catalog = pair
    result = await runner.run(catalog, "code_interpreter", {"code": textwrap.dedent(code)})
    assert result.status == "succeeded", result.output
    return result.output


async def test_code_interpreter_cannot_read_env_in_gateway_root(
    runner: tuple[SandboxRunner, Catalog], gateway_root: Path
) -> None:
    """A world-readable .env at the gateway root cannot be read by code_interpreter."""
    output = await _code(
        runner,
        f"""
        try:
            print(open({str(gateway_root / ".env")!r}).read())
        except PermissionError as exc:
            print("denied", exc.errno)
        """,
    )
    assert SECRET not in output
    assert "denied 13" in output


async def test_code_interpreter_cannot_read_store_under_var(
    runner: tuple[SandboxRunner, Catalog], gateway_root: Path
) -> None:
    """A SQLite thread store in var/ under the gateway root is unreadable, by file or sqlite3."""
    db = gateway_root / "var" / "threads.db"
    output = await _code(
        runner,
        f"""
        import sqlite3
        try:
            print(open({str(db)!r}, "rb").read())
        except PermissionError:
            print("file denied")
        try:
            conn = sqlite3.connect("file:{db}?mode=ro", uri=True)
            print(conn.execute("SELECT secret FROM t").fetchall())
        except sqlite3.Error as exc:
            print("sqlite denied", exc)
        """,
    )
    assert SECRET not in output
    assert "file denied" in output
    assert "sqlite denied" in output


async def test_python_action_reads_its_own_code_and_imports(
    runner: tuple[SandboxRunner, Catalog],
) -> None:
    """An action reads its own module, a sibling package, site-packages and the stdlib."""
    pair_runner, catalog = runner
    result = await pair_runner.run(catalog, "own_source", {})
    assert result.status == "succeeded", result.output
    out = json.loads(result.output)
    assert out["own"] is True
    assert out["lazy"] == 42
    assert out["site_packages"] is True
    assert out["imports"] == '"1.5"'
    stdlib_dir = Path(os.__file__).parent
    if os.geteuid() != 0 or all(p.stat().st_mode & 0o005 == 0o005 for p in stdlib_dir.parents):
        assert out["stdlib"] is True


async def test_python_action_cannot_read_env(
    runner: tuple[SandboxRunner, Catalog], gateway_root: Path
) -> None:
    """A python action from the gateway root still cannot read the .env beside it."""
    pair_runner, catalog = runner
    result = await pair_runner.run(catalog, "read", {"path": str(gateway_root / ".env")})
    assert result.status == "succeeded", result.output
    assert SECRET not in result.output
    assert json.loads(result.output) == {"error": "Permission denied"}


async def test_writes_only_in_the_working_directory(
    runner: tuple[SandboxRunner, Catalog], gateway_root: Path
) -> None:
    """Writing in the call's directory works; a world-writable directory outside it is refused."""
    outside = gateway_root.parent / f"{gateway_root.name}-outside"
    output = await _code(
        runner,
        f"""
        import os, tempfile
        with open("mine.txt", "w") as fh:
            fh.write("kept")
        print("cwd", open("mine.txt").read())
        with tempfile.NamedTemporaryFile("w") as fh:
            print("tmp ok")
        for target in [{str(outside / "x.txt")!r}, {str(gateway_root / "new.txt")!r}]:
            try:
                open(target, "w").write("escaped")
                print("wrote", target)
            except PermissionError:
                print("denied")
        """,
    )
    assert "cwd kept" in output
    assert "tmp ok" in output
    assert "wrote" not in output
    assert output.count("denied") == 2
    assert not (outside / "x.txt").exists()
    assert not (gateway_root / "new.txt").exists()


async def test_doctor_says_landlock_is_applied(runner: tuple[SandboxRunner, Catalog]) -> None:
    """The capability probe reports Landlock as applied, with its ABI version."""
    supervisor = runner[0]._supervisor
    caps = supervisor.capabilities
    assert caps is not None
    assert caps.landlock is True
    assert f"ABI version {_ABI}" in caps.landlock_detail
    assert "applied on every call" in caps.landlock_detail
    assert "no ruleset" not in caps.landlock_detail


@pytest.fixture
def shop_dir() -> Iterator[Path]:
    """A world-writable directory outside the gateway root holding a catalog SQLite database."""
    path = Path(tempfile.mkdtemp(prefix="gw-landlock-db-"))
    path.chmod(0o777)
    with sqlite3.connect(path / "shop.db") as conn:
        conn.execute("CREATE TABLE t (secret TEXT)")
        conn.execute("INSERT INTO t VALUES (?)", (SECRET,))
    conn.close()
    (path / "shop.db").chmod(0o666)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_only_sql_actions_reach_their_database(gateway_root: Path, shop_dir: Path) -> None:
    """A sql action reads (or, when not readonly, writes) its database; code_interpreter cannot."""
    read = Action(
        name="read_shop",
        description="d",
        kind_key="sql",
        config=SqlConfig(database="shop", query="SELECT secret FROM t"),
    )
    write = Action(
        name="write_shop",
        description="d",
        kind_key="sql",
        config=SqlConfig(database="shop", query="INSERT INTO t VALUES ('x')", readonly=False),
    )
    catalog = Catalog(
        version="test",
        root=gateway_root / "manifests",
        gateway_root=gateway_root,
        loaded_at=0.0,
        actions={"read_shop": read, "write_shop": write},
        databases={"shop": Database(name="shop", url=f"sqlite:///{shop_dir / 'shop.db'}")},
    )
    sup = Supervisor(Settings(sandbox_concurrency=2, gateway_root=gateway_root))
    await sup.start(catalog)
    try:
        runner = SandboxRunner(sup)
        result = await runner.run(catalog, "read_shop", {})
        assert result.status == "succeeded", result.output
        assert SECRET in result.output
        result = await runner.run(catalog, "write_shop", {})
        assert result.status == "succeeded", result.output
        assert json.loads(result.output) == {"rowcount": 1}
        output = await _code(
            (runner, catalog),
            f"""
            try:
                print(open({str(shop_dir / "shop.db")!r}, "rb").read())
            except PermissionError:
                print("denied")
            """,
        )
        assert SECRET not in output
        assert "denied" in output
    finally:
        await sup.aclose()


def _find(root: Path, pattern: str) -> Path | None:
    """The first match of ``pattern`` below ``root``, or None; a zygote of another test may
    remove its directory while the search walks it (that is no match, not an error)."""
    try:
        return next(iter(root.glob(pattern)), None)
    except FileNotFoundError:
        return None


async def test_a_call_cannot_reach_a_concurrent_calls_directory(
    runner: tuple[SandboxRunner, Catalog],
) -> None:
    """Knowing a running sibling's directory is not enough to read it, nor to list them all.

    As root every call has its own uid and a 0700 directory; otherwise each call's
    Landlock ruleset allows only its own directory. The planted file itself is
    world-readable, so only the directory's protection can refuse.
    """
    token = uuid.uuid4().hex
    first = asyncio.create_task(
        _code(
            runner,
            f"""
            import os, time
            with open("note-{token}.txt", "w") as fh:
                fh.write("private")
            os.chmod("note-{token}.txt", 0o644)
            time.sleep(3)
            print("done")
            """,
        )
    )
    pair_runner, catalog = runner
    # Where the zygote sees it: its calls' directories may be on a tmpfs of its own.
    root = sandbox_root(pair_runner._supervisor)
    seen = None
    deadline = time.monotonic() + 10
    while seen is None and time.monotonic() < deadline:
        seen = _find(
            root / tempfile.gettempdir().lstrip("/"), f"gateway-sandbox-*/*/note-{token}.txt"
        )
        await asyncio.sleep(0.02)
    assert seen is not None, "the first call never wrote its file"
    note = Path("/") / seen.relative_to(root)
    sibling = await pair_runner.run(catalog, "read", {"path": str(note)})
    assert json.loads(sibling.output) == {"error": "Permission denied"}
    listing = await _code(
        runner,
        f"""
        import os
        try:
            print(os.listdir({str(note.parent.parent)!r}))
        except OSError as exc:
            print("denied", exc.strerror)
        """,
    )
    assert listing.startswith("denied"), listing
    assert (await first).strip() == "done"
