"""The supervisor's side of its channels: a zygote's control socket, a call's pipes.

``ZygoteChannel`` sends control messages, queues the spares the zygote lends
and routes ``Exited`` replies to the waiting calls; ``OutputReader`` drains a child's stdout/stderr
as it comes, keeping the first bytes; ``read_frame`` reads one capped,
length-prefixed result. All run on the event loop without threads. Imports
msgspec, structlog, ``gateway.sandbox.protocol`` and ``_cleanup``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time

import msgspec
import structlog

from gateway.sandbox._cleanup import remove_tree
from gateway.sandbox.protocol import HEADER, TAKEN, Exited, Ready, Spare, decode_control, encode
from gateway.sandbox.worker import SCRATCH_FULL

__all__ = [
    "CallProgress",
    "OutputReader",
    "TooLarge",
    "ZygoteChannel",
    "ZygoteDied",
    "read_frame",
]

log = structlog.get_logger("gateway.sandbox")

_KILL_GRACE = 5.0
_FLOOD_PIPE = 1 << 20
"""A child's output pipe grows to this once its output passed the cap (see ``_discard``)."""
_FLOOD_PAUSE = 0.02
"""Seconds the output pipe is not read after each discard: output past the cap then
flows at most ``_FLOOD_PIPE`` per pause (50 MB/s), not as fast as a child can write."""


class ZygoteDied(Exception):
    """The zygote disappeared while a call was running on it."""


_SCRATCH_LOG_GAP = 60.0
"""Seconds between two ``sandbox.scratch_full`` warnings of one zygote."""


class ZygoteChannel:
    """One zygote process and its control socket, as seen from the event loop.

    Reads the zygote's messages as they come: ``Spare`` queues a lent child's
    socket (or hands it to a call waiting in ``take_spare``), ``Exited``
    resolves the future a call registered in ``pending`` under the spare's
    serial (or drops a queued spare that died unused).
    """

    def __init__(self, network: bool, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.network = network
        self.proc = proc
        self.sock = sock
        self.ready: Ready | None = None
        self.fingerprint = ""  # what it loaded (see ``_zygote_keys.fingerprint``)
        self.call_user = "same"  # whom its calls run as (``Init.call_user``)
        # Its memory cgroup's limit (0: unbounded).
        self.memory_bytes = 0
        self.memory_private = 0  # its private memory then (a call's copy of it)
        self.oom_fd: int | None = None  # its count of OOM kills (_cgroup.read_oom_kills)
        self.pending: dict[int, asyncio.Future[Exited]] = {}  # spare serial -> its exit
        self.spares: collections.deque[tuple[int, socket.socket]] = collections.deque()
        self.waiting: collections.deque[asyncio.Future[tuple[int, socket.socket]]] = (
            collections.deque()
        )
        self.active = 0
        self.scratch_full_at = -_SCRATCH_LOG_GAP  # when a spare last found its tmpfs full
        self.scratch_logged_at = -_SCRATCH_LOG_GAP  # when that was last logged
        self.retired = False
        self.dead = False
        self._reading = False

    @property
    def pid(self) -> int:
        """The zygote's pid: the parent of its spares and calls, whose memory is its own.

        Not ``proc.pid`` once ready with a private view (``_private``): the process
        started then only waits for the zygote it forked (``Ready.pid``, that fork's).
        """
        return self.proc.pid if self.ready is None else self.ready.pid

    def start_reading(self) -> None:
        """Start handling the zygote's messages (after ``Ready`` was read)."""
        asyncio.get_running_loop().add_reader(self.sock, self._on_readable)
        self._reading = True

    def _on_readable(self) -> None:
        while not self.dead:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, 1)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("sandbox.zygote_channel_error", error=str(exc), network=self.network)
                data, fds = b"", []
            if not data:
                for fd in fds:
                    os.close(fd)
                self.mark_dead()
                return
            try:
                msg = decode_control(data)
            except msgspec.DecodeError as exc:
                log.warning("sandbox.zygote_channel_error", error=str(exc), network=self.network)
                for fd in fds:
                    os.close(fd)
                continue
            if isinstance(msg, Spare) and len(fds) == 1:
                os.set_inheritable(fds[0], False)  # SCM_RIGHTS fds arrive inheritable
                self._lend(msg.id, socket.socket(fileno=fds[0]))
                continue
            for fd in fds:
                os.close(fd)
            if isinstance(msg, Exited):
                self._exited(msg)

    def _exited(self, msg: Exited) -> None:
        """A child ended: its call's future gets it, or a spare that died unused goes."""
        fut = self.pending.pop(msg.id, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)
        for spare in [s for s in self.spares if s[0] == msg.id]:
            self.spares.remove(spare)  # died unused
            spare[1].close()
            if msg.status == SCRATCH_FULL:
                self._scratch_full()
            elif msg.status not in (0, -signal.SIGKILL):
                log.error(
                    "sandbox.spare_failed",
                    status=msg.status,
                    network=self.network,
                    hint="the zygote could not confine a child; see `gateway doctor`",
                )

    def _scratch_full(self) -> None:
        """A spare could not make its directory: the zygote's tmpfs is full (a call
        filled it). The zygote forks the next one ``zygote._FORK_RETRY`` later, so this
        comes again and again while it is full: logged once a minute meanwhile."""
        now = time.monotonic()
        if now - self.scratch_logged_at > _SCRATCH_LOG_GAP:
            self.scratch_logged_at = now
            log.warning(
                "sandbox.scratch_full",
                network=self.network,
                hint="a call filled its zygote's tmpfs (GATEWAY_SANDBOX_TMP_MB): the calls "
                "beside it wait for a sandbox process until its files go",
            )
        self.scratch_full_at = now

    @property
    def scratch_full(self) -> bool:
        """A spare died for want of room within the last second (see ``_scratch_full``):
        why a call found no sandbox process free, if it did not."""
        return time.monotonic() - self.scratch_full_at < 1.0

    def _lend(self, serial: int, sock: socket.socket) -> None:
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result((serial, sock))
                return
        self.spares.append((serial, sock))

    def give_back(self, serial: int, sock: socket.socket) -> None:
        """Take back a spare from ``take_spare`` that did not get its call (caller cancelled)."""
        if self.dead:
            sock.close()  # the spare reads EOF and exits
        else:
            self._lend(serial, sock)

    async def take_spare(self) -> tuple[int, socket.socket]:
        """An idle spare's serial and socket (the caller closes it); waits for one if none."""
        if self.dead:
            raise ZygoteDied()
        if self.spares:
            return self.spares.popleft()
        waiter: asyncio.Future[tuple[int, socket.socket]] = (
            asyncio.get_running_loop().create_future()
        )
        self.waiting.append(waiter)
        try:
            lent = await waiter
        except asyncio.CancelledError:
            # A spare that came as we were cancelled is kept; ZygoteDied set in the same
            # turn must not replace the cancellation (the call would be retried, and run).
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._lend(*waiter.result())
            raise
        return lent

    def expect(self, serial: int) -> asyncio.Future[Exited]:
        """The future of spare ``serial``'s ``Exited``, registered before it gets its call.

        Raises:
            ZygoteDied: the zygote's EOF was already read (right after this spare's
                ``Spare``, in one read callback, or while ``Used`` was on its way).
                The spare dies with it and no ``Exited`` can come: a call handed to
                it would wait forever (``mark_dead`` failed only what was pending
                then). Nothing ran: the caller retries on a fresh zygote.
        """
        if self.dead:
            raise ZygoteDied()
        exited: asyncio.Future[Exited] = asyncio.get_running_loop().create_future()
        self.pending[serial] = exited
        return exited

    def mark_dead(self) -> None:
        if self.dead:
            return
        self.dead = True
        if self._reading:
            asyncio.get_running_loop().remove_reader(self.sock)
            self._reading = False
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ZygoteDied())
        self.pending.clear()
        for waiter in self.waiting:
            if not waiter.done():
                waiter.set_exception(ZygoteDied())
        self.waiting.clear()
        self._drop_spares()

    def _drop_spares(self) -> None:
        while self.spares:
            self.spares.popleft()[1].close()  # the spare reads EOF and exits

    async def send(self, message: msgspec.Struct, fds: list[int] | None = None) -> None:
        data = encode(message)
        loop = asyncio.get_running_loop()
        while True:
            try:
                socket.send_fds(self.sock, [data], fds or [])
                return
            except BlockingIOError:
                writable: asyncio.Future[None] = loop.create_future()
                loop.add_writer(self.sock, writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(self.sock)

    async def close(self) -> None:
        self.mark_dead()
        self.sock.close()
        if self.oom_fd is not None:
            fd, self.oom_fd = self.oom_fd, None
            os.close(fd)
        try:
            await asyncio.wait_for(asyncio.to_thread(self.proc.wait), _KILL_GRACE)
        except TimeoutError:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        if self.ready is not None and self.ready.tmp.startswith("/"):
            # A zygote killed from outside could not remove its call directories.
            await asyncio.to_thread(remove_tree, self.ready.tmp)


class OutputReader:
    """Reads a child's stdout/stderr pipe as it comes, keeping the first ``cap`` bytes.

    Past the cap, what comes is counted and thrown away in the kernel (``splice``
    to ``/dev/null``), then the pipe is left alone for ``_FLOOD_PAUSE``: an action
    writing nonstop (gigabytes a second) took a fifth of a CPU of the server's
    event loop per call; now it waits on its full pipe.
    """

    def __init__(self, fd: int, cap: int) -> None:
        self.fd = fd
        self.cap = cap
        self.data = bytearray()
        self.dropped = 0
        self._null = -1  # /dev/null, once past the cap (see _discard)
        self._resume: asyncio.TimerHandle | None = None  # reading paused (see _discard)
        self.eof = asyncio.get_running_loop().create_future()
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        if len(self.data) >= self.cap:
            self._discard()
            return
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        room = self.cap - len(self.data)
        self.data += chunk[:room] if room > 0 else b""
        self.dropped += max(0, len(chunk) - max(room, 0))

    def _discard(self) -> None:
        if self._null < 0:
            self._null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            with contextlib.suppress(OSError):
                fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, _FLOOD_PIPE)
        try:
            moved = os.splice(self.fd, self._null, _FLOOD_PIPE, flags=os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            return
        except OSError:  # no splice to /dev/null here: read it, and drop it
            try:
                moved = len(os.read(self.fd, _FLOOD_PIPE))
            except BlockingIOError:
                return
            except OSError:
                moved = 0
        if not moved:
            self.close()
            return
        self.dropped += moved
        # Then leave the pipe alone a moment: a child that writes nonstop blocks meanwhile
        # instead of keeping the event loop busy with what is thrown away.
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.fd)
        if self._resume is not None:
            self._resume.cancel()
        self._resume = loop.call_later(_FLOOD_PAUSE, self._resume_reading)

    def _resume_reading(self) -> None:
        self._resume = None
        if self.fd >= 0:
            asyncio.get_running_loop().add_reader(self.fd, self._on_readable)

    def drain(self) -> None:
        """Take whatever is already in the pipe without waiting for more."""
        while self.fd >= 0:
            before = len(self.data) + self.dropped
            self._on_readable()
            if len(self.data) + self.dropped == before:
                return

    def close(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self._null >= 0:
            os.close(self._null)
            self._null = -1
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
        if not self.eof.done():
            self.eof.set_result(None)

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class TooLarge(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


class CallProgress:
    """What the call socket told so far: ``taken`` once the child acknowledged the request."""

    __slots__ = ("taken",)

    def __init__(self) -> None:
        self.taken = False


async def read_frame(sock: socket.socket, cap: int, progress: CallProgress) -> bytes | None:
    """The ``TAKEN`` byte, then one length-prefixed frame; None at EOF; ``TooLarge`` over cap.

    ``progress.taken`` is set as soon as the acknowledgement arrives: a child that
    died without it never ran the action.
    """
    loop = asyncio.get_running_loop()
    buffer = bytearray()
    need = 1 + HEADER.size
    size: int | None = None
    while True:
        while len(buffer) < need:
            chunk = await loop.sock_recv(sock, min(1 << 20, need - len(buffer)))
            if not chunk:
                return None
            if not buffer and chunk[:1] == TAKEN:
                progress.taken = True
            buffer += chunk
        if size is not None:
            return bytes(buffer[1 + HEADER.size :])
        if not progress.taken:
            raise TooLarge(0)  # not our protocol: treat like an oversized answer
        (size,) = HEADER.unpack(buffer[1 : 1 + HEADER.size])
        if size > cap:
            raise TooLarge(size)
        need = 1 + HEADER.size + size
