"""The sandbox's parent side: zygotes, the concurrency queue, timeouts and results.

``Supervisor`` owns one zygote process (``zygote.py``) per key of
``_zygote_keys``: by network (``network: false`` actions run in one inside a
new network namespace) and by what the action's kind preloads (plain Python,
``http``, ``sql``); the plain pair always runs. For each call it takes a slot
from the global concurrency queue, hands one of the zygote's pre-forked
children (``worker.py``) a fresh socket and output pipe, sends the arguments
and secrets straight to that child over the socket, reads the result and the
child's output while it waits (capped), kills the whole process group at the
wall-clock timeout or on cancellation, and turns every outcome into a
``ToolResult``. A zygote that died (an action may kill its parent) is
restarted on the next call; ``reload`` starts new zygotes only where what they
load changed (modules, gateway root, code content, the ``http`` / ``sql``
configs it warms), while calls in flight finish on the old ones; any other
manifest-only edit keeps them all.

The server process itself is made undumpable at start, so a same-uid child
cannot read its memory or ``/proc/<pid>/environ``; as root each call also runs
under an unprivileged uid of its own, or as uid 0 without capabilities when
that uid cannot reach the deployment (``_call_user``). Each zygote gets the
catalog's part of the Landlock allow-list (``FsPolicy``: action code and
manifests readable, the gateway root only listable, the thread store and
``.env`` protected), and each ``sql`` call its own SQLite database's
directory. Never forks the server.

Imports ``gateway.settings``, ``gateway.manifests``, ``gateway.executors.base``
(the ``ToolResult`` shape), ``gateway.executors._limit`` (the FIFO slot queue)
and ``gateway.executors.builtins`` (``code_interpreter``'s limits), nothing above.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import structlog

import gateway
from gateway.executors._limit import FifoLimiter
from gateway.executors.base import ToolResult
from gateway.executors.builtins import code_interpreter_action
from gateway.manifests.catalog import Catalog, SourceModule
from gateway.manifests.model import Action, CallContext, SandboxLimits
from gateway.sandbox import _linux
from gateway.sandbox._call_user import CallUser, choose_call_user
from gateway.sandbox._cgroup import SandboxCgroups, open_sandbox_cgroups, read_oom_kills
from gateway.sandbox._channels import (
    CallProgress,
    OutputReader,
    TooLarge,
    ZygoteChannel,
    ZygoteDied,
    read_frame,
)
from gateway.sandbox._fs_policy import catalog_fs_policy, database_dirs
from gateway.sandbox._private import FILES_PER_MB, INODE_BYTES
from gateway.sandbox._snapshot import write_snapshot
from gateway.sandbox._zygote_keys import (
    PROBE_KEY,
    Key,
    fingerprint,
    zygote_code,
    zygote_key,
    zygote_keys,
    zygote_modules,
    zygote_warm,
)
from gateway.sandbox.probes import SANDBOX_GID, SANDBOX_UID_BASE
from gateway.sandbox.protocol import (
    CallRequest,
    Capabilities,
    Exited,
    FsPolicy,
    Init,
    Kill,
    Limits,
    Ready,
    Start,
    Used,
    decode_control,
    encode,
    frame,
)
from gateway.sandbox.results import (
    answered,
    call_outcome,
    error_output,
    failure,
    limits_for,
    redact,
)
from gateway.sandbox.worker import MINIMAL_ENV
from gateway.sandbox.zygote import _SPARES, BOOT
from gateway.settings import Settings

__all__ = ["SandboxStats", "Supervisor", "error_output"]

log = structlog.get_logger("gateway.sandbox")

_key = zygote_key  # the name the protocol tests use

_READY_TIMEOUT = 60.0
_ATTEMPTS = 3
"""Spares tried for one call when each dies before taking it (killed from outside)."""
_KILL_GRACE = 5.0
_ANSWERED_GRACE = 1.0
"""Seconds a child that answered gets to exit before it is killed. It has nothing left
to do (it killed what its action started before answering): one still there is an
action that wrote a result frame on fd 3 itself and kept running, past its timeout and
outside the concurrency limit. Killing one merely slow to exit costs nothing: its
result is already read."""
_ZYGOTE_TASKS = 9
"""Tasks of a zygote's pids cgroup besides its calls' processes: itself, the process it
was started as (which waits for it, see ``_private``), its spares and its removers
(``zygote._REMOVERS``)."""
_MB = 1 << 20
_MEMORY_HEADROOM = 64 * _MB
"""Bytes of a zygote's memory cgroup besides its calls' ``memory_mb``, the copies of the
zygote's memory and its tmpfs (see ``_bound_memory``): page tables, kernel memory, page
cache, and the process that waits for the zygote (``_private``: 8-9 MB of its own)."""
_SPARE_COPIES = 1 + _SPARES
"""Zygote-sized copies besides the calls': the zygote itself and its idle spares."""
_ESCAPED = 6
"""Bytes one byte of text may take in a result frame's JSON (a control character: \\u0001)."""
_ENVELOPE = _ESCAPED * 32 * 1024
"""Room in a result frame besides the output: the error message (2,000 characters), the
traceback (8,000), a kind's detail (``code_interpreter``: 16,000), JSON-escaped."""


def _not_handed_over(
    exc: BaseException, started: float, timeout: float, *, scratch_full: bool = False
) -> ToolResult | None:
    """What a call is when no spare took it: retried (None), timed out, or ``exc`` re-raised.

    ``scratch_full``: the zygote's last spare could not make its directory (a call
    filled the tmpfs): said, as why none was free.
    """
    if isinstance(exc, ZygoteDied):
        return None  # nothing ran: try again on a fresh zygote
    if isinstance(exc, TimeoutError):
        why = (
            ": the sandbox's scratch space (GATEWAY_SANDBOX_TMP_MB) is full, a call "
            "running beside this one filled it"
            if scratch_full
            else ""
        )
        return failure(
            started,
            "timeout",
            f"no sandbox process was free within {timeout:g}s{why}",
            outcome="timed_out",
        )
    raise exc


class SandboxStats(msgspec.Struct, kw_only=True):
    """What the sandbox did: calls started, failed, timed out; zygote restarts; calls now.

    Only ``active`` and ``queued`` reach ``/metrics`` (read live at each scrape, see
    ``gateway.app``); the counters are for tests and debugging, not exported.
    """

    calls: int = 0
    failures: int = 0
    timeouts: int = 0
    restarts: int = 0
    active: int = 0
    queued: int = 0


def _private_memory(pid: int) -> int:
    """Bytes of process ``pid``'s resident private memory (``RssAnon``), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:  # noqa: PTH123 - procfs
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _min_run(timeout: float) -> float:
    """Seconds of its ``timeout`` a queued call must have left to be started: a tenth,
    at most one second."""
    return min(1.0, timeout / 10)


class Supervisor:
    """Runs action calls in forked, confined children of a zygote (see the module doc).

    Attributes:
        capabilities: what the kernel allows here (probed once at ``start``).
        stats: counters for metrics.
    """

    def __init__(self, settings: Settings, *, python: str | None = None) -> None:
        self._settings = settings
        self._python = python or sys.executable
        self._catalog: Catalog | None = None
        self._zygotes: dict[Key, ZygoteChannel] = {}
        self._retired: set[ZygoteChannel] = set()
        self._spawn_lock = asyncio.Lock()
        # Slots in strict arrival order (an asyncio.Queue lets a newcomer take a freed slot
        # before the waiter it woke runs; with queue time counted, that waiter could time out).
        self._limiter = FifoLimiter(max(1, settings.sandbox_concurrency))
        # Slot numbers (the uids of calls_run_as "own"), least recently used first: a uid
        # is reused as late as possible after the call that had it.
        self._free_slots = collections.deque(range(self._limiter.limit))
        self._ids = itertools.count(1)
        self.call_user: CallUser = ("same", "")
        self.capabilities: Capabilities | None = None
        # A memory cgroup per zygote; and where calls have no uid of their own, a pids
        # cgroup (see _cgroup).
        self._cgroups: SandboxCgroups | None = None
        self.process_limit: tuple[bool, str] = (False, "not set up yet")
        self.memory_limit: tuple[bool, str] = (False, "not set up yet")
        self._all_memory = 0  # the bound of all zygotes together (see _bound_all_memory)
        self._warned: set[str] = set()
        # Kills in flight, by the exit they wait for (see ``_kill``).
        self._killing: dict[asyncio.Future[Exited], asyncio.Task[None]] = {}
        # Exits of children that answered, each awaited for ``_ANSWERED_GRACE``.
        self._exiting: set[asyncio.Task[None]] = set()
        self.stats = SandboxStats()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, catalog: Catalog | None = None) -> None:
        """Start the zygotes ``catalog`` needs and probe the kernel's capabilities once."""
        try:  # same-uid children must not read our memory or /proc/<pid>/environ
            _linux.prctl(_linux.PR_SET_DUMPABLE, 0)
        except OSError as exc:
            log.warning("sandbox.undumpable_failed", error=str(exc))
        self._catalog = catalog
        if self._cgroups is None:
            self._cgroups, details = await asyncio.to_thread(open_sandbox_cgroups)
            paths = self._cgroups.paths if self._cgroups is not None else {}
            self.process_limit = ("pids" in paths, details["pids"])
            self.memory_limit = ("memory" in paths, details["memory"])
        async with self._spawn_lock:
            keys = zygote_keys(catalog)
            spawned = await asyncio.gather(
                *(self._spawn(k, catalog, probe=k == PROBE_KEY) for k in keys),
                return_exceptions=True,
            )
            made = [z for z in spawned if isinstance(z, ZygoteChannel)]
            failed = [e for e in spawned if not isinstance(e, ZygoteChannel)]
            if failed:  # the zygotes that did start must not outlive the failure
                await asyncio.gather(*(z.close() for z in made), return_exceptions=True)
                raise failed[0]
            self._zygotes = dict(zip(keys, made, strict=True))
            await self._bound_all_memory(catalog)  # each bound saw the zygotes ready before it
        probed = self._zygotes[PROBE_KEY].ready
        if probed is not None and probed.capabilities is not None:
            self.capabilities = probed.capabilities
            log.info("sandbox.capabilities", **msgspec.structs.asdict(self.capabilities))
        if self.call_user[0] != "own":  # with a uid of its own, RLIMIT_NPROC limits a call
            enabled, detail = self.process_limit
            (log.info if enabled else log.warning)(
                "sandbox.process_limit", enabled=enabled, detail=detail
            )
        enabled, detail = self.memory_limit
        (log.info if enabled else log.warning)(
            "sandbox.memory_limit", enabled=enabled, detail=detail
        )

    async def reload(self, catalog: Catalog) -> None:
        """Make the zygotes match ``catalog``; calls in flight finish on the old ones.

        A zygote is replaced only when what it loaded changed: its modules (the
        kinds' preloads, the Python action modules), the gateway root, or the
        content of the catalog's code files it imports, or the ``http`` / ``sql``
        configs it warms (``zygote_warm``). Any other manifest-only edit keeps
        every zygote (the call's config and limits travel with each call).
        """
        wanted = await asyncio.to_thread(self._fingerprints, catalog)
        async with self._spawn_lock:
            current_catalog, self._catalog = self._catalog, catalog
            current = self._zygotes
            kept = {
                k: z
                for k, z in current.items()
                if k in wanted and not z.dead and z.fingerprint == wanted[k]
            }
            fresh = [k for k in wanted if k not in kept]
            results = await asyncio.gather(
                *(self._spawn(k, catalog) for k in fresh), return_exceptions=True
            )
            made = {
                k: z for k, z in zip(fresh, results, strict=True) if isinstance(z, ZygoteChannel)
            }
            failed = [e for e in results if not isinstance(e, ZygoteChannel)]
            if failed:  # keep the live zygotes; the reloader keeps the live catalog
                self._catalog = current_catalog
                await asyncio.gather(*(z.close() for z in made.values()), return_exceptions=True)
                raise failed[0]
            self._zygotes = {k: kept.get(k) or made[k] for k in wanted}
            for key, zygote in kept.items():  # its calls' memory_mb may have changed
                await self._bound_memory(zygote, key, catalog)
        if fresh:
            log.info("sandbox.zygotes_replaced", kept=len(kept), started=len(fresh))
        live = set(self._zygotes.values())
        for zygote in [z for z in current.values() if z not in live]:
            zygote.retired = True
            if zygote.active == 0:
                await zygote.close()
            else:
                self._retired.add(zygote)
        await self._bound_all_memory(catalog)  # without the zygotes now gone

    async def aclose(self) -> None:
        """Stop every zygote (their children die with them)."""
        zygotes = [*self._zygotes.values(), *self._retired]
        self._zygotes = {}
        self._retired.clear()
        await asyncio.gather(*(z.close() for z in zygotes), return_exceptions=True)
        # Their zygotes are closed: each watch ends at once (ZygoteDied).
        await asyncio.gather(*self._exiting, return_exceptions=True)
        if self._cgroups is not None:
            cgroups, self._cgroups = self._cgroups, None
            self.process_limit = (False, "closed")
            self.memory_limit = (False, "closed")
            await asyncio.to_thread(cgroups.close)

    async def _spawn(
        self, key: Key, catalog: Catalog | None, *, probe: bool = False
    ) -> ZygoteChannel:
        network, _ = key
        # Of what it will import: the catalog's code snapshot (what the load validated),
        # whatever the disk holds now; user code outside the snapshot is read from disk,
        # and an edit of it racing the start shows as a change at the next reload.
        fs = await asyncio.to_thread(self._fs_policy, key, catalog)
        digest = await asyncio.to_thread(fingerprint, key, catalog, fs)
        call_user = await asyncio.to_thread(
            choose_call_user, self._settings.sandbox_user, self._gateway_root(catalog)
        )
        if call_user != self.call_user:
            self.call_user = call_user
            log.info("sandbox.call_user", mode=call_user[0], reason=call_user[1])
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package_parent = str(Path(gateway.__file__).resolve().parent.parent)
        try:
            proc = subprocess.Popen(
                [self._python, "-I", "-B", "-c", BOOT, str(child.fileno()), package_parent],
                # TMPDIR (as Python resolves it: TMPDIR, TEMP, TMP, else /tmp) is where the
                # zygote makes its private folder for the calls' working directories.
                env={**MINIMAL_ENV, "TMPDIR": tempfile.gettempdir()},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(child.fileno(),),
                close_fds=True,
                cwd="/",
                # Not in our process group: a kill of the group (systemd's last SIGKILL,
                # a supervisor's killpg) would take the process that waits for the zygote
                # (``_private``) before it removed the zygote's folder; on our death the
                # zygote reads EOF, ends, and that process cleans up.
                start_new_session=True,
            )
        finally:
            child.close()
        parent.setblocking(False)
        zygote = ZygoteChannel(network, proc, parent)
        zygote.call_user = call_user[0]
        zygote.fingerprint = digest
        init = Init(
            paths=[str(self._gateway_root(catalog))],
            modules=zygote_modules(key, catalog),
            isolate_network=not network,
            probe=probe,
            fs=fs,
            call_user=call_user[0],
            warm=zygote_warm(key, catalog),
            tmp_mb=self._settings.sandbox_tmp_mb,
        )
        loop = asyncio.get_running_loop()
        try:
            if self._cgroups is not None:  # before it forks anything
                await self._enter_cgroups(proc.pid, catalog, own=call_user[0] == "own")
            await self._send_init(zygote, init, zygote_code(key, catalog))
            data = await asyncio.wait_for(loop.sock_recv(parent, 1 << 20), _READY_TIMEOUT)
            ready = decode_control(data) if data else None
        except (TimeoutError, OSError, msgspec.DecodeError) as exc:
            ready = None
            log.error("sandbox.zygote_start_failed", error=str(exc), network=network)
        except BaseException:
            # Cancelled (the call that restarts it, a reload, shutdown): nobody would know
            # this zygote, and it would live on with its spares as long as the server.
            proc.kill()
            parent.close()
            loop.run_in_executor(None, proc.wait)  # reaped off the loop, not awaited
            raise
        if not isinstance(ready, Ready):
            try:  # it may have ended on its own (an action module's import ended it)
                exited: int | None = await asyncio.to_thread(proc.wait, 1.0)
            except subprocess.TimeoutExpired:
                exited = None
            finally:  # even if cancelled while waiting: no zygote is left running
                proc.kill()
                parent.close()
            await asyncio.to_thread(proc.wait)
            which = "with" if network else "without"
            how = "" if exited is None else f", it exited with status {exited}"
            raise RuntimeError(
                f"the sandbox zygote did not start ({which} network{how}; see the log)"
            )
        zygote.ready = ready
        if self._cgroups is not None and self.memory_limit[0]:
            # Its imports are done; no call runs before it is returned.
            await self._bound_memory(zygote, key, catalog)
        self._log_ready(ready)
        zygote.start_reading()
        return zygote

    def _log_ready(self, ready: Ready) -> None:
        """Log what a zygote that started could not do; what every zygote says, once."""
        for module, error in ready.import_errors.items():
            log.warning("sandbox.import_failed", module=module, error=error)
        for warning in ready.warnings:
            if warning not in self._warned:
                self._warned.add(warning)
                log.warning("sandbox.warning", message=warning)
        if ready.network_error:
            log.warning("sandbox.network_isolation_unavailable", error=ready.network_error)
        view = ready.private
        if view is not None:
            for ok, detail in (
                (view.private_proc, view.private_proc_detail),
                (view.private_tmp, view.private_tmp_detail),
                (view.masked or not view.masked_detail, view.masked_detail),  # "": Landlock
            ):
                if not ok and detail not in self._warned:
                    self._warned.add(detail)
                    log.warning("sandbox.private_view_unavailable", detail=detail)

    async def _send_init(
        self, zygote: ZygoteChannel, init: Init, code: tuple[SourceModule, ...]
    ) -> None:
        """Send ``init`` with the code snapshot's memory file attached (see ``_snapshot``)."""
        if not code:
            await zygote.send(init)
            return
        fd, size = await asyncio.to_thread(write_snapshot, code)
        try:
            await zygote.send(msgspec.structs.replace(init, code_size=size), [fd])
        finally:
            os.close(fd)  # the zygote holds its own copy of the descriptor

    async def _enter_cgroups(self, pid: int, catalog: Catalog | None, *, own: bool) -> None:
        """Put zygote ``pid`` (not forking yet) into its memory cgroup and, unless its calls
        have a uid of their own (``own``), a pids cgroup for all it may run at once."""
        assert self._cgroups is not None
        largest = max(
            (a.sandbox.max_processes for a in (catalog.actions.values() if catalog else ())),
            default=0,
        )
        # code_interpreter (and the doctor's call) run with the default limits.
        tasks = self._limiter.limit * max(largest, SandboxLimits().max_processes)
        # One controller at a time: a refused memory cgroup (v1 ids run out: ENOSPC)
        # must not switch the fork-bomb bound off too, nor the other way round.
        if not own and self.process_limit[0]:
            try:
                await asyncio.to_thread(self._cgroups.enter, pid, tasks + _ZYGOTE_TASKS)
            except OSError as exc:
                detail = f"the kernel refused a zygote's pids cgroup: {exc}"
                self.process_limit = (False, detail)
                log.warning("sandbox.process_limit", enabled=False, detail=detail)
        if self.memory_limit[0]:
            try:
                await asyncio.to_thread(self._cgroups.enter, pid, memory=True)
            except OSError as exc:
                detail = f"the kernel refused a zygote's memory cgroup: {exc}"
                self.memory_limit = (False, detail)
                log.warning("sandbox.memory_limit", enabled=False, detail=detail)

    async def _bound_memory(self, zygote: ZygoteChannel, key: Key, catalog: Catalog | None) -> None:
        """Hold ``zygote``'s memory cgroup to what all it may run at once needs.

        ``GATEWAY_SANDBOX_CONCURRENCY`` calls, each up to the largest ``memory_mb``
        of the actions on this zygote (``code_interpreter``'s on its zygote) of new
        memory plus a copy of the zygote's private memory (copy-on-write: a call
        may write to every page it inherited); the zygote and its idle spares
        (``_SPARE_COPIES``) and ``_MEMORY_HEADROOM``. Measured once the zygote is
        ready (its imports done) and again at each reload that keeps it (an
        action's ``memory_mb`` may have changed).
        """
        if self._cgroups is None or not self.memory_limit[0] or zygote.dead:
            return
        actions = [*(catalog.actions.values() if catalog else ())]
        builtin = code_interpreter_action()
        actions.append(builtin)
        largest = max(
            (a.sandbox.memory_mb for a in actions if a.config and zygote_key(a) == key), default=0
        )
        private = await asyncio.to_thread(_private_memory, zygote.pid)
        calls = self._limiter.limit * (largest * _MB + private)
        # Never lowered for a zygote a reload keeps: calls of the old set may still run
        # under the old memory_mb (lowering v2's memory.max OOM-kills at once). A lower
        # bound applies to the zygote's replacement.
        own = _SPARE_COPIES * private + _MEMORY_HEADROOM + self._scratch_bytes(zygote)
        limit = max(calls + own, zygote.memory_bytes)
        try:
            swap = await asyncio.to_thread(self._cgroups.limit_memory, zygote.proc.pid, limit)
            if zygote.oom_fd is None:
                zygote.oom_fd = await asyncio.to_thread(
                    self._cgroups.open_oom_kills, zygote.proc.pid
                )
        except OSError as exc:
            log.warning("sandbox.memory_limit_failed", pid=zygote.pid, limit=limit, error=str(exc))
            return
        zygote.memory_bytes = limit
        zygote.memory_private = private
        log.debug(
            "sandbox.memory_bound",
            pid=zygote.pid,
            limit_mb=limit // _MB,
            memory_mb=largest,
            private_mb=round(private / _MB, 1),
            swap=swap,
        )
        await self._bound_all_memory(catalog, zygote)

    def _scratch_bytes(self, zygote: ZygoteChannel) -> int:
        """Bytes of ``zygote``'s tmpfs for its calls' directories (``_private``): its
        pages and its inodes' kernel memory are charged to the zygote's cgroup; 0
        without one."""
        view = zygote.ready.private if zygote.ready else None
        if view is None or not view.private_tmp:
            return 0
        size = self._settings.sandbox_tmp_mb
        return size * _MB + size * FILES_PER_MB * INODE_BYTES

    async def _bound_all_memory(
        self, catalog: Catalog | None, starting: ZygoteChannel | None = None
    ) -> None:
        """Hold this server's memory directory, all zygotes together, to what may run at once.

        Each zygote's bound allows ``GATEWAY_SANDBOX_CONCURRENCY`` calls, but the
        concurrency is the server's: their sum (2-4 zygotes and more per catalog)
        bounds nothing a demanding operator would plan for. Together:
        ``GATEWAY_SANDBOX_CONCURRENCY`` calls of the largest ``memory_mb`` of the
        catalog, each with a copy of the largest zygote's private memory, plus every
        zygote's own share (itself, its spares, ``_MEMORY_HEADROOM``) and that share
        once more for a zygote starting (its imports come before its bound).
        Measured with each zygote's bound (``starting``: the one being bounded) and
        at the end of each reload (the catalog's memory_mb may have changed, retired
        zygotes may be gone).
        """
        if self._cgroups is None or not self.memory_limit[0]:
            return
        zygotes = {*self._zygotes.values(), *self._retired}
        if starting is not None:
            zygotes.add(starting)
        private = [z.memory_private for z in zygotes if not z.dead and z.memory_bytes]
        actions = [*(catalog.actions.values() if catalog else ()), code_interpreter_action()]
        largest = max((a.sandbox.memory_mb for a in actions if a.config), default=0)
        most = max(private, default=0)
        share = [_SPARE_COPIES * p + _MEMORY_HEADROOM for p in [*private, most]]
        scratch = [self._scratch_bytes(z) for z in zygotes if not z.dead and z.memory_bytes]
        share += [*scratch, max(scratch, default=0)]
        limit = self._limiter.limit * (largest * _MB + most) + sum(share)
        try:
            await asyncio.to_thread(self._cgroups.limit_all_memory, limit)
        except OSError as exc:
            log.warning("sandbox.memory_limit_failed", zygotes="all", limit=limit, error=str(exc))
            return
        self._all_memory = limit
        log.debug(
            "sandbox.memory_bound_all",
            zygotes=len(private),
            limit_mb=limit // _MB,
            memory_mb=largest,
        )

    async def _zygote(self, key: Key) -> ZygoteChannel:
        zygote = self._zygotes.get(key)
        if zygote is not None and not zygote.dead:
            return zygote
        async with self._spawn_lock:
            zygote = self._zygotes.get(key)
            if zygote is not None and not zygote.dead:
                return zygote
            if zygote is not None:
                self.stats.restarts += 1
                log.warning("sandbox.zygote_restart", network=key[0], preload=list(key[1]))
                self._retired.discard(zygote)
                asyncio.get_running_loop().create_task(zygote.close())
            probe = self.capabilities is None and key == PROBE_KEY
            fresh = await self._spawn(key, self._catalog, probe=probe)
            if fresh.ready is not None and fresh.ready.capabilities is not None:
                self.capabilities = fresh.ready.capabilities
            self._zygotes[key] = fresh
            return fresh

    def _gateway_root(self, catalog: Catalog | None) -> Path:
        return catalog.gateway_root if catalog is not None else self._settings.root

    def _fingerprints(self, catalog: Catalog) -> dict[Key, str]:
        """The fingerprint of every zygote ``catalog`` needs (blocking)."""
        return {
            k: fingerprint(k, catalog, self._fs_policy(k, catalog)) for k in zygote_keys(catalog)
        }

    def _fs_policy(self, key: Key, catalog: Catalog | None) -> FsPolicy:
        """What a zygote's children may read besides system and Python dirs (blocking)."""
        modules = zygote_modules(key, catalog)
        root = self._gateway_root(catalog)
        actions = [
            a
            for a in (catalog.actions.values() if catalog is not None else ())
            if a.config is not None and a.isolation == "sandbox" and zygote_key(a) == key
        ]
        return catalog_fs_policy(modules, catalog, root, self._settings.database_url, actions)

    def zygote_pids(self) -> list[int]:
        """Pids of the live zygotes (for tests and ``doctor``)."""
        return [z.pid for z in self._zygotes.values() if not z.dead]

    # -- calls -----------------------------------------------------------------------------

    async def call(
        self, action: Action, call: CallContext, *, correlation_id: str = ""
    ) -> ToolResult:
        """Run one call of ``action`` in a fresh sandboxed child; never raises for a failure.

        Waits for one of ``GATEWAY_SANDBOX_CONCURRENCY`` slots first (in arrival
        order); the action's ``timeout`` covers that wait and the run (starting a
        zygote, after a reload, does not count): a call still queued when less
        than ``_min_run`` of its timeout is left fails with ``timeout`` and never
        runs (started, it would only be killed, maybe halfway through a side
        effect). Cancelling the awaiting task kills the child's whole process group.
        """
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        wait = action.timeout - _min_run(action.timeout)
        self.stats.queued += 1
        try:
            async with asyncio.timeout_at(arrived + wait):
                await self._limiter.acquire()
        except TimeoutError:
            log.warning(
                "sandbox.queue_timeout",
                action=action.name,
                timeout=action.timeout,
                waited=round(wait, 3),
                concurrency=self._settings.sandbox_concurrency,
                queued=self.stats.queued - 1,
                hint="raise GATEWAY_SANDBOX_CONCURRENCY or the action's timeout",
                correlation_id=correlation_id,
            )
            self.stats.calls += 1
            self.stats.failures += 1
            self.stats.timeouts += 1
            return failure(
                started,
                "timeout",
                f"no sandbox slot was free within {wait:.3g}s of its {action.timeout:g}s "
                "timeout; the action did not run",
                outcome="timed_out",
            )
        finally:
            self.stats.queued -= 1
        slot = self._free_slots.popleft()  # the limiter keeps one free for every holder
        self.stats.calls += 1
        self.stats.active += 1
        try:
            result = await self._call(action, call, slot, correlation_id, started, arrived)
        except asyncio.CancelledError:
            raise
        except (OSError, RuntimeError) as exc:
            log.error(
                "sandbox.call_error",
                action=action.name,
                error=str(exc),
                correlation_id=correlation_id,
            )
            result = failure(started, "sandbox_error", f"the sandbox could not run the call: {exc}")
        finally:
            self.stats.active -= 1
            self._free_slots.append(slot)
            self._limiter.release()
        if result.status != "succeeded":
            self.stats.failures += 1
            if result.status == "timed_out":
                self.stats.timeouts += 1
        return result

    async def _call(
        self,
        action: Action,
        call: CallContext,
        slot: int,
        correlation_id: str,
        started: float,
        arrived: float,
    ) -> ToolResult:
        if action.config is None:
            return failure(started, "sandbox_error", f"action {action.name!r} has no kind config")
        loop = asyncio.get_running_loop()
        spawning = loop.time()
        if self._catalog is None and not self._zygotes:
            await self.start(None)
        network = action.network
        zygote = await self._zygote(zygote_key(action))
        # The deadline counts from the call's arrival (time queued for a slot included),
        # not the time a zygote took to start.
        deadline = arrived + action.timeout + (loop.time() - spawning)
        if not network and zygote.ready is not None and not zygote.ready.network_isolated:
            return failure(
                started,
                "sandbox_error",
                "network isolation is unavailable here, so this action (network: false) was "
                f"not run: {zygote.ready.network_error}",
            )
        limits = limits_for(action)
        kind = type(action.config)
        request = CallRequest(
            kind=f"{kind.__module__}:{kind.__qualname__}",
            config=msgspec.to_builtins(action.config),
            call=call,
        )
        for attempt in range(_ATTEMPTS):
            if attempt:  # the last spare died before it took the call: nothing ran
                zygote = await self._zygote(zygote_key(action))
            zygote.active += 1
            try:
                result = await self._run_child(
                    zygote, action, request, limits, slot, started, deadline
                )
            finally:
                zygote.active -= 1
                if zygote.retired and zygote.active == 0 and zygote in self._retired:
                    self._retired.discard(zygote)
                    await zygote.close()
            if result is not None:
                break
            log.warning("sandbox.spare_lost", action=action.name, correlation_id=correlation_id)
        else:
            result = failure(
                started, "crashed", "the sandbox processes died before the call could start"
            )
        return redact(result, call.masked(), action.name, correlation_id)

    async def _run_child(
        self,
        zygote: ZygoteChannel,
        action: Action,
        request: CallRequest,
        limits: Limits,
        slot: int,
        started: float,
        deadline: float,
    ) -> ToolResult | None:
        """One attempt at the call; None if the spare died before it took the call."""
        loop = asyncio.get_running_loop()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        mine.setblocking(False)
        # Queued before the spare wakes, so it finds the request waiting; a request larger
        # than the socket buffer sends the rest below.
        pending = frame(request)
        with contextlib.suppress(BlockingIOError):
            pending = pending[mine.send(pending) :]
        out_r, out_w = os.pipe()
        start = Start(
            id=0,
            limits=limits,
            uid=SANDBOX_UID_BASE + slot if zygote.call_user == "own" else None,
            gid=SANDBOX_GID if zygote.call_user == "own" else None,
            **database_dirs(action, request.call),
        )
        # Its zygote's OOM kills so far: one more when the call is SIGKILLed is its (the
        # count also grows for spares, a call's subprocesses, a host-wide OOM).
        oom_kills = None if zygote.oom_fd is None else read_oom_kills(zygote.oom_fd)
        try:
            async with asyncio.timeout_at(deadline):
                serial, exited = await self._hand_over(zygote, start, theirs.fileno(), out_w)
        except BaseException as exc:
            mine.close()
            os.close(out_r)
            return _not_handed_over(exc, started, action.timeout, scratch_full=zygote.scratch_full)
        finally:
            theirs.close()
            os.close(out_w)
        output = OutputReader(out_r, limits.max_output_kb * 1024)
        progress = CallProgress()
        # The child cuts the output at max_output_kb of text; JSON escaping may grow it.
        cap = limits.max_output_kb * 1024 * _ESCAPED + _ENVELOPE
        reader = asyncio.ensure_future(read_frame(mine, cap, progress))
        too_large = False
        watched = False  # the child answered: ``_watch_exit`` owns ``exited`` from then on
        status: Exited | None = None
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        # A child that died before reading is reported by its exit status.
                        if pending:
                            await loop.sock_sendall(mine, pending)
                    either: set[asyncio.Future[Any]] = {reader, exited}
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    if reader.done() and isinstance(reader.exception(), TooLarge):
                        too_large = True
                        await self._kill(zygote, serial, exited)
                    elif not reader.done():
                        # The child is gone; whatever it wrote is already in the socket.
                        await asyncio.wait({reader}, timeout=1.0)
                    if too_large or not answered(reader):
                        status = await exited
                    else:
                        # The child cleaned up before answering and is exiting; the zygote
                        # reaps it (and anything a stray thread started). Not waited for
                        # here (a call's result comes first), but killed if it does not go.
                        self._watch_exit(zygote, serial, exited, action.name)
                        watched = True
            except TimeoutError:
                await self._kill(zygote, serial, exited)
                return failure(
                    started,
                    "timeout",
                    f"the action did not finish within {action.timeout:g}s and was killed",
                    outcome="timed_out",
                )
            except ZygoteDied:
                if answered(reader):
                    status = None
                elif not progress.taken:
                    return None
                else:
                    return failure(started, "crashed", "the sandbox process died during the call")
            except (asyncio.CancelledError, Exception):
                with contextlib.suppress(Exception):
                    await self._kill(zygote, serial, exited)
                raise
            if not (progress.taken or too_large) and status is not None and status.status < 0:
                return None  # killed from outside (OOM killer, operator) before it took the call
            output.drain()
            return call_outcome(
                request,
                action,
                limits,
                reader,
                status,
                output,
                started,
                taken=progress.taken,
                oom_bound=self._oom_killed(zygote, status, oom_kills),
            )
        finally:
            reader.cancel()
            if exited not in self._killing and not watched:  # else its kill or watch drops it
                zygote.pending.pop(serial, None)
                if not exited.done():
                    exited.cancel()
            output.close()
            mine.close()

    def _oom_killed(
        self, zygote: ZygoteChannel, status: Exited | None, before: int | None
    ) -> int | None:
        """``zygote``'s memory bound in bytes if the call's child that ended with ``status``
        was the OOM killer's: killed by SIGKILL, and the kernel's count of OOM kills in
        that memory cgroup went up since the call started (``before``). Else None.

        Not since the count was last read: an OOM kill of a spare or of a call's
        subprocess (the call went on) or a host-wide OOM raises it too, and the next
        call SIGKILLed on the zygote (its hard CPU limit) was then reported as out of
        memory. A call killed while another call on its zygote was OOM-killed can
        still be taken for one (the count is per zygote).
        """
        if status is None or status.status != -signal.SIGKILL:
            return None
        if before is None or zygote.oom_fd is None:
            return None
        kills = read_oom_kills(zygote.oom_fd)
        if kills is None or kills <= before:
            return None
        # Either bound may have been reached: the zygote's or all zygotes' together.
        return min(zygote.memory_bytes, self._all_memory or zygote.memory_bytes)

    def _watch_exit(
        self, zygote: ZygoteChannel, serial: int, exited: asyncio.Future[Exited], action: str
    ) -> None:
        """Kill spare ``serial`` if it has not exited ``_ANSWERED_GRACE`` seconds after its
        answer; ``exited`` is then the watcher's (``_run_child`` leaves it registered)
        until the zygote reported the exit or died."""
        task = asyncio.get_running_loop().create_task(
            self._reap_answered(zygote, serial, exited, action)
        )
        self._exiting.add(task)
        task.add_done_callback(self._exiting.discard)

    async def _reap_answered(
        self, zygote: ZygoteChannel, serial: int, exited: asyncio.Future[Exited], action: str
    ) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(exited), _ANSWERED_GRACE)
        except TimeoutError:
            # Not ``_kill``, which replaces a zygote that does not reap within its grace:
            # one busy a while (removing a large call directory) would then take every
            # call running on it down, for a child whose result is already in.
            with contextlib.suppress(OSError, ZygoteDied):
                if not zygote.dead:
                    await zygote.send(Kill(id=serial))
                if (await exited).status == -signal.SIGKILL:
                    # Still running when the kill came (a zygote merely late to report a
                    # clean exit, busy removing a large directory, is not worth a warning).
                    log.warning("sandbox.kept_running_after_result", action=action, call_id=serial)
        except ZygoteDied:
            pass
        finally:
            if zygote.pending.get(serial) is exited:
                del zygote.pending[serial]
            if not exited.done():
                exited.cancel()

    async def _hand_over(
        self, zygote: ZygoteChannel, start: Start, call_fd: int, out_fd: int
    ) -> tuple[int, asyncio.Future[Exited]]:
        """Give the call's fds to an idle spare; its serial and exit future.

        The spare is told directly (the zygote only learns from ``Used`` that
        it should fork the next one). A spare that died while it waited in the
        queue refuses the message; the next one is tried.

        ``Used`` goes first, because sending it may wait (a full control socket):
        cancelled there (the caller, or the call's deadline), the spare has not
        got the call and goes back to the queue. Handing the fds over and
        returning has no await, so from the moment the spare holds the call the
        caller tracks it (its kill at the deadline or on cancellation). A zygote
        whose EOF was read in between refuses in ``expect``: nothing ran.
        """
        while True:
            serial, sock = await zygote.take_spare()
            try:
                await zygote.send(Used(id=serial))
            except OSError:
                sock.close()
                zygote.mark_dead()
                raise ZygoteDied() from None  # nothing ran: tried again on a fresh zygote
            except BaseException:
                zygote.give_back(serial, sock)  # nothing ran; the next call may use it
                raise
            try:
                exited = zygote.expect(serial)
            except ZygoteDied:
                sock.close()
                raise
            try:
                with sock:
                    message = encode(msgspec.structs.replace(start, id=serial))
                    socket.send_fds(sock, [message], [call_fd, out_fd])
            except OSError:
                zygote.pending.pop(serial, None)
                exited.cancel()
                continue
            return serial, exited

    async def _kill(
        self, zygote: ZygoteChannel, call_id: int, exited: asyncio.Future[Exited]
    ) -> None:
        """Kill a call's process group and wait until the zygote reaped it.

        The kill runs in a task of its own that the caller only waits for: a caller
        cancelled meanwhile (a cancelled call cancelled again, shutdown) goes, and
        the kill still reaches the zygote (sending it may wait on a full control
        socket), and ``exited`` stays registered until the kill is done with it.
        """
        task = self._killing.get(exited)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._kill_and_reap(zygote, call_id, exited)
            )
            self._killing[exited] = task
        await asyncio.shield(task)

    async def _kill_and_reap(
        self, zygote: ZygoteChannel, call_id: int, exited: asyncio.Future[Exited]
    ) -> None:
        try:
            if zygote.dead:
                return
            await zygote.send(Kill(id=call_id))
            await asyncio.wait_for(asyncio.shield(exited), _KILL_GRACE)
        except (TimeoutError, OSError, ZygoteDied):
            # A zygote that cannot reap in time is replaced; its children die with it.
            log.error("sandbox.kill_failed", call_id=call_id)
            zygote.proc.kill()
            zygote.mark_dead()
        finally:
            del self._killing[exited]
            if zygote.pending.get(call_id) is exited:
                del zygote.pending[call_id]
            if not exited.done():
                exited.cancel()
