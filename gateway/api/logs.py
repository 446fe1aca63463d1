"""Logging setup: structlog configured once, by ``create_app`` (or a CLI command that logs).

``LOG_FORMAT=keyvalue`` (default, logfmt) or ``json``; ``LOGGING_LEVEL``.
Tracebacks never show frame locals, the HTTP clients' request lines (full
URLs) are not logged below WARNING, and the keys in the lines uvicorn and the
websockets library log about a WebSocket handshake are redacted: each would
print secrets. What a client sent wrong is not a server error
(``_ClientFault``). The
standard library's loggers (uvicorn, litestar) render through the same
processors, so every line has one shape. Request-scoped ids
(``correlation_id``, ``run_id``, ``thread_id``) are bound with
``structlog.contextvars`` by the middleware and the handlers, and merged into
every line logged while the request (or the run task it started) runs.

A line may hold what anyone sent (a request's path, a file or action name, a
model's or a tool's text): a keyvalue line is escaped whole (``_OneLine``)
with ``gateway._unicode.printable``, so a control character (ESC, CR, NEL,
U+2028...) shows as ``\\x1b``, ``\\r``, ``\\x85``, ``\\u2028`` and cannot drive
the terminal of an operator tailing the log, nor start a line of its own
(a forged record, a CI workflow command). A traceback is one value of its
line, its own line breaks shown as ``\\n`` (logfmt's escape) like everything
else's: a record is always one line. JSON lines need nothing (``json.dumps``
escapes every control and non-ASCII character as ``\\uXXXX``).
Imports ``gateway.settings`` and ``gateway._unicode`` only.
"""

from __future__ import annotations

import logging
import re
import sys

import structlog

from gateway._unicode import printable
from gateway.settings import Settings

__all__ = ["configure_logging"]

# httpx (actions) and httpx2 (the openai SDK's client); see ``configure_logging``.
_URL_LOGGERS = ("httpx", "httpx2")


class _Stderr:
    """Whatever ``sys.stderr`` is *now* (test runners and daemons swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _OneLine:
    """A renderer whose lines are shown through ``printable``: one line, nothing a terminal obeys.

    Escaping the rendered line, not each value, covers the event text, every
    value (whatever its type's ``str`` holds), the traceback and the standard
    library's lines alike, whichever renderer quirks come with them (logfmt
    escapes ``\\n`` but not ``\\r`` or ESC).
    """

    def __init__(self, render: structlog.typing.Processor) -> None:
        self.render = render

    def __call__(
        self, logger: structlog.typing.WrappedLogger, name: str, event: structlog.typing.EventDict
    ) -> str:
        return printable(str(self.render(logger, name, event)))


class _ClientFault(logging.Filter):
    """uvicorn's ERROR-with-traceback for what a client sent wrong, as one WARNING line.

    A text frame that is not UTF-8 makes uvicorn's WebSocket protocol log
    ``Invalid UTF-8 sequence received from client.`` at ERROR with a
    ``UnicodeDecodeError`` traceback (then it closes the socket with 1007):
    any client could write server errors, and page whoever watches them, at
    will. It is the client's fault, and the access line says the rest.
    """

    CLIENT_FAULTS = ("Invalid UTF-8 sequence received from client.",)

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.getMessage() in self.CLIENT_FAULTS:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return record.levelno >= self.level


_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "sec-websocket-protocol"}
)
"""Headers whose values are keys: ``sec-websocket-protocol`` carries ``bearer, KEY``."""
_QUERY_KEY = re.compile(r"([?&](?:api_key|access_token|token|key)=)[^&#\s]*", re.IGNORECASE)


class _HandshakeRedactor(logging.Filter):
    """Keys out of the lines uvicorn and the websockets library log about a WebSocket.

    uvicorn logs each handshake at INFO with its path and query string
    (``"WebSocket /ws/chat?api_key=KEY" [accepted]``), and at DEBUG the
    websockets library logs the request line and every header (uvicorn's
    server as ``uvicorn.error``, a client as ``websockets.client``): the API
    key a client sends as ``?api_key=``, ``Authorization`` or the
    ``["bearer", KEY]`` subprotocol would be in the log. Those values are
    replaced by ``[redacted]``; the lines stay.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            header = record.msg in ("< %s: %s", "> %s: %s") and len(args) == 2
            if header and str(args[0]).lower() in _CREDENTIAL_HEADERS:
                args = (args[0], "[redacted]")
            record.args = tuple(
                _QUERY_KEY.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in args
            )
        elif isinstance(record.msg, str) and not args:
            record.msg = _QUERY_KEY.sub(r"\1[redacted]", record.msg)
        return True


def configure_logging(settings: Settings) -> None:
    """Configure structlog and the standard library's root logger from ``settings``.

    Args:
        settings: ``log_format`` and ``logging_level`` are read.
    """
    level = logging.getLevelNamesMapping().get(settings.logging_level.upper(), logging.INFO)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor
    if settings.log_format == "json":
        renderer = structlog.processors.JSONRenderer()
        # structlog's default ``dict_tracebacks`` renders every frame's locals, and
        # locals hold secrets (a call's declared secrets, the environment they come from).
        without_locals = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        shared.append(structlog.processors.ExceptionRenderer(without_locals))
    else:
        renderer = _OneLine(
            structlog.processors.LogfmtRenderer(
                key_order=["timestamp", "level", "event"], drop_missing=True
            )
        )
        shared.append(structlog.processors.format_exc_info)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_gateway", False):
            root.removeHandler(old)
    handler.addFilter(_HandshakeRedactor())
    handler._gateway = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Our middleware writes the access line; uvicorn's own would be a duplicate.
    logging.getLogger("uvicorn.access").disabled = True
    uvicorn_errors = logging.getLogger("uvicorn.error")
    for old_filter in [f for f in uvicorn_errors.filters if isinstance(f, _ClientFault)]:
        uvicorn_errors.removeFilter(old_filter)
    uvicorn_errors.addFilter(_ClientFault(level))
    # The HTTP clients log every request's full URL at INFO: an inline http action's
    # query string carries its secrets, a provider's base_url may carry credentials.
    for client in _URL_LOGGERS:
        logging.getLogger(client).setLevel(max(level, logging.WARNING))
