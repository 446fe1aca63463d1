"""The supervisor's side of its channels: a zygote's control socket, a call's pipes.

``ZygoteChannel`` sends control messages (with fds) and routes ``Exited``
replies to the waiting calls; ``OutputReader`` drains a child's stdout/stderr
as it comes, keeping the first bytes; ``read_frame`` reads one capped,
length-prefixed result. All run on the event loop without threads. Imports
msgspec, structlog and ``gateway.sandbox.protocol``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess

import msgspec
import structlog

from gateway.sandbox.protocol import HEADER, Exited, Ready, decode_control, encode

__all__ = ["OutputReader", "TooLarge", "ZygoteChannel", "ZygoteDied", "read_frame"]

log = structlog.get_logger("gateway.sandbox")

_KILL_GRACE = 5.0


class ZygoteDied(Exception):
    """The zygote disappeared while a call was running on it."""


class ZygoteChannel:
    """One zygote process and its control socket, as seen from the event loop."""

    def __init__(self, network: bool, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.network = network
        self.proc = proc
        self.sock = sock
        self.ready: Ready | None = None
        self.fingerprint = ""  # what it loaded (see ``supervisor._fingerprint``)
        self.pending: dict[int, asyncio.Future[Exited]] = {}
        self.active = 0
        self.retired = False
        self.dead = False
        self.reader: asyncio.Task[None] | None = None

    async def read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(self.sock, 1 << 16)
                if not data:
                    break
                msg = decode_control(data)
                if isinstance(msg, Exited):
                    fut = self.pending.pop(msg.id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("sandbox.zygote_channel_error", error=str(exc), network=self.network)
        finally:
            self.mark_dead()

    def mark_dead(self) -> None:
        if self.dead:
            return
        self.dead = True
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ZygoteDied())
        self.pending.clear()

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
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        self.sock.close()
        self.mark_dead()
        try:
            await asyncio.wait_for(asyncio.to_thread(self.proc.wait), _KILL_GRACE)
        except TimeoutError:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        if self.ready is not None and self.ready.tmp.startswith("/"):
            # A zygote killed from outside could not remove its call directories.
            await asyncio.to_thread(shutil.rmtree, self.ready.tmp, True)


class OutputReader:
    """Reads a child's stdout/stderr pipe as it comes, keeping the first ``cap`` bytes."""

    def __init__(self, fd: int, cap: int) -> None:
        self.fd = fd
        self.cap = cap
        self.data = bytearray()
        self.dropped = 0
        self.eof = asyncio.get_running_loop().create_future()
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
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

    def drain(self) -> None:
        """Take whatever is already in the pipe without waiting for more."""
        while self.fd >= 0:
            before = len(self.data) + self.dropped
            self._on_readable()
            if len(self.data) + self.dropped == before:
                return

    def close(self) -> None:
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


async def read_frame(sock: socket.socket, cap: int) -> bytes | None:
    """One length-prefixed frame from the call socket; None at EOF; ``TooLarge`` over cap."""
    loop = asyncio.get_running_loop()
    buffer = bytearray()
    need = HEADER.size
    size: int | None = None
    while True:
        while len(buffer) < need:
            chunk = await loop.sock_recv(sock, min(1 << 20, need - len(buffer)))
            if not chunk:
                return None
            buffer += chunk
        if size is not None:
            return bytes(buffer[HEADER.size :])
        (size,) = HEADER.unpack(buffer[: HEADER.size])
        if size > cap:
            raise TooLarge(size)
        need = HEADER.size + size
