"""Reloader: validated swaps, coalescing, hook order, status, and real file watching."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.errors import ManifestError, Problem
from gateway.manifests._watch_paths import make_plan, relevant
from gateway.manifests.catalog import Catalog, CatalogRef
from gateway.manifests.watch import Reloader, _limit_reached
from gateway.settings import Settings


def _catalog(version: str, root: Path, **kw: object) -> Catalog:
    return Catalog(
        version=version, root=root, gateway_root=root.parent, loaded_at=time.time(), **kw
    )  # type: ignore[arg-type]


class DirLoader:
    """A fake ``load``: version = hash of the *.yaml files; a file saying 'broken' is invalid."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls = 0
        self.threads: set[int] = set()

    def __call__(self) -> Catalog:
        self.calls += 1
        self.threads.add(threading.get_ident())
        real = self.root.resolve()
        files = sorted(p for p in real.rglob("*.yaml") if "..v" not in str(p.relative_to(real)))
        digest = hashlib.sha256()
        problems = []
        for f in files:
            text = f.read_text()
            digest.update(f.name.encode() + b"\0" + text.encode())
            if "broken" in text:
                problems.append(Problem(file=f.name, line=3, col=1, message="broken document"))
        if problems:
            raise ManifestError(problems)
        names = tuple(str(f.relative_to(real)) for f in files)
        return _catalog(digest.hexdigest()[:12], real, files=names)


def _settings(root: Path, *, watch: bool = True) -> Settings:
    return Settings(manifests=root, watch=watch, reload_debounce_ms=30)


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def _version(ref: CatalogRef) -> str | None:
    return ref.current.version if ref.current else None


# -- reload cycle with a fake loader ----------------------------------------


async def test_valid_set_is_swapped_and_status_shows_it(tmp_path: Path) -> None:
    """A valid set becomes current in one swap and the status reports version and files."""
    (tmp_path / "a.yaml").write_text("kind: action\n")
    ref = CatalogRef()
    load = DirLoader(tmp_path)
    reloader = Reloader(_settings(tmp_path, watch=False), ref, load=load)
    result = await reloader.reload("test")
    assert result.result == "swapped"
    assert ref.current is not None and result.version == ref.current.version
    status = reloader.status
    assert status.version == ref.current.version
    assert status.files == ["a.yaml"]
    assert status.last_attempt == result
    assert status.reloads == {"swapped": 1, "unchanged": 0, "rejected": 0, "failed": 0}
    assert threading.get_ident() not in load.threads  # loaded off the event loop


async def test_unchanged_version_skips_swap_and_hooks(tmp_path: Path) -> None:
    """Reloading an identical set keeps the same catalog object and calls no hook."""
    (tmp_path / "a.yaml").write_text("x: 1\n")
    ref = CatalogRef()
    seen: list[str] = []

    async def hook(cat: Catalog) -> None:
        seen.append(cat.version)

    reloader = Reloader(
        _settings(tmp_path, watch=False), ref, load=DirLoader(tmp_path), on_swap=[hook]
    )
    await reloader.reload("first")
    first = ref.current
    result = await reloader.reload("again")
    assert result.result == "unchanged"
    assert ref.current is first
    assert len(seen) == 1


async def test_broken_set_is_rejected_old_set_serves_then_recovers(tmp_path: Path) -> None:
    """A broken set is refused with every error located; the old set stays until a fix."""
    good = tmp_path / "a.yaml"
    good.write_text("x: 1\n")
    ref = CatalogRef()
    results = []
    reloader = Reloader(
        _settings(tmp_path, watch=False), ref, load=DirLoader(tmp_path), on_result=results.append
    )
    await reloader.reload("start")
    live = ref.current
    (tmp_path / "b.yaml").write_text("broken\n")
    (tmp_path / "c.yaml").write_text("broken too\n")
    rejected = await reloader.reload("edit")
    assert rejected.result == "rejected"
    assert rejected.errors == ["b.yaml:3:1: broken document", "c.yaml:3:1: broken document"]
    assert ref.current is live
    assert reloader.status.last_attempt is not None
    assert reloader.status.last_attempt.errors == rejected.errors
    assert reloader.status.version == live.version  # type: ignore[union-attr]
    (tmp_path / "b.yaml").write_text("fixed\n")
    (tmp_path / "c.yaml").unlink()
    fixed = await reloader.reload("fix")
    assert fixed.result == "swapped" and fixed.errors == []
    assert ref.current is not live
    assert [r.result for r in results] == ["swapped", "rejected", "swapped"]
    assert reloader.status.reloads["rejected"] == 1


async def test_check_warnings_follow_the_live_set_and_a_broken_check_blocks_nothing(
    tmp_path: Path,
) -> None:
    """The ``check`` hook's warnings are those of the live set (a rejected set leaves them);
    a check that raises is logged and the valid set still goes live, without warnings."""
    (tmp_path / "a.yaml").write_text("x: 1\n")
    verdicts: list[list[str] | Exception] = [["key 'web': no 'helpr'"], RuntimeError("bug")]

    def check(catalog: Catalog) -> list[str]:
        verdict = verdicts.pop(0)
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    ref = CatalogRef()
    reloader = Reloader(
        _settings(tmp_path, watch=False), ref, load=DirLoader(tmp_path), check=check
    )
    first = await reloader.reload("start")
    assert first.warnings == reloader.status.warnings == ["key 'web': no 'helpr'"]
    (tmp_path / "b.yaml").write_text("broken\n")
    assert (await reloader.reload("edit")).result == "rejected"
    assert reloader.status.warnings == ["key 'web': no 'helpr'"]
    (tmp_path / "b.yaml").write_text("y: 2\n")
    with capture_logs() as logs:
        swapped = await reloader.reload("fix")
    assert swapped.result == "swapped" and swapped.warnings == reloader.status.warnings == []
    assert "reload_check_failed" in [entry["event"] for entry in logs]


async def test_loader_crash_is_reported_as_failed(tmp_path: Path) -> None:
    """An unexpected exception in the loader is a 'failed' attempt, not a crash."""

    def load() -> Catalog:
        raise OSError("disk gone")

    reloader = Reloader(_settings(tmp_path, watch=False), CatalogRef(), load=load)
    result = await reloader.reload("x")
    assert result.result == "failed"
    assert result.errors == ["OSError: disk gone"]
    assert result.version is None


async def test_hooks_run_in_order_before_the_swap(tmp_path: Path) -> None:
    """on_swap hooks run in order with the new catalog while the old one is still live."""
    ref = CatalogRef(_catalog("old", tmp_path))
    calls: list[tuple[str, str, str | None]] = []

    def hook(name: str) -> Callable[[Catalog], Awaitable[None]]:
        async def run(cat: Catalog) -> None:
            calls.append((name, cat.version, _version(ref)))

        return run

    reloader = Reloader(
        _settings(tmp_path, watch=False),
        ref,
        load=lambda: _catalog("new", tmp_path),
        on_swap=[hook("sandbox"), hook("knowledge")],
    )
    result = await reloader.reload("x")
    assert result.result == "swapped" and result.previous_version == "old"
    assert calls == [("sandbox", "new", "old"), ("knowledge", "new", "old")]
    assert _version(ref) == "new"


async def test_failing_hook_aborts_swap_and_rolls_back(tmp_path: Path) -> None:
    """A hook that refuses the set keeps the old catalog and re-applies it to earlier hooks."""
    ref = CatalogRef(_catalog("old", tmp_path))
    applied: list[str] = []

    async def first(cat: Catalog) -> None:
        applied.append(cat.version)

    async def second(cat: Catalog) -> None:
        raise RuntimeError("zygote failed to start")

    reloader = Reloader(
        _settings(tmp_path, watch=False),
        ref,
        load=lambda: _catalog("new", tmp_path),
        on_swap=[first, second],
    )
    result = await reloader.reload("x")
    assert result.result == "failed"
    assert "zygote failed to start" in result.errors[0]
    assert _version(ref) == "old"
    assert applied == ["new", "old"]


async def test_concurrent_requests_coalesce_into_one_follow_up(tmp_path: Path) -> None:
    """While a load runs, any number of requests share exactly one follow-up load."""
    gate = threading.Event()
    calls = []

    def load() -> Catalog:
        calls.append(1)
        gate.wait(5)
        return _catalog(f"v{len(calls)}", tmp_path)

    reloader = Reloader(_settings(tmp_path, watch=False), CatalogRef(), load=load)
    first = asyncio.create_task(reloader.reload("first"))
    await _until(lambda: len(calls) == 1)
    followers = [asyncio.create_task(reloader.reload(f"r{i}")) for i in range(5)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(first, *followers)
    assert len(calls) == 2
    assert results[0].version == "v1"
    assert {r.version for r in results[1:]} == {"v2"}
    assert results[1] is results[5]
    assert results[1].reason == "r0 (+4)"


async def test_cancelled_caller_does_not_cancel_the_reload(tmp_path: Path) -> None:
    """A caller going away (client disconnect) still lets the reload finish and swap."""
    gate = threading.Event()
    ref = CatalogRef()

    def load() -> Catalog:
        gate.wait(5)
        return _catalog("v1", tmp_path)

    reloader = Reloader(_settings(tmp_path, watch=False), ref, load=load)
    caller = asyncio.create_task(reloader.reload("x"))
    await asyncio.sleep(0.05)
    caller.cancel()
    gate.set()
    await _until(lambda: ref.current is not None)
    assert _version(ref) == "v1"
    await reloader.aclose()


async def test_watch_off_means_no_watcher_but_manual_reload_works(tmp_path: Path) -> None:
    """GATEWAY_WATCH=false starts no watcher; a write is not picked up, reload() still is."""
    (tmp_path / "a.yaml").write_text("x: 1\n")
    ref = CatalogRef()
    reloader = Reloader(_settings(tmp_path, watch=False), ref, load=DirLoader(tmp_path))
    await reloader.start()
    try:
        await reloader.reload("boot")
        before = _version(ref)
        (tmp_path / "a.yaml").write_text("x: 2\n")
        await asyncio.sleep(0.3)
        assert _version(ref) == before
        assert reloader.status.watching is False
        assert (await reloader.reload("api")).result == "swapped"
    finally:
        await reloader.aclose()


async def test_sighup_triggers_a_reload(tmp_path: Path) -> None:
    """SIGHUP on the main thread reloads the set."""
    (tmp_path / "a.yaml").write_text("x: 1\n")
    ref = CatalogRef()
    reloader = Reloader(_settings(tmp_path, watch=False), ref, load=DirLoader(tmp_path))
    await reloader.start()
    try:
        if not reloader._sighup:
            pytest.skip("signal handlers unavailable here (not the main thread)")
        os.kill(os.getpid(), signal.SIGHUP)
        await _until(lambda: ref.current is not None)
        assert reloader.status.last_attempt is not None
        assert reloader.status.last_attempt.reason == "SIGHUP"
    finally:
        await reloader.aclose()


# -- real file watching -------------------------------------------------------


async def _started(root: Path, ref: CatalogRef, load: DirLoader) -> Reloader:
    reloader = Reloader(_settings(root), ref, load=load)
    await reloader.reload("boot")
    await reloader.start()  # returns once the OS watches are in place
    return reloader


async def test_file_write_is_live_quickly_and_bursts_debounce(tmp_path: Path) -> None:
    """A burst of writes yields one or two reloads and the final content goes live fast."""
    root = tmp_path / "manifests"
    root.mkdir()
    (root / "a.yaml").write_text("x: 0\n")
    ref = CatalogRef()
    load = DirLoader(root)
    reloader = await _started(root, ref, load)
    try:
        before = load.calls
        for i in range(10):
            (root / "a.yaml").write_text(f"x: {i + 1}\n")
            await asyncio.sleep(0.005)
        expected = DirLoader(root)().version
        t0 = time.monotonic()
        await _until(lambda: _version(ref) == expected, timeout=3)
        assert time.monotonic() - t0 < 1.0
        await asyncio.sleep(0.2)
        assert load.calls - before <= 3
        assert reloader.status.watching
    finally:
        await reloader.aclose()
    assert reloader.status.watching is False


async def test_noise_files_do_not_trigger_reloads(tmp_path: Path) -> None:
    """SQLite files and journals written under the root do not cause reloads."""
    root = tmp_path / "manifests"
    (root / "data").mkdir(parents=True)
    (root / "a.yaml").write_text("x: 0\n")
    ref = CatalogRef()
    load = DirLoader(root)
    reloader = await _started(root, ref, load)
    try:
        before = load.calls
        (root / "data" / "shop.db").write_bytes(b"x")
        (root / "data" / "shop.db-journal").write_bytes(b"x")
        await asyncio.sleep(0.4)
        assert load.calls == before
    finally:
        await reloader.aclose()


async def test_git_sync_symlink_swap_is_detected(tmp_path: Path) -> None:
    """Atomically replacing a symlinked checkout (git-sync `current`) reloads the new revision."""
    for rev, value in (("rev1", 1), ("rev2", 2)):
        (tmp_path / rev / "manifests").mkdir(parents=True)
        (tmp_path / rev / "manifests" / "a.yaml").write_text(f"x: {value}\n")
    (tmp_path / "current").symlink_to("rev1")
    root = tmp_path / "current" / "manifests"
    ref = CatalogRef()
    load = DirLoader(root)
    reloader = await _started(root, ref, load)
    try:
        v1 = _version(ref)
        (tmp_path / "current.tmp").symlink_to("rev2")
        (tmp_path / "current.tmp").replace(tmp_path / "current")
        await _until(lambda: _version(ref) != v1, timeout=3)
        assert ref.current is not None
        assert ref.current.root == (tmp_path / "rev2" / "manifests").resolve()
        # The watcher moved to the new revision: edits there count too.
        moved = str((tmp_path / "rev2" / "manifests").resolve())
        await _until(lambda: moved in reloader.status.watched, timeout=3)
        v2 = _version(ref)
        (tmp_path / "rev2" / "manifests" / "b.yaml").write_text("y: 1\n")
        await _until(lambda: _version(ref) != v2, timeout=3)
    finally:
        await reloader.aclose()


async def test_configmap_data_swap_is_detected(tmp_path: Path) -> None:
    """A Kubernetes ConfigMap update (`..data` symlink swap inside the root) reloads."""
    root = tmp_path / "config"
    for rev, value in (("..v1", 1), ("..v2", 2)):
        (root / rev).mkdir(parents=True)
        (root / rev / "a.yaml").write_text(f"x: {value}\n")
    (root / "..data").symlink_to("..v1")
    ref = CatalogRef()

    class ConfigMapLoader(DirLoader):
        def __call__(self) -> Catalog:
            text = (self.root / "..data" / "a.yaml").read_text()
            return _catalog(hashlib.sha256(text.encode()).hexdigest()[:8], self.root)

    reloader = await _started(root, ref, ConfigMapLoader(root))
    try:
        v1 = _version(ref)
        (root / "..data_tmp").symlink_to("..v2")
        (root / "..data_tmp").replace(root / "..data")
        shutil.rmtree(root / "..v1")
        await _until(lambda: _version(ref) != v1, timeout=3)
    finally:
        await reloader.aclose()


async def test_deleted_and_recreated_root_is_followed(tmp_path: Path) -> None:
    """Deleting and recreating the root reloads, and later edits in the new directory count."""
    root = tmp_path / "manifests"
    root.mkdir()
    (root / "a.yaml").write_text("x: 1\n")
    ref = CatalogRef()
    reloader = await _started(root, ref, DirLoader(root))
    try:
        v1 = _version(ref)
        shutil.rmtree(root)
        root.mkdir()
        (root / "a.yaml").write_text("x: 2\n")
        await _until(lambda: _version(ref) != v1, timeout=3)
        await asyncio.sleep(0.3)
        v2 = _version(ref)
        (root / "b.yaml").write_text("y: 1\n")
        await _until(lambda: _version(ref) != v2, timeout=3)
    finally:
        await reloader.aclose()


# -- the watch plan -----------------------------------------------------------


def test_plan_watches_code_and_knowledge_outside_the_root(tmp_path: Path) -> None:
    """Code and knowledge files outside the manifests root are watched; top-level code flatly."""
    root = tmp_path / "manifests"
    (root / "docs").mkdir(parents=True)
    (tmp_path / "actions").mkdir()
    (tmp_path / "kb").mkdir()
    code = tmp_path / "actions" / "weather.py"
    top = tmp_path / "tool.py"
    faq = tmp_path / "kb" / "faq.md"
    inner = root / "docs" / "manual.md"
    cat = _catalog("v", root, code_files=(code, top), knowledge_files=(faq, inner))
    plan = make_plan(root, cat)
    real = tmp_path.resolve()
    assert plan.recursive == tuple(sorted((str(real / "actions"), str(real / "manifests"))))
    assert str(real) in plan.flat and str(real / "kb") in plan.flat
    assert relevant(str(real / "kb" / "faq.md"), plan)
    assert not relevant(str(real / "kb" / "other.md"), plan)
    assert relevant(str(real / "tool.py"), plan)
    assert not relevant(str(real / "README.md"), plan)
    assert relevant(str(real / "manifests"), plan)  # the root itself replaced
    assert relevant(str(real / "manifests" / "docs" / "manual.md"), plan)
    assert not relevant(str(real / "manifests" / "data" / "shop.db-wal"), plan)


async def test_code_fix_after_a_failed_first_load_is_noticed(tmp_path: Path) -> None:
    """With no live set yet, Python packages next to the root are watched, so a code fix reloads."""
    root = tmp_path / "manifests"
    root.mkdir()
    (tmp_path / "acts").mkdir()
    (tmp_path / "acts" / "__init__.py").write_text("")
    code = tmp_path / "acts" / "tools.py"
    code.write_text("def f(:\n")

    def load() -> Catalog:
        if "(:" in code.read_text():
            raise ManifestError([Problem(file="a.yaml", line=4, col=3, message="cannot import")])
        return _catalog("fixed", root, code_files=(code,))

    ref = CatalogRef()
    reloader = Reloader(_settings(root), ref, load=load)
    assert (await reloader.reload("startup")).result == "rejected"
    await reloader.start()
    try:
        code.write_text("def f():\n    return 1\n")
        await _until(lambda: _version(ref) == "fixed", timeout=3)
    finally:
        await reloader.aclose()


async def test_knowledge_file_outside_the_root_triggers_a_reload(tmp_path: Path) -> None:
    """Editing a knowledge file the catalog names (outside the root) reloads the set."""
    root = tmp_path / "manifests"
    root.mkdir()
    (tmp_path / "kb").mkdir()
    faq = tmp_path / "kb" / "faq.md"
    faq.write_text("v1")

    def load() -> Catalog:
        return _catalog(faq.read_text(), root, knowledge_files=(faq,))

    ref = CatalogRef()
    reloader = Reloader(_settings(root), ref, load=load)
    await reloader.reload("startup")
    await reloader.start()
    try:
        faq.write_text("v2")
        await _until(lambda: _version(ref) == "v2", timeout=3)
        unchanged = reloader.status.reloads["unchanged"]
        (tmp_path / "kb" / "other.md").write_text("not ours")
        await asyncio.sleep(0.3)
        assert reloader.status.reloads["unchanged"] == unchanged  # an unrelated file: no reload
    finally:
        await reloader.aclose()


async def test_root_that_is_itself_a_swapped_symlink_is_followed(tmp_path: Path) -> None:
    """GATEWAY_MANIFESTS pointing at a symlink that gets replaced reloads the new target."""
    for rel, value in (("r1", 1), ("r2", 2)):
        (tmp_path / "releases" / rel).mkdir(parents=True)
        (tmp_path / "releases" / rel / "a.yaml").write_text(f"x: {value}\n")
    root = tmp_path / "manifests"
    root.symlink_to(tmp_path / "releases" / "r1")
    ref = CatalogRef()
    reloader = await _started(root, ref, DirLoader(root))
    try:
        v1 = _version(ref)
        tmp = tmp_path / "manifests.tmp"
        tmp.symlink_to(tmp_path / "releases" / "r2")
        tmp.replace(root)
        await _until(lambda: _version(ref) != v1, timeout=3)
        target = str((tmp_path / "releases" / "r2").resolve())
        await _until(lambda: reloader.status.watched[:1] == [target], timeout=3)
    finally:
        await reloader.aclose()


async def test_a_knowledge_file_turned_symlink_loop_does_not_stop_watching(tmp_path: Path) -> None:
    """A watched path that becomes a symlink loop is rejected; the next fix still goes live.

    Re-planning resolved it with pathlib, whose RuntimeError killed the watch
    task: hot reload then stopped for good, silently, until a restart.
    """
    root = tmp_path / "manifests"
    root.mkdir()
    (tmp_path / "kb").mkdir()
    faq = tmp_path / "kb" / "faq.md"
    faq.write_text("v1")

    def load() -> Catalog:
        try:
            text = faq.read_text()
        except OSError as exc:
            raise ManifestError([Problem(file="a.yaml", line=1, col=1, message=str(exc))]) from None
        return _catalog(text, root, knowledge_files=(faq,))

    ref = CatalogRef()
    reloader = Reloader(_settings(root), ref, load=load)
    await reloader.reload("startup")
    await reloader.start()
    try:
        faq.unlink()
        faq.symlink_to("faq.md")
        await _until(lambda: reloader.status.reloads["rejected"] >= 1, timeout=3)
        await asyncio.sleep(0.3)
        assert reloader.status.watching
        faq.unlink()
        faq.write_text("v3")
        await _until(lambda: _version(ref) == "v3", timeout=5)
    finally:
        await reloader.aclose()


@pytest.mark.parametrize(
    ("exc", "limit"),
    [
        # What watchfiles raises at the limits (seen under unshare with the limit lowered).
        (
            OSError(
                'OS file watch limit reached. about ["/m/a/b"] '
                '(Error { kind: MaxFilesWatch, paths: ["/m/a/b"] })'
            ),
            True,
        ),
        (
            RuntimeError("Error creating recommended watcher: Too many open files (os error 24)"),
            True,
        ),
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EMFILE, "Too many open files"), True),
        # Other failures are retried (and polled only if they persist), not taken for the limit.
        (OSError(errno.EIO, "Input/output error"), False),
        (OSError(errno.ELOOP, "Too many levels of symbolic links"), False),
        (OSError("Input/output error (os error 5) (Error { kind: Io(...) })"), False),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory"), False),
        (FileNotFoundError(errno.ENOENT, "gone"), False),
        (PermissionError(errno.EACCES, "denied"), False),
    ],
)
def test_only_the_inotify_limits_count_as_the_limit(exc: BaseException, limit: bool) -> None:
    """Only ENOSPC (max_user_watches) and EMFILE (max_user_instances) switch to polling at once.

    Any OSError counted as the limit: an NFS hiccup (EIO) switched the gateway to
    polling for good, with a hint to raise inotify limits that were never reached.
    """
    assert _limit_reached(exc) is limit


async def test_a_push_with_thousands_of_problems_is_reported_bounded(tmp_path: Path) -> None:
    """A push with 87,000 problems stalled the event loop and logged 87,003 lines (and
    again at every later rejected reload), and the status body was 11 MB: the first
    ``MAX_REPORTED_PROBLEMS`` are kept and logged, then one line counts the rest."""
    import gateway.executors  # noqa: F401 - registers the action kinds
    from gateway.manifests.loader import load_catalog
    from gateway.manifests.watch import MAX_REPORTED_PROBLEMS

    count = MAX_REPORTED_PROBLEMS + 150
    (tmp_path / "a.yaml").write_text(
        "".join(f"---\nkind: assistant\nname: a{i}\nbogus: 1\n" for i in range(count))
    )
    reloader = Reloader(
        _settings(tmp_path, watch=False),
        CatalogRef(),
        load=lambda: load_catalog(tmp_path, environ={}, gateway_root=tmp_path),
    )
    for attempt in range(2):
        with capture_logs() as logs:
            result = await reloader.reload(f"push {attempt}")
        assert result.result == "rejected"
        assert len(result.errors) == MAX_REPORTED_PROBLEMS + 1
        assert "a.yaml:4:1: unknown field 'bogus'" in result.errors[0]
        assert result.errors[-1] == (
            f"... and 150 more problem(s) ({count} in all; gateway validate lists every one)"
        )
        assert reloader.status.last_attempt == result
        problems = [e for e in logs if e["event"] == "reload_problem"]
        assert [e["problem"] for e in problems] == result.errors
        [summary] = [e for e in logs if e["event"] == "reload_rejected"]
        assert summary["errors"] == count
