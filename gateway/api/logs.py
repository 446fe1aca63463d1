"""Logging setup: structlog configured once, by ``create_app`` (or a CLI command that logs).

``LOG_FORMAT=keyvalue`` (default, logfmt) or ``json``; ``LOGGING_LEVEL``.
Tracebacks never show frame locals, and the HTTP clients' request lines (full
URLs) are not logged below WARNING: either would print secrets. The
standard library's loggers (uvicorn, litestar) render through the same
processors, so every line has one shape. Request-scoped ids
(``correlation_id``, ``run_id``, ``thread_id``) are bound with
``structlog.contextvars`` by the middleware and the handlers, and merged into
every line logged while the request (or the run task it started) runs.
Imports ``gateway.settings`` only.
"""

from __future__ import annotations

import logging
import sys

import structlog

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
        renderer = structlog.processors.LogfmtRenderer(
            key_order=["timestamp", "level", "event"], drop_missing=True
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
    handler._gateway = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Our middleware writes the access line; uvicorn's own would be a duplicate.
    logging.getLogger("uvicorn.access").disabled = True
    # The HTTP clients log every request's full URL at INFO: an inline http action's
    # query string carries its secrets, a provider's base_url may carry credentials.
    for client in _URL_LOGGERS:
        logging.getLogger(client).setLevel(max(level, logging.WARNING))
