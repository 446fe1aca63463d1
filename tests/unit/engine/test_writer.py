"""The event writer beside a run: what it does when it fails in a way it does not retry."""

from __future__ import annotations

import asyncio

import structlog
from structlog.testing import capture_logs

from gateway.engine._writer import EventWriter
from gateway.engine.runlog import RunLog
from gateway.events import MessageDelta


class _Unencodable(RunLog):
    """A log whose events cannot be encoded (a bug the writer's retries cannot cure)."""

    def encoded(self, start: int = 0) -> list[bytes]:
        raise RuntimeError("cannot encode event 1")


class _NoStore:
    """Takes no batch: the writer fails before it writes one."""

    async def append_run_events(self, run_id: str, first_seq: int, events: list[bytes]) -> bool:
        raise AssertionError("nothing can be written")


async def test_a_writer_that_fails_unexpectedly_is_logged_not_dropped() -> None:
    """A failure outside the store's retried writes ends the writer with an error log (type and
    message), which ``close`` would otherwise swallow."""
    log = _Unencodable("run_w", "thread_w")
    logger = structlog.get_logger("gateway.engine").bind(run_id="run_w")
    with capture_logs() as logs:
        writer = EventWriter(log, _NoStore(), interval=0.01, begun=None, logger=logger)  # type: ignore[arg-type]
        log.append(MessageDelta(run_id="run_w", message_id="msg_1", delta="hi"))
        await asyncio.sleep(0.1)
        await writer.close()
    assert writer.written == 0
    assert [entry for entry in logs if entry["log_level"] == "error"] == [
        {
            "event": "run.events_writer_failed",
            "log_level": "error",
            "run_id": "run_w",
            "error": "RuntimeError",
            "message": "cannot encode event 1",
        }
    ]
