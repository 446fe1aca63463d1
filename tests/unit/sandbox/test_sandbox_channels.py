"""The server's side of a zygote's control socket: lending spares, deaths, exits."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator

import pytest

from gateway.sandbox._channels import ZygoteChannel, ZygoteDied
from gateway.sandbox.protocol import Exited, Limits, Spare, Start, encode
from gateway.sandbox.supervisor import Supervisor, _not_handed_over
from gateway.settings import Settings


@pytest.fixture
async def channel() -> AsyncIterator[tuple[ZygoteChannel, socket.socket]]:
    """A channel reading from one end of a socket pair; the test plays the zygote."""
    ours, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    proc = subprocess.Popen(["true"])
    chan = ZygoteChannel(True, proc, ours)
    chan.start_reading()
    try:
        yield chan, zygote_end
    finally:
        zygote_end.close()
        await chan.close()


def _lend(zygote_end: socket.socket, serial: int) -> socket.socket:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    socket.send_fds(zygote_end, [encode(Spare(id=serial, pid=1))], [theirs.fileno()])
    theirs.close()
    return mine


async def test_a_waiting_call_gets_the_next_spare(
    channel: tuple[ZygoteChannel, socket.socket],
) -> None:
    chan, zygote_end = channel
    waiting = asyncio.ensure_future(chan.take_spare())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    peer = _lend(zygote_end, 7)
    serial, sock = await asyncio.wait_for(waiting, 2)
    assert serial == 7
    sock.send(b"x")
    assert peer.recv(1) == b"x"  # the fd that came over is the spare's socket
    sock.close()
    peer.close()


async def test_a_spare_that_died_unused_is_never_lent(
    channel: tuple[ZygoteChannel, socket.socket],
) -> None:
    chan, zygote_end = channel
    first, second = _lend(zygote_end, 1), _lend(zygote_end, 2)
    zygote_end.send(encode(Exited(id=1, status=-9)))
    await asyncio.sleep(0.05)
    serial, sock = await asyncio.wait_for(chan.take_spare(), 2)
    assert serial == 2
    for s in (sock, first, second):
        s.close()


async def test_the_zygotes_death_fails_waiting_calls(
    channel: tuple[ZygoteChannel, socket.socket],
) -> None:
    chan, zygote_end = channel
    waiting = asyncio.ensure_future(chan.take_spare())
    await asyncio.sleep(0.01)
    zygote_end.close()  # EOF: the zygote is gone
    with pytest.raises(ZygoteDied):
        await asyncio.wait_for(waiting, 2)
    with pytest.raises(ZygoteDied):
        await chan.take_spare()


def test_a_call_no_spare_took_is_retried_or_timed_out() -> None:
    assert _not_handed_over(ZygoteDied(), 0.0, 5) is None
    timed_out = _not_handed_over(TimeoutError(), 0.0, 5)
    assert timed_out is not None and timed_out.status == "timed_out"
    with pytest.raises(ValueError, match="other"):
        _not_handed_over(ValueError("other"), 0.0, 5)


async def test_a_spare_lent_just_before_the_zygotes_death_is_not_taken(
    channel: tuple[ZygoteChannel, socket.socket],
) -> None:
    """A ``Spare`` and the EOF read in one callback: the waiting call learns the zygote
    died (and retries elsewhere) instead of taking a spare no ``Exited`` will follow."""
    chan, zygote_end = channel
    call, out = socket.socketpair()
    waiting = asyncio.ensure_future(
        Supervisor(Settings())._hand_over(
            chan, Start(id=0, limits=Limits()), call.fileno(), out.fileno()
        )
    )
    await asyncio.sleep(0.01)
    peer = _lend(zygote_end, 3)
    zygote_end.close()  # both are in the socket before the loop reads either
    with call, out, pytest.raises(ZygoteDied):
        await asyncio.wait_for(waiting, 2)
    assert peer.recv(64) == b""  # closed unused: no Start (and no fds) came to the spare
    peer.close()


async def test_a_zygote_that_died_while_used_was_sent_gets_no_call(
    channel: tuple[ZygoteChannel, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The EOF read while ``Used`` was on its way: the hand-over gives up (the call is
    retried on a fresh zygote) and the spare never gets the call's fds, which would leave
    the call waiting for an ``Exited`` no one sends."""
    chan, zygote_end = channel
    peer = _lend(zygote_end, 4)
    sent = chan.send

    async def send_then_die(message: object, fds: list[int] | None = None) -> None:
        await sent(message, fds)  # type: ignore[arg-type]
        chan.mark_dead()  # what the read callback does on EOF, before the caller resumes

    monkeypatch.setattr(chan, "send", send_then_die)
    call, out = socket.socketpair()
    with call, out, pytest.raises(ZygoteDied):
        await Supervisor(Settings())._hand_over(
            chan, Start(id=0, limits=Limits()), call.fileno(), out.fileno()
        )
    assert peer.recv(64) == b""  # closed unused: no Start (and no fds) came to the spare
    peer.close()


async def test_a_call_cancelled_as_the_zygote_dies_stays_cancelled(
    channel: tuple[ZygoteChannel, socket.socket],
) -> None:
    """The death (ZygoteDied on the waiter) and the cancellation in one loop turn: the
    call is cancelled. Raising ZygoteDied instead would retry it, and run the action of a
    run that was cancelled."""
    chan, _ = channel
    waiting = asyncio.ensure_future(chan.take_spare())
    await asyncio.sleep(0.01)
    chan.mark_dead()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
