"""The LISTEN connection's task: what it does when it fails in a way it does not retry."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from structlog.testing import capture_logs

from gateway.store._notify import Listener


async def test_a_listener_that_fails_unexpectedly_is_logged_not_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failure other than a connection's ends the listening task with an error log (type and
    message), which stopping the task would otherwise swallow; the subscriber still polls."""

    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("no listening today")

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", broken)
    listener = Listener("postgresql://nobody@127.0.0.1:1/none")
    with capture_logs() as logs:
        async with listener.subscribe("run_l") as notices:
            assert await notices.wait(0.05) is False
        await listener.aclose()
    assert [entry for entry in logs if entry["log_level"] == "error"] == [
        {
            "event": "store.listen_crashed",
            "log_level": "error",
            "error": "RuntimeError",
            "message": "no listening today",
        }
    ]
    assert not any(task.get_name() == "store:listen" for task in asyncio.all_tasks())
