"""Calls on a kernel without Landlock are still kept out of the gateway's secrets.

The machine has Landlock; a kernel without it (before 5.13) is made here for one
process and all it starts: a seccomp filter makes the ``landlock_*`` system calls
(444-446 on x86_64 and aarch64 alike, the generic table) fail with ENOSYS, as an
old kernel does, and the real supervisor then starts its real zygotes under it.
Its result comes back as JSON on stdout, as in ``test_sandbox_nonroot``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._sandbox_view import as_nobody

PROGRAM = textwrap.dedent(
    """
    import asyncio, ctypes, json, os, sys
    from pathlib import Path

    def refuse_landlock() -> None:
        from gateway.sandbox import _seccomp as s
        from gateway.sandbox._libc import check, libc

        arch = s._DENY[os.uname().machine][0]
        program = [
            (s._LD_ABS_W, 0, 0, 4),  # arch
            (s._JEQ_K, 0, 4, arch),
            (s._LD_ABS_W, 0, 0, 0),  # syscall number
            (s._JGE_K, 0, 2, 444),  # landlock_create_ruleset
            (s._JGE_K, 1, 0, 447),  # past landlock_restrict_self
            (s._RET_K, 0, 0, s._RET_ERRNO | s._ENOSYS),
            (s._RET_K, 0, 0, s._RET_ALLOW),
        ]
        filters = (s._SockFilter * len(program))(*(s._SockFilter(*i) for i in program))
        prog = s._SockFprog(len(program), ctypes.cast(filters, ctypes.POINTER(s._SockFilter)))
        check(libc.prctl(38, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
        check(libc.prctl(22, 2, ctypes.addressof(prog), 0, 0), "PR_SET_SECCOMP")

    def replace_on_host(root: Path, store: Path, secret: str) -> None:
        # What deploys, restores and pulls do while a zygote runs: new files renamed
        # over old ones, a new top-level folder.

        def put(path: Path, text: str) -> None:
            new = path.with_name(path.name + ".new")
            new.write_text(text)
            new.chmod(0o666)
            os.replace(new, path)

        put(root / ".env", f"OPENAI_API_KEY={secret}-rotated\\n")  # sed -i, deploy tools
        put(store, f"restored {secret}\\n")  # a backup restored, its -wal anew
        wal = store.with_name(store.name + "-wal")
        wal.unlink()
        wal.write_text(f"new wal {secret}\\n")
        wal.chmod(0o666)
        (root / "backups").mkdir(mode=0o777)
        (root / "backups" / "secret.txt").write_text(f"dump {secret}\\n")
        (root / "backups" / "secret.txt").chmod(0o666)
        put(root / "config.yaml", f"config {secret} v2\\n")  # git pull
        put(root / "mask_actions" / "data.txt", "data v2\\n")  # allowed: seen anew
        put(root / "manifests" / "a.yaml", "kind: database\\nname: shop2\\n")

    def switch_on_host(link: Path, secret: str) -> None:
        # git-sync: a new revision beside the live one, then the link swapped to it.
        import shutil

        live = link.resolve()
        new = live.with_name(live.name + "-next")
        shutil.copytree(live, new, symlinks=True)
        (new / ".env").write_text(f"OPENAI_API_KEY={secret}-next\\n")
        swap = link.with_name(link.name + ".new")
        swap.symlink_to(os.path.relpath(new, link.parent))
        os.replace(swap, link)

    root, store, landlock = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    secret = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "write-at-root" else None
    rounds = 2 if secret else 1
    write_at_root = sys.argv[-1] == "write-at-root"  # the shop database in the root itself
    switch = sys.argv[-1] == "switch"  # root is a link to a revision, switched between rounds
    QUERY = "SELECT id FROM orders"
    if landlock == "off":
        refuse_landlock()

    import gateway.executors  # registers the kinds
    from gateway.executors.python import PythonConfig
    from gateway.executors.sql import SqlConfig
    from gateway.manifests.catalog import Catalog
    from gateway.manifests.model import Action, CallContext, Database, SandboxLimits
    from gateway.sandbox.supervisor import Supervisor
    from gateway.settings import Settings

    async def main() -> None:
        actions = {
            "probe": Action(
                name="probe",
                description="probe",
                kind_key="python",
                config=PythonConfig(function="mask_actions.probe:probe"),
                sandbox=SandboxLimits(network=False),
            ),
            "orders": Action(
                name="orders",
                description="orders",
                kind_key="sql",
                config=SqlConfig(
                    database="shop",
                    query="INSERT INTO orders VALUES (7)" if write_at_root else QUERY,
                    readonly=not write_at_root,
                ),
                sandbox=SandboxLimits(network=False),
            ),
        }
        shop = "sqlite:///" + str((root if write_at_root else root / "data") / "shop.db")
        catalog = Catalog(
            version="t",
            root=root / "manifests",
            gateway_root=root,
            loaded_at=0,
            actions=actions,
            databases={"shop": Database(name="shop", url=shop)},
        )
        settings = Settings(sandbox_concurrency=2, sandbox_tmp_mb=32, database_url=store)
        supervisor = Supervisor(settings)
        await supervisor.start(catalog)
        try:
            out = {"uid": os.geteuid(), "rounds": []}
            for round in range(rounds):
                if round and switch:
                    switch_on_host(root, secret)
                elif round:  # the same zygote, after the host changed files under it
                    replace_on_host(root, Path(store[len("sqlite:///") :]), secret)
                calls = {}
                for name, action in actions.items():
                    call = CallContext(
                        action=name, arguments={}, databases=catalog.database_urls()
                    )
                    result = await supervisor.call(action, call)
                    calls[name] = {"status": result.status, "output": result.output}
                out["rounds"].append(calls)
            out["calls"] = out["rounds"][0]
            caps = supervisor.capabilities
            out["caps"] = caps and {
                "landlock": caps.landlock,
                "landlock_detail": caps.landlock_detail,
                "masked": caps.masked,
                "masked_detail": caps.masked_detail,
            }
        finally:
            await supervisor.aclose()
        print(json.dumps(out))

    asyncio.run(main())
    """
)

PROBE = textwrap.dedent(
    """
    import os

    PATHS = {paths!r}

    def _look(prefix=""):
        seen = {{}}
        for path in PATHS:
            try:
                with open(path) as fh:
                    seen[prefix + path] = "read: " + fh.read(200)
            except OSError as exc:
                seen[prefix + path] = "refused: " + (exc.strerror or str(exc))
        try:
            with open(PATHS[0], "w") as fh:
                fh.write("overwritten")
            seen[prefix + "write"] = "written"
        except OSError as exc:
            seen[prefix + "write"] = "refused: " + (exc.strerror or str(exc))
        return seen

    # The zygote runs this at import, and every call inherits what it kept.
    AT_IMPORT = _look("import ")

    def probe():
        return {{**_look(), **AT_IMPORT}}
    """
)

SECRET = "sk-planted-0123456789"


@pytest.fixture
def deployment() -> Iterator[tuple[Path, Path]]:
    """A gateway root every uid may enter (``.env``, a private folder, action code,
    manifests, a sql action's database) and a thread store outside it, with its
    knowledge index and a backup beside it."""
    base = Path(tempfile.mkdtemp(prefix="gw-nolandlock-"))
    base.chmod(0o755)
    root, store = base / "gw", base / "store"
    for folder in (root / "mask_actions", root / "manifests", root / "data", root / "private"):
        folder.mkdir(parents=True)
    store.mkdir()
    (root / ".env").write_text(f"OPENAI_API_KEY={SECRET}\n")
    (root / "private" / "notes.txt").write_text(f"notes {SECRET}\n")
    (root / "manifests" / "a.yaml").write_text("kind: database\nname: shop\n")
    (store / "threads.db").write_text(f"thread {SECRET}\n")
    (store / "threads.db-wal").write_text(f"wal {SECRET}\n")
    # Beside the store: its knowledge index (always there) and a backup.
    (store / "knowledge").mkdir()
    (store / "knowledge" / "index.v4.sqlite3").write_text(f"passages {SECRET}\n")
    (store / "threads-backup.db").write_text(f"backup {SECRET}\n")
    db = sqlite3.connect(root / "data" / "shop.db")
    db.execute("CREATE TABLE orders (id INTEGER)")
    db.execute("INSERT INTO orders VALUES (1042)")
    db.commit()
    db.close()
    (root / "config.yaml").write_text(f"config {SECRET}\n")
    (root / "mask_actions" / "data.txt").write_text("data v1\n")
    paths = [
        str(root / ".env"),
        str(root / "private" / "notes.txt"),
        str(store / "threads.db"),
        str(store / "threads.db-wal"),
        str(store / "knowledge" / "index.v4.sqlite3"),
        str(store / "threads-backup.db"),
        str(root / "manifests" / "a.yaml"),
        str(root / "mask_actions" / "probe.py"),
        str(root / "mask_actions" / "data.txt"),
        str(root / "config.yaml"),
        str(root / "backups" / "secret.txt"),
    ]
    if Path("/run/secrets").is_dir():
        paths += [str(p) for p in Path("/run/secrets").iterdir() if p.is_file()][:1]
    (root / "mask_actions" / "__init__.py").write_text("")
    (root / "mask_actions" / "probe.py").write_text(PROBE.format(paths=paths))
    for path in base.rglob("*"):  # any uid may read them: only the sandbox keeps calls out
        path.chmod(0o777 if path.is_dir() else 0o666)
    try:
        yield root, store / "threads.db"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(command: list[str], cwd: Path | None = None) -> dict[str, object]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=120, check=False, cwd=cwd
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize(("who", "landlock"), [("root", "off"), ("nobody", "off"), ("root", "on")])
def test_calls_cannot_read_the_gateways_secrets_without_landlock(
    deployment: tuple[Path, Path], who: str, landlock: str
) -> None:
    """Without Landlock a call read ``.env``, the gateway root's other files and the
    thread store (and wrote them) wherever its uid could; the zygote covers them with
    empty read-only mounts, while the action's code, the manifests and its sql action's
    database stay reachable. With Landlock nothing is mounted (Landlock refuses them).
    The action module's import-time code (run in the zygote, kept for every call) was
    not covered: the masks went on after the imports."""
    root, store = deployment
    argv = ["-c", PROGRAM, str(root), f"sqlite:///{store}", landlock]
    command = [sys.executable, *argv] if who == "root" else as_nobody(root.parent, *argv)
    out = _run(command)
    calls = out["calls"]
    assert isinstance(calls, dict)
    assert calls["orders"]["status"] == "succeeded", calls["orders"]
    assert json.loads(calls["orders"]["output"]) == [{"id": 1042}]
    assert calls["probe"]["status"] == "succeeded", calls["probe"]
    seen = json.loads(calls["probe"]["output"])
    assert seen[str(root / "manifests" / "a.yaml")].startswith("read: kind: database")
    assert seen[str(root / "mask_actions" / "probe.py")].startswith("read: ")
    leaked = {path: text for path, text in seen.items() if SECRET in text}
    assert not leaked, (leaked, out["caps"])
    assert seen["write"].startswith("refused: "), seen["write"]
    # At import too: the zygote is confined (Landlock, or the mounts) before it imports.
    assert seen["import write"].startswith("refused: "), seen["import write"]
    assert seen["import " + str(root / "mask_actions" / "probe.py")].startswith("read: ")
    assert (root / ".env").read_text() == f"OPENAI_API_KEY={SECRET}\n"
    caps = out["caps"]
    assert isinstance(caps, dict)
    assert caps["landlock"] is (landlock == "on"), caps
    if landlock == "on":
        assert caps["masked"] is False, caps
        assert caps["masked_detail"] == "", caps  # nothing tried: doctor shows no line
    else:
        assert caps["masked"] is True, caps
        assert caps["landlock_detail"].endswith("by mounts (see masked)"), caps
        assert "covered by empty read-only mounts" in caps["masked_detail"], caps


@pytest.mark.parametrize(("who", "landlock"), [("root", "off"), ("nobody", "off"), ("root", "on")])
def test_files_replaced_or_made_on_the_host_stay_out_of_a_running_zygotes_calls(
    deployment: tuple[Path, Path], who: str, landlock: str
) -> None:
    """A mask on one path went with that path: ``.env`` rotated by a rename, the thread
    store and its ``-wal`` restored, a tracked top-level file replaced (git pull) and a new
    ``backups/`` at the gateway root were all read by the next call of a running zygote;
    those folders now show calls only what they may read, as it was at the start, while
    a file replaced inside the action code or manifests is seen anew."""
    root, store = deployment
    argv = ["-c", PROGRAM, str(root), f"sqlite:///{store}", landlock, SECRET]
    command = [sys.executable, *argv] if who == "root" else as_nobody(root.parent, *argv)
    out = _run(command)
    rounds = out["rounds"]
    assert isinstance(rounds, list)
    assert len(rounds) == 2
    for calls in rounds:
        assert calls["orders"]["status"] == "succeeded", calls["orders"]
        assert calls["probe"]["status"] == "succeeded", calls["probe"]
    before, after = (json.loads(calls["probe"]["output"]) for calls in rounds)
    leaked = {path: text for path, text in after.items() if SECRET in text}
    assert not leaked, sorted(os.path.relpath(p, root.parent) for p in leaked)
    assert before[str(root / "mask_actions" / "data.txt")] == "read: data v1\n"
    assert after[str(root / "mask_actions" / "data.txt")] == "read: data v2\n"
    assert after[str(root / "manifests" / "a.yaml")] == "read: kind: database\nname: shop2\n"
    assert after[str(root / "mask_actions" / "probe.py")].startswith("read: ")
    assert json.loads(rounds[1]["orders"]["output"]) == [{"id": 1042}]
    caps = out["caps"]
    assert isinstance(caps, dict)
    if landlock == "off":
        assert caps["masked"] is True, caps
        assert "made or renamed there later is not seen" in caps["masked_detail"], caps


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_a_sql_action_writes_its_database_at_the_gateway_root_without_landlock(
    deployment: tuple[Path, Path], who: str
) -> None:
    """A database in the gateway root's own folder makes that folder the sql action's:
    SQLite creates its journal there, which a read-only allow-list refused (``unable to
    open database file``)."""
    root, store = deployment
    shutil.copy(root / "data" / "shop.db", root / "shop.db")
    (root / "shop.db").chmod(0o666)
    argv = ["-c", PROGRAM, str(root), f"sqlite:///{store}", "off", "write-at-root"]
    command = [sys.executable, *argv] if who == "root" else as_nobody(root.parent, *argv)
    out = _run(command, cwd=root)  # so ./.env is the root's, a protected path in it
    calls = out["calls"]
    assert isinstance(calls, dict)
    assert calls["orders"]["status"] == "succeeded", calls["orders"]
    assert json.loads(calls["orders"]["output"]) == {"rowcount": 1}
    seen = json.loads(calls["probe"]["output"])
    assert SECRET not in seen[str(root / ".env")], seen


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_a_new_revision_behind_the_gateway_roots_link_stays_out_of_running_zygotes(
    deployment: tuple[Path, Path], who: str
) -> None:
    """git-sync's layout (the gateway root is ``current -> revs/r1``): the masks went on
    the revision alone, so switching ``current`` to a new one showed that revision's
    ``.env`` to the next call of a running zygote (until a reload replaced it, and for
    good were its manifests rejected). The link's folder keeps only the link as it was
    and the live revision: calls see r1 until new zygotes come."""
    root, store = deployment
    base = root.parent
    live = base / "revs" / "r1"
    live.parent.mkdir()
    root.rename(live)
    link = base / "current"
    link.symlink_to("revs/r1")
    (base / ".git").mkdir()  # the repository beside the revisions
    for folder in (base, live.parent, base / ".git"):  # the host side may run as nobody
        folder.chmod(0o777)
    (base / ".git" / "config").write_text(f"token {SECRET}\n")
    (base / ".git" / "config").chmod(0o666)
    paths = [
        str(link / ".env"),
        str(link / "private" / "notes.txt"),
        str(base / "revs" / "r1-next" / ".env"),
        str(base / ".git" / "config"),
        str(link / "mask_actions" / "data.txt"),
    ]
    (live / "mask_actions" / "probe.py").write_text(PROBE.format(paths=paths))
    argv = ["-c", PROGRAM, str(link), f"sqlite:///{store}", "off", SECRET, "switch"]
    command = [sys.executable, *argv] if who == "root" else as_nobody(base, *argv)
    out = _run(command)
    rounds = out["rounds"]
    assert isinstance(rounds, list)
    before, after = (json.loads(calls["probe"]["output"]) for calls in rounds)
    assert str(link.readlink()) == "revs/r1-next"  # switched on the host
    for seen in (before, after):
        leaked = {path: text for path, text in seen.items() if SECRET in text}
        assert not leaked, leaked
        assert seen[str(link / "mask_actions" / "data.txt")] == "read: data v1\n", seen
