"""Hot reload: watch the manifests, the action code and the knowledge files; swap safely.

``Reloader`` owns the reload cycle of a running gateway. A change (a file
event from watchfiles, ``SIGHUP``, or ``POST /manifests/reload``) calls
``reload(reason)``, which loads and validates the whole set in a worker thread
(``asyncio.to_thread``), and swaps it in only when it is fully valid and its
version differs from the live one. Reload requests coalesce: one load runs at
a time, and every request that arrives meanwhile shares the single load that
starts right after it, so a caller always gets a result that saw its change.
A load that finds problems while another request is already waiting is not
reported (``reload_superseded``, at info): a pull landing while it ran may have
been read half, and the next load, which reads all of it, answers everyone.

Swap order (why new calls run new code): the ``on_swap`` hooks are awaited
*before* the one assignment ``catalog_ref.current = new``. The sandbox hook
(``Supervisor.reload``) therefore has the new zygotes up before any run can
read the new catalog; calls already running finish on the old zygotes, and
runs already going keep the catalog object they read when they started. When
a hook fails, the hooks that already ran are called again with the live
catalog (best effort) and the live set stays.

Symlink swaps (git-sync's ``current -> rev``, Kubernetes ConfigMaps'
``..data -> ..2026_...``) and a deleted-then-recreated root are followed: the
watcher watches the resolved real directories recursively and, without
recursion, the directory holding every symlink on the way to the root and the
root's parent; every event re-resolves the paths, and when one of those paths
was replaced (a link target, an inode) the watchers restart on the new paths,
followed by one more reload for writes made while they moved. Unrelated files
(SQLite databases and journals under the root, logs next to it) are filtered
before they wake anything. When the OS refuses watches (inotify limits) the
watcher polls instead, says so in the log and in the status; when watching
keeps failing otherwise, it backs off and then polls. Polling is ``_poll``'s
own (stats to the nanosecond, ctime included), not watchfiles' poller, which
compares mtimes to the second.

A file name that is not UTF-8 makes watchfiles' watcher raise: it is watched
anew (not counted as a failure) and the load reports the name, escaped.

Imports: ``gateway.settings``, ``gateway.errors``, ``gateway._unicode``,
``gateway.manifests.catalog``, ``._watch_paths`` (what to watch) and watchfiles,
msgspec, structlog only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import msgspec
import structlog
from watchfiles import Change, DefaultFilter, awatch

from gateway._unicode import fs_text
from gateway.errors import ManifestError
from gateway.manifests._watch_paths import WatchPlan, inside, make_plan, relevant
from gateway.manifests.catalog import Catalog, CatalogRef
from gateway.settings import Settings

__all__ = ["MAX_REPORTED_PROBLEMS", "ReloadResult", "ReloadStatus", "Reloader", "ResultKind"]

ResultKind = Literal["swapped", "unchanged", "rejected", "failed"]
"""How a reload ended: new set live, same version (nothing to do), invalid set
refused (``errors`` lists every problem as ``file:line:col: message``), or an
unexpected failure (loader crash, a hook refused the set)."""

RESULTS: tuple[ResultKind, ...] = ("swapped", "unchanged", "rejected", "failed")
_MAX_DEBOUNCE_MS = 2000  # cap for a burst that never goes quiet (a long checkout)
_RETRY_S = 0.25  # pause before re-planning after a watcher stopped on its own
_POLL_AFTER_ERRORS = 3  # consecutive watcher failures before polling instead of inotify
MAX_REPORTED_PROBLEMS = 100
"""Problems of a rejected set kept in its result (the status) and logged; one more line
counts the rest (``gateway validate`` lists every one)."""

log = structlog.get_logger("gateway.reload")


class ReloadResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one reload attempt.

    Attributes:
        result: ``swapped`` | ``unchanged`` | ``rejected`` | ``failed``.
        reason: why it ran (``watch: manifests/a.yaml``, ``SIGHUP``, ``api``...).
        version: the live version after the attempt (None: nothing loaded yet).
        previous_version: the live version before it.
        attempted_version: the version of the set that was loaded, if it loaded.
        errors: every problem, ``file:line:col: message``, empty unless rejected/failed; the
            first ``MAX_REPORTED_PROBLEMS`` and a line counting the others when more.
        warnings: what the ``check`` hook found wrong with the set it loaded that does not
            stop it from serving (swapped or unchanged only; never a secret).
        at: UNIX time the attempt finished.
        duration_ms: load + validate + swap time.
    """

    result: ResultKind
    reason: str
    version: str | None
    previous_version: str | None = None
    attempted_version: str | None = None
    errors: list[str] = []
    warnings: list[str] = []
    at: float = 0.0
    duration_ms: float = 0.0


class ReloadStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What ``GET /manifests/status`` shows (no secrets: paths, versions, problems).

    Attributes:
        version / loaded_at / root / files: the live set (None / empty before the first).
        watching: whether file watching is on (``GATEWAY_WATCH``).
        polling: whether it polls (every 300 ms) instead of OS events: asked for
            (``WATCHFILES_FORCE_POLLING``), or the OS refused watches (inotify limits) or
            kept failing (logged as ``reload_watch_polling``).
        watched: the real directories being watched (recursive first).
        warnings: the ``check`` hook's warnings about the live set (a client key limited
            to an assistant it does not have...), as of its newest load; the route
            (``gateway.api.admin``) adds the knowledge files that failed to parse.
        last_attempt: the newest attempt; a rejected one stays here with its
            errors until a later attempt succeeds.
        reloads: attempts by result, for ``reloads_total{result}``.
    """

    version: str | None
    loaded_at: float | None
    root: str | None
    files: list[str]
    watching: bool
    polling: bool
    watched: list[str]
    warnings: list[str]
    last_attempt: ReloadResult | None
    reloads: dict[str, int]


class _Batch(NamedTuple):
    generation: int
    paths: frozenset[str]
    ended: bool = False


class Reloader:
    """Watches the manifest set and swaps in every valid new version.

    Args:
        settings: ``manifests`` (root to watch), ``watch``, ``reload_debounce_ms``.
        catalog_ref: the live catalog; replaced in one assignment.
        load: builds a validated ``Catalog`` from disk (blocking; raises
            ``ManifestError`` listing every problem). Runs in a worker thread.
        on_swap: awaited in order with the new catalog *before* it goes live
            (e.g. ``supervisor.reload``); one raising aborts the swap.
        on_result: called with every ``ReloadResult`` (e.g. to bump a
            Prometheus counter); exceptions from it are logged, not raised.
        on_refresh: awaited in order with the live catalog after a load that did not
            swap (rejected, unchanged): the checkout may have moved under it all the
            same (git-sync's ``current`` now names another revision, and deletes the
            one the live set came from), so ``supervisor.reload`` re-resolves what its
            zygotes may read. Exceptions are logged, not raised.
        check: called with every valid set loaded (swapped in, or the live version
            again); returns warnings that do not stop it from serving, each logged as
            ``reload_warning`` and shown in the result and the status. Its exceptions
            are logged, not raised.
    """

    def __init__(
        self,
        settings: Settings,
        catalog_ref: CatalogRef,
        *,
        load: Callable[[], Catalog],
        on_swap: Sequence[Callable[[Catalog], Awaitable[None]]] = (),
        on_result: Callable[[ReloadResult], None] | None = None,
        check: Callable[[Catalog], list[str]] | None = None,
        on_refresh: Sequence[Callable[[Catalog], Awaitable[None]]] = (),
    ) -> None:
        self._settings = settings
        self._ref = catalog_ref
        self._load = load
        self._on_swap = tuple(on_swap)
        self._on_result = on_result
        self._on_refresh = tuple(on_refresh)
        self._check = check
        self._warnings: list[str] = []  # the live set's, from its newest load
        self._counts: dict[str, int] = dict.fromkeys(RESULTS, 0)
        self._last: ReloadResult | None = None
        # Coalescing: the future every request made while a load runs will share.
        self._next: asyncio.Future[ReloadResult] | None = None
        self._reasons: list[str] = []
        self._drainer: asyncio.Task[None] | None = None
        # Watching.
        self._watch_task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[_Batch] | None = None
        self._plan: WatchPlan | None = None
        self._generation = 0
        self._stop = asyncio.Event()
        self._kicks: set[asyncio.Task[ReloadResult]] = set()
        self._sighup = False
        self._ready = asyncio.Event()  # set while the current watchers are in place
        self._errors = 0  # consecutive watcher failures
        # Poll (``_poll``) instead of OS events: asked for, or the OS refuses watches.
        self._polling = settings.watch_polling

    # -- public API ---------------------------------------------------------

    @property
    def status(self) -> ReloadStatus:
        """The live set, the newest attempt and the counters, as one Struct."""
        cat = self._ref.current
        plan = self._plan
        return ReloadStatus(
            version=cat.version if cat else None,
            loaded_at=cat.loaded_at if cat else None,
            root=str(cat.root) if cat else None,
            files=list(cat.files) if cat else [],
            watching=self._watch_task is not None and not self._watch_task.done(),
            polling=self._polling,
            watched=[fs_text(p) for p in (*plan.recursive, *plan.flat)] if plan else [],
            warnings=list(self._warnings),
            last_attempt=self._last,
            reloads=dict(self._counts),
        )

    async def start(self) -> None:
        """Install the ``SIGHUP`` handler and, unless ``watch`` is off, start watching.

        Returns once the OS watches are in place, so a write right after is seen. When
        a set was loaded before (the gateway's first load), it is loaded once more
        then: a write made while that load ran and the sandbox started (a git-sync
        flip at pod start) made no event, and would stay unseen until the next push.
        """
        self._stop.clear()
        self._install_sighup()
        if self._settings.watch and self._watch_task is None:
            self._queue = asyncio.Queue()
            self._watch_task = asyncio.create_task(self._watch_loop(), name="gateway-reload-watch")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout=5.0)
            if self._last is not None:
                await self.reload("watch: rescan after start")

    async def aclose(self) -> None:
        """Stop watching, remove the signal handler and wait for a running reload."""
        self._stop.set()
        if self._sighup:
            with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False
        if self._watch_task is not None:
            task, self._watch_task = self._watch_task, None
            try:
                await asyncio.wait_for(task, timeout=2.0)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for kick in list(self._kicks):
            kick.cancel()
        if self._drainer is not None and not self._drainer.done():
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer

    async def reload(self, reason: str) -> ReloadResult:
        """Load, validate and (if valid and new) swap in the manifest set.

        Concurrent calls coalesce: while one load runs, later calls wait for
        the single load that starts after it, and all of them get its result.
        Cancelling the caller does not cancel the reload.

        Args:
            reason: why (shown in the status and logs).

        Returns:
            The ``ReloadResult`` of the attempt that covered this request.
        """
        loop = asyncio.get_running_loop()
        if self._next is None:
            self._next = loop.create_future()
        fut = self._next
        self._reasons.append(reason)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="gateway-reload")
        return await asyncio.shield(fut)

    # -- reload cycle -------------------------------------------------------

    async def _drain(self) -> None:
        waiting: list[asyncio.Future[ReloadResult]] = []  # answered by the next result
        while self._next is not None:
            fut, self._next = self._next, None
            waiting.append(fut)
            reasons, self._reasons = self._reasons, []
            reason = reasons[0] if len(reasons) == 1 else f"{reasons[0]} (+{len(reasons) - 1})"
            try:
                result = await self._reload_once(reason)
            except asyncio.CancelledError:  # shutdown: waiters are cancelled too
                for waiter in waiting:
                    waiter.cancel()
                raise
            except Exception as exc:  # a bug in a hook or the bookkeeping: tell the waiters
                for waiter in waiting:
                    if not waiter.done():
                        waiter.set_exception(exc)
                        waiter.exception()  # mark retrieved: a waiter may have gone away
                waiting = []
                continue
            if result is None:  # superseded: the load that starts now answers them too
                continue
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_result(result)
            waiting = []

    async def _reload_once(self, reason: str) -> ReloadResult | None:
        """One load and, if valid and new, the swap; None when superseded (see below)."""
        started = time.perf_counter()
        live = self._ref.current
        live_version = live.version if live else None
        try:
            new = await asyncio.to_thread(self._load)
        except ManifestError as exc:
            total = len(exc.problems)
            if self._next is not None:
                # A change arrived while this load ran (a pull landing file by file): the
                # load may have read half of it, and the one about to start reads it all.
                # Its result is the one to report, not an error for a state never pushed.
                log.info("reload_superseded", reason=reason, problems=total)
                return None
            # Bounded: a push may hold a hundred thousand problems, and every rejected
            # reload logs them and the status carries them.
            errors = [str(p) for p in exc.problems[:MAX_REPORTED_PROBLEMS]] or [exc.message]
            if total > MAX_REPORTED_PROBLEMS:
                errors.append(
                    f"... and {total - MAX_REPORTED_PROBLEMS} more problem(s) ({total} in all; "
                    "gateway validate lists every one)"
                )
            await self._refresh(live)
            return self._finish(
                "rejected", reason, live_version, started, errors=errors, total=total
            )
        except Exception as exc:  # a loader bug must not kill the watcher; report it
            log.exception("reload_load_crashed", reason=reason)
            errors = [f"{type(exc).__name__}: {exc}"]
            return self._finish("failed", reason, live_version, started, errors=errors)
        warnings = self._warnings_of(new)
        if live is not None and new.version == live.version:
            self._warnings = warnings
            await self._refresh(live)
            return self._finish(
                "unchanged",
                reason,
                live_version,
                started,
                attempted=new.version,
                warnings=warnings,
            )
        done: list[Callable[[Catalog], Awaitable[None]]] = []
        for hook in self._on_swap:
            try:
                await hook(new)
            except Exception as exc:
                log.exception("reload_hook_failed", hook=_name(hook), version=new.version)
                await self._roll_back(done, live)
                errors = [f"{_name(hook)}: {type(exc).__name__}: {exc}"]
                return self._finish(
                    "failed", reason, live_version, started, attempted=new.version, errors=errors
                )
            done.append(hook)
        self._ref.current = new  # the one swap
        self._warnings = warnings
        if self._queue is not None:  # code dirs or knowledge files may have moved
            self._queue.put_nowait(_Batch(-1, frozenset()))
        return self._finish(
            "swapped", reason, live_version, started, attempted=new.version, warnings=warnings
        )

    def _warnings_of(self, catalog: Catalog) -> list[str]:
        if self._check is None:
            return []
        try:
            return self._check(catalog)
        except Exception:  # a bug in the check must not stop a valid set; say it
            log.exception("reload_check_failed", version=catalog.version)
            return []

    async def _refresh(self, live: Catalog | None) -> None:
        """Run the ``on_refresh`` hooks with the live catalog (see ``__init__``)."""
        if live is None:
            return
        for hook in self._on_refresh:
            try:
                await hook(live)
            except Exception:
                log.exception("reload_refresh_failed", hook=_name(hook))

    async def _roll_back(
        self, hooks: Iterable[Callable[[Catalog], Awaitable[None]]], live: Catalog | None
    ) -> None:
        if live is None:
            return
        for hook in hooks:
            try:
                await hook(live)
            except Exception:
                log.exception("reload_rollback_failed", hook=_name(hook))

    def _finish(
        self,
        result: ResultKind,
        reason: str,
        previous: str | None,
        started: float,
        *,
        attempted: str | None = None,
        errors: list[str] | None = None,
        warnings: list[str] | None = None,
        total: int | None = None,
    ) -> ReloadResult:
        """Record and log one attempt; ``total``: the problems found, when ``errors`` keeps
        only the first of them."""
        live = self._ref.current
        # Never text UTF-8 cannot carry (a file name that is not UTF-8 in a reason or
        # an error): the status and the log could not encode it.
        res = ReloadResult(
            result=result,
            reason=fs_text(reason),
            version=live.version if live else None,
            previous_version=previous,
            attempted_version=attempted,
            errors=[fs_text(e) for e in errors or ()],
            warnings=warnings or [],
            at=time.time(),
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        self._counts[result] += 1
        self._last = res
        fields = {"reason": res.reason, "version": res.version, "duration_ms": res.duration_ms}
        if result == "swapped":
            log.info("reload_swapped", previous_version=previous, **fields)
        elif result == "unchanged":
            log.debug("reload_unchanged", **fields)
        else:
            count = len(res.errors) if total is None else total
            log.error(f"reload_{result}", errors=count, **fields)
            for error in res.errors:
                log.error("reload_problem", problem=error)
        for warning in res.warnings:
            log.warning("reload_warning", warning=warning, version=res.version)
        if self._on_result is not None:
            try:
                self._on_result(res)
            except Exception:
                log.exception("reload_on_result_failed")
        return res

    # -- triggers -----------------------------------------------------------

    def _kick(self, reason: str, delay_ms: int = 0) -> None:
        """Start a reload without waiting for it (watch events, SIGHUP)."""

        async def run() -> ReloadResult:
            if delay_ms:
                await asyncio.sleep(delay_ms / 1000)
            return await self.reload(reason)

        task = asyncio.create_task(run())
        self._kicks.add(task)
        task.add_done_callback(self._kick_done)

    def _kick_done(self, task: asyncio.Task[ReloadResult]) -> None:
        self._kicks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("reload_crashed", error=f"{type(exc).__name__}: {exc}")

    def _install_sighup(self) -> None:
        if self._sighup or threading.current_thread() is not threading.main_thread():
            return
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._kick, "SIGHUP")
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            return  # no signals here (not the main thread, Windows): manual reload only
        self._sighup = True

    # -- watching -----------------------------------------------------------

    def _make_plan(self) -> WatchPlan:
        return make_plan(
            self._settings.manifests, self._ref.current, gateway_root=self._settings.root
        )

    async def _watch_loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        rewatched = False
        while not self._stop.is_set():
            plan = self._make_plan()
            self._generation += 1
            gen = self._generation
            stop = asyncio.Event()
            self._ready.clear()
            ready = [asyncio.Event(), asyncio.Event()]
            streams = [
                asyncio.create_task(self._stream(gen, plan, True, stop, ready[0])),
                asyncio.create_task(self._stream(gen, plan, False, stop, ready[1])),
            ]
            await asyncio.gather(*(r.wait() for r in ready))
            self._plan = plan  # status.watched shows what is really watched
            self._ready.set()
            log.debug("reload_watching", recursive=plan.recursive, flat=plan.flat)
            if rewatched:
                # Writes between the old watchers stopping and the new ones starting
                # are not seen as events: look once more when the new ones are up.
                self._kick("watch: rescan after re-watch", self._settings.reload_debounce_ms)
            try:
                rewatched = await self._consume(queue, gen, plan)
            finally:
                stop.set()
                await asyncio.gather(*streams, return_exceptions=True)

    async def _consume(self, queue: asyncio.Queue[_Batch], gen: int, plan: WatchPlan) -> bool:
        """Handle batches until the plan must change (True) or we stop (False)."""
        stopper = asyncio.create_task(self._stop.wait())
        try:
            while True:
                getter = asyncio.create_task(queue.get())
                await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    return False
                batch = getter.result()
                if batch.generation not in (gen, -1):
                    continue  # from watchers already replaced
                # Name a file that still exists (not an editor's or sed's temp file).
                hits = sorted(
                    (p for p in batch.paths if relevant(p, plan)),
                    key=lambda p: (not Path(p).exists(), p),
                )
                # A path on the way to the root (a symlink, the root itself) was
                # replaced: watch it anew even when the inode number was reused.
                moved = any(p in plan.anchors for p in hits) or (self._make_plan() != plan)
                # A new directory: watchfiles' thread adds its OS watch and drops the
                # error when the inotify limit refuses it; watching anew raises it.
                moved = moved or (not self._polling and any(_new_dir(p, plan) for p in hits))
                if batch.generation != -1 and (hits or moved):
                    what = fs_text(hits[0]) if hits else "watched path moved"
                    more = f" (+{len(hits) - 1})" if len(hits) > 1 else ""
                    self._kick(f"watch: {what}{more}")
                if batch.generation == -1 and not moved:
                    continue
                if batch.ended and not moved:
                    # Back off while watching keeps failing (inotify limits, a vanished path).
                    await asyncio.sleep(min(5.0, _RETRY_S * 2 ** min(self._errors, 5)))
                if moved or batch.ended:
                    return True
        finally:
            stopper.cancel()

    async def _stream(
        self, gen: int, plan: WatchPlan, recursive: bool, stop: asyncio.Event, ready: asyncio.Event
    ) -> None:
        paths = plan.recursive if recursive else plan.flat
        if not paths:
            ready.set()
            return

        def keep(change: Change, path: str) -> bool:
            # Filtering here (not after) keeps unrelated writes, e.g. a log file
            # or a database next to the root, from waking the reloader at all.
            return _FILTER(change, path) and relevant(path, plan)

        if self._polling:
            await self._poll(gen, paths, recursive, keep, stop, ready)
            return
        assert self._queue is not None
        debounce_ms = max(1, self._settings.reload_debounce_ms)
        pending: asyncio.Future[set[tuple[Change, str]]] | None = None
        # Watch errors are raised, not ignored: watchfiles' ignore_permission_denied
        # drops *every* error of adding a watch, the inotify limit included, and a
        # recursive watch stops at the first directory it cannot watch, which left
        # the rest of the tree unwatched in silence. After a PermissionError (a
        # directory this user may not read, an ext4 volume's lost+found) each
        # readable directory is watched on its own (new ones: see ``_new_dir``).
        lenient = False
        watched, deep = paths, recursive
        try:
            while True:
                changes_of = awatch(
                    *watched,
                    watch_filter=keep,
                    debounce=max(_MAX_DEBOUNCE_MS, debounce_ms),
                    step=debounce_ms,
                    stop_event=stop,
                    recursive=deep,
                    ignore_permission_denied=lenient,
                    force_polling=False,  # see _poll; WATCHFILES_FORCE_POLLING is a setting
                )
                # The generator sets up the OS watches synchronously on its first step,
                # before it first waits: once that step has run, we are watching.
                pending = asyncio.ensure_future(anext(changes_of))
                await asyncio.sleep(0)
                refused = pending.exception() if pending.done() else None
                if isinstance(refused, PermissionError) and not lenient:
                    lenient = True
                    if recursive:
                        watched, unreadable = await asyncio.to_thread(_readable_dirs, paths)
                        deep = False
                    else:
                        unreadable = [str(refused)]
                    log.warning("reload_watch_unreadable", unreadable=unreadable[:20])
                elif refused is not None and _limit_reached(refused):
                    self._poll_instead(refused)
                    await self._poll(gen, paths, recursive, keep, stop, ready)
                    return
                else:
                    break
            ready.set()
            while True:
                try:
                    changes = await pending
                except StopAsyncIteration:
                    break
                self._errors = 0
                self._queue.put_nowait(_Batch(gen, frozenset(p for _, p in changes)))
                pending = asyncio.ensure_future(anext(changes_of))
        except Exception as exc:  # a path vanished, or the OS refuses more watches
            self._watch_failed(exc)
        finally:
            ready.set()
            if pending is not None and not pending.done():
                pending.cancel()  # we were cancelled: stop the watcher thread too
        if not stop.is_set():
            self._queue.put_nowait(_Batch(gen, frozenset(), ended=True))

    def _watch_failed(self, exc: Exception) -> None:
        """Count a watcher's failure; poll from now on once watching keeps failing."""
        if (undecodable := _undecodable(exc)) is not None:
            # An event for a name that is not UTF-8 ends watchfiles' watcher: watch
            # anew (the rescan that follows reloads, and the load names the file).
            # Not a failure of watching: counted, three such pushes made it poll.
            log.warning("reload_watch_undecodable_name", error=undecodable)
            return
        self._errors += 1
        log.warning("reload_watch_error", error=f"{type(exc).__name__}: {exc}")
        if not self._polling and (_limit_reached(exc) or self._errors >= _POLL_AFTER_ERRORS):
            self._poll_instead(exc)

    async def _poll(
        self,
        gen: int,
        paths: tuple[str, ...],
        recursive: bool,
        keep: Callable[[Change, str], bool],
        stop: asyncio.Event,
        ready: asyncio.Event,
    ) -> None:
        """Watch ``paths`` by comparing stats every ``_POLL_S``, until ``stop``.

        Not watchfiles' poller: it compares modification times to the second, so
        a second write within the second of the one just seen (two quick pushes,
        a checkout that keeps sizes) went unseen for good. Here every entry's
        inode, size, mtime and ctime (nanoseconds; the kernel sets ctime on every
        write, even one whose mtime is set back) are compared. Changes are sent
        as one batch once a poll finds nothing new (or after ``_MAX_DEBOUNCE_MS``).
        """
        assert self._queue is not None
        try:
            before = await asyncio.to_thread(_stats, paths, recursive)
        finally:
            ready.set()
        changed: set[str] = set()
        since = 0.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _POLL_S)
            if stop.is_set():
                return
            now = await asyncio.to_thread(_stats, paths, recursive)
            new = {
                p
                for p in before.keys() | now.keys()
                if before.get(p) != now.get(p) and keep(Change.modified, p)
            }
            before = now
            if new and not changed:
                since = time.monotonic()
            changed |= new
            overdue = changed and time.monotonic() - since > _MAX_DEBOUNCE_MS / 1000
            if changed and (not new or overdue):
                self._queue.put_nowait(_Batch(gen, frozenset(changed)))
                changed = set()

    def _poll_instead(self, exc: BaseException) -> None:
        """Watch by polling from now on (the OS refuses watches; polling still works)."""
        if self._polling:  # the other stream said it already
            return
        self._polling = True
        log.warning(
            "reload_watch_polling",
            error=f"{type(exc).__name__}: {exc}",
            after_errors=self._errors,
            hint="the OS refused file watches: raise fs.inotify.max_user_watches "
            "(or max_user_instances) for events instead of polling"
            if _limit_reached(exc)
            else "watching kept failing (see reload_watch_error); restart to use events again",
        )


def _readable_dirs(tops: Iterable[str]) -> tuple[tuple[str, ...], list[str]]:
    """Every directory under ``tops`` that can be listed, and the ones that cannot.

    Symlinks are followed (as the loader does), each real directory once;
    directories watchfiles' filter ignores (``.git``, ``__pycache__``...) are left out.
    """
    readable: list[str] = []
    unreadable: list[str] = []
    seen: set[str] = set()

    def refused(exc: OSError) -> None:
        unreadable.append(str(exc.filename))

    for top in tops:
        for current, dirs, _ in os.walk(top, onerror=refused, followlinks=True):
            real = os.path.realpath(current)
            if real in seen:
                dirs[:] = []
                continue
            seen.add(real)
            readable.append(current)
            dirs[:] = [d for d in dirs if d not in _FILTER.ignore_dirs]
    return tuple(readable), unreadable


def _new_dir(path: str, plan: WatchPlan) -> bool:
    """Whether ``path`` is a real directory inside a recursively watched tree."""
    real = Path(path)
    return inside(path, plan.recursive) and real.is_dir() and not real.is_symlink()


def _undecodable(exc: BaseException) -> str | None:
    """watchfiles' message refusing an event's path that is not UTF-8, if ``exc`` is that
    (alone, or all of an exception group: anyio's task group wraps it)."""
    if isinstance(exc, BaseExceptionGroup):
        found = [_undecodable(e) for e in exc.exceptions]
        return found[0] if found and all(found) else None
    text = str(exc)
    return text if isinstance(exc, RuntimeError) and text.startswith("Unable to decode") else None


def _limit_reached(exc: BaseException | None) -> bool:
    """Whether ``exc`` says the OS refuses more watches (inotify watch or instance limits).

    ``inotify_add_watch`` fails with ENOSPC at ``max_user_watches`` (watchfiles says
    "OS file watch limit reached", notify's ``MaxFilesWatch``) and ``inotify_init``
    with EMFILE at ``max_user_instances`` ("Too many open files (os error 24)").
    Nothing else counts: a vanished path is re-planned, an unreadable directory
    skipped, and any other failure (EIO on NFS...) retried, polled only if it persists.
    """
    if exc is None or isinstance(exc, FileNotFoundError | PermissionError):
        return False
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in (errno.ENOSPC, errno.EMFILE)
    text = str(exc)
    return (
        "MaxFilesWatch" in text
        or "watch limit reached" in text.lower()
        or any(f"(os error {code})" in text for code in (errno.ENOSPC, errno.EMFILE))
    )


_FILTER = DefaultFilter()  # ignores .git, __pycache__, *.pyc, editor swap files
_POLL_S = 0.3  # how often ``_poll`` looks (watchfiles' poll delay)


def _stats(paths: Iterable[str], recursive: bool) -> dict[str, tuple[int, int, int, int]]:
    """(inode, size, mtime_ns, ctime_ns) of every entry under ``paths``.

    Recursively, symlinked directories are entered as the loader does (each real
    directory once); an entry that is a symlink is stat'ed itself (``lstat``), so a
    link pointed elsewhere is a change.

    A directory is recorded by its inode alone: a new, removed or replaced directory
    is a change, an entry added to or removed from it is a change only when that
    entry is (a ``shop.db-journal`` next to a database is not: see ``relevant``).

    Directories watchfiles' filter ignores (``.git``, ``__pycache__``, ``.venv``...) are
    not entered; an entry that vanishes meanwhile is left out (its removal is a change).
    """
    found: dict[str, tuple[int, int, int, int]] = {}
    for top in paths:
        seen: set[str] = set()
        for current, dirs, names in (
            os.walk(top, followlinks=True) if recursive else [_listing(top)]
        ):
            if recursive:
                # Into symlinked directories, as the loader's ``discover`` goes; each real
                # directory once, so a link to an ancestor is not walked forever.
                real = os.path.realpath(current)
                if real in seen:
                    dirs[:] = []
                    continue
                seen.add(real)
            dirs[:] = [d for d in dirs if d not in _FILTER.ignore_dirs]
            for name in (*dirs, *names):
                path = os.path.join(current, name)  # noqa: PTH118 - every poll, every file
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    # Only a directory's presence and identity: its mtime and ctime change
                    # whenever an entry is added or removed (a SQLite journal on every
                    # transaction), and what it holds is compared entry by entry anyway.
                    found[path] = (st.st_ino, -1, 0, 0)
                else:
                    found[path] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return found


def _listing(top: str) -> tuple[str, list[str], list[str]]:
    """``top``'s entries as one ``os.walk`` step (no recursion), empty when unreadable."""
    try:
        return top, [], os.listdir(top)  # noqa: PTH208 - names, as os.walk gives
    except OSError:
        return top, [], []


def _name(hook: object) -> str:
    return str(getattr(hook, "__qualname__", None) or repr(hook))
