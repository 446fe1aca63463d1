"""Settings, read from the environment (and a ``.env`` file) once, typed.

``Settings.from_env()`` is called by the CLI and handed to ``create_app``;
nothing else reads ``os.environ`` for configuration. Unknown ``GATEWAY_*``
variables are ignored, but a malformed or out-of-range value
(``GATEWAY_PORT=abc``, ``GATEWAY_SANDBOX_CONCURRENCY=0``, ``GATEWAY_RUN_LEASE=nan``)
is an error naming the variable, never a silent default.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import msgspec

from gateway._origins import parse_origin

__all__ = ["Settings", "SettingsError", "read_dotenv"]


class SettingsError(ValueError):
    """A variable has a value that cannot be used; the message names it."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of the gateway. Defaults are the development defaults."""

    manifests: Path = Path("manifests")
    database_url: str = "sqlite:///var/gateway.db"
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    default_assistant: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    watch: bool = True
    # Poll instead of OS file events (NFS, some bind mounts): WATCHFILES_FORCE_POLLING.
    watch_polling: bool = False
    sse_heartbeat: float = 15.0
    environment: Literal["development", "production"] = "development"
    auth: Literal["keys", "none"] = "keys"
    logging_level: str = "INFO"
    log_format: Literal["keyvalue", "json"] = "keyvalue"
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    max_body_bytes: int = 1_048_576
    sandbox_concurrency: int = 8
    inline_concurrency: int = 16  # gateway.executors.inline.DEFAULT_CONCURRENCY
    sandbox_user: Literal["auto", "own", "root"] = "auto"
    sandbox_tmp_mb: int = 256  # each zygote's tmpfs for its calls' directories
    reload_debounce_ms: int = 50
    run_lease: float = 30.0  # seconds; gateway.store.base.DEFAULT_LEASE_SECONDS
    # On SIGTERM/SIGINT, how long runs in progress may take to finish before they are cancelled.
    drain_seconds: float = 5.0
    event_flush_ms: int = 100  # shared store: a running run's events are stored this often
    gateway_root: Path | None = None
    rate_limit: float = 0.0
    rate_limit_burst: int = 0
    cors_origins: tuple[str, ...] = ()
    # What a model call gets of a conversation, unless an assistant's ``history`` says.
    history_max_messages: int = 200
    history_max_kb: int = 400

    @property
    def root(self) -> Path:
        """Directory put on ``sys.path`` for Python actions (parent of the manifests root).

        Absolute, not resolved: with git-sync's ``/git/current/manifests`` it is
        ``/git/current``, the link, whichever revision it points to.
        """
        if self.gateway_root is not None:
            return self.gateway_root
        return Path(os.path.abspath(self.manifests)).parent  # noqa: PTH100 - not resolved

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
    ) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``) over a ``.env`` file.

        Real environment variables win over the ``.env`` file.
        """
        env: dict[str, str] = {}
        if dotenv is not None and dotenv.is_file():
            env.update(read_dotenv(dotenv))
        env.update(os.environ if environ is None else environ)
        return cls._from_mapping(env)

    @classmethod
    def _from_mapping(cls, env: Mapping[str, str]) -> Settings:
        raw: dict[str, object] = {}
        for var, (field, parse) in _VARIABLES.items():
            value = env.get(var)
            if value not in (None, "") and field not in raw:
                raw[field] = parse(var, value)
        # PROJECT_ID / BUCKET_ID from the old Assistant Service are accepted and ignored.
        try:
            return msgspec.convert(raw, cls, strict=False, dec_hook=_dec_hook)
        except msgspec.ValidationError as exc:  # pragma: no cover - parsers guard every type
            raise SettingsError(str(exc)) from None


def _text(var: str, value: str) -> str:
    return value


def _csv(var: str, value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _origins(var: str, value: str) -> tuple[str, ...]:
    """Comma-separated browser origins (``https://*.example.com`` wildcards too), or ``*``,
    lowercased (see ``gateway._origins``): a host alone or a path would never match."""
    try:
        return tuple(parse_origin(origin) for origin in _csv(var, value))
    except ValueError as exc:
        raise SettingsError(f"{var} {exc}") from None


def _number(conv: Callable[[str], float]) -> Callable[[str, str], object]:
    def parse(var: str, value: str) -> object:
        try:
            parsed = conv(value)
        except ValueError:
            raise SettingsError(f"{var} must be a number, got {value!r}") from None
        if not math.isfinite(parsed):  # nan compares false to every bound, inf never ends
            raise SettingsError(f"{var} must be a finite number, got {value!r}")
        return parsed

    return parse


def _non_negative(conv: Callable[[str], float]) -> Callable[[str, str], object]:
    number = _number(conv)

    def parse(var: str, value: str) -> object:
        parsed = number(var, value)
        if not isinstance(parsed, int | float) or parsed < 0:
            raise SettingsError(f"{var} must be zero or a positive number, got {value!r}")
        return parsed

    return parse


def _positive(conv: Callable[[str], float]) -> Callable[[str, str], object]:
    number = _number(conv)

    def parse(var: str, value: str) -> object:
        parsed = number(var, value)
        if not isinstance(parsed, int | float) or parsed <= 0:
            raise SettingsError(f"{var} must be a positive number, got {value!r}")
        return parsed

    return parse


def _count(var: str, value: str) -> int:
    """A whole number of at least 1 (a limit of things at once)."""
    try:
        parsed = int(value.strip())
    except ValueError:
        raise SettingsError(f"{var} must be a whole number of at least 1, got {value!r}") from None
    if parsed < 1:
        raise SettingsError(f"{var} must be a whole number of at least 1, got {value!r}")
    return parsed


def _whole(low: int, high: int) -> Callable[[str, str], int]:
    """A whole number from ``low`` to ``high``."""

    def parse(var: str, value: str) -> int:
        try:
            parsed = int(value.strip())
        except ValueError:
            parsed = low - 1
        if not low <= parsed <= high:
            raise SettingsError(f"{var} must be a whole number from {low} to {high}, got {value!r}")
        return parsed

    return parse


def _port(var: str, value: str) -> int:
    """A TCP port: 0 (any free port, chosen by the kernel) to 65535."""
    try:
        parsed = int(value.strip())
    except ValueError:
        parsed = -1
    if not 0 <= parsed <= 65535:
        raise SettingsError(f"{var} must be a port number from 0 to 65535, got {value!r}")
    return parsed


def _choice(*allowed: str) -> Callable[[str, str], str]:
    def parse(var: str, value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in allowed:
            raise SettingsError(f"{var} must be one of {', '.join(allowed)}, got {value!r}")
        return lowered

    return parse


# The level names LOGGING_LEVEL takes (any case); "WARN" and "FATAL" are the stdlib's aliases.
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL")


def _log_level(var: str, value: str) -> str:
    """A logging level name, upper-cased: a typo is an error, not a silent INFO."""
    upper = value.strip().upper()
    if upper not in _LOG_LEVELS:
        raise SettingsError(f"{var} must be one of {', '.join(_LOG_LEVELS)}, got {value!r}")
    return upper


def _parse_bool(var: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{var} must be true or false, got {value!r}")


def _watchfiles_bool(var: str, value: str) -> bool:
    """watchfiles' own reading of its variables: set and not false/disable/disabled is on."""
    del var
    lowered = value.strip().lower()
    return bool(lowered) and lowered not in ("false", "disable", "disabled")


# Environment variable -> (Settings field, parser). The first variable set wins
# for a field, so an alias (ASSISTANT_ID) comes after the name it stands for.
_VARIABLES: dict[str, tuple[str, Callable[[str, str], object]]] = {
    "GATEWAY_MANIFESTS": ("manifests", _text),
    "GATEWAY_DATABASE_URL": ("database_url", _text),
    "GATEWAY_HOST": ("host", _text),
    "LOGGING_LEVEL": ("logging_level", _log_level),
    "OPENAI_API_KEY": ("openai_api_key", _text),
    "OPENAI_BASE_URL": ("openai_base_url", _text),
    "GATEWAY_ROOT": ("gateway_root", _text),
    "GATEWAY_DEFAULT_ASSISTANT": ("default_assistant", _text),
    "ASSISTANT_ID": ("default_assistant", _text),
    "GATEWAY_API_KEYS": ("api_keys", _csv),
    "GATEWAY_ADMIN_KEYS": ("admin_keys", _csv),
    "GATEWAY_CORS_ORIGINS": ("cors_origins", _origins),
    "GATEWAY_PORT": ("port", _port),
    "GATEWAY_SSE_HEARTBEAT": ("sse_heartbeat", _positive(float)),
    "GATEWAY_MAX_BODY_BYTES": ("max_body_bytes", _count),
    "GATEWAY_SANDBOX_CONCURRENCY": ("sandbox_concurrency", _count),
    "GATEWAY_INLINE_CONCURRENCY": ("inline_concurrency", _count),
    "GATEWAY_SANDBOX_TMP_MB": ("sandbox_tmp_mb", _whole(16, 65_536)),
    "GATEWAY_RELOAD_DEBOUNCE_MS": ("reload_debounce_ms", _non_negative(int)),
    "GATEWAY_EVENT_FLUSH_MS": ("event_flush_ms", _non_negative(int)),
    "GATEWAY_RUN_LEASE": ("run_lease", _positive(float)),
    "GATEWAY_DRAIN_SECONDS": ("drain_seconds", _non_negative(float)),
    "GATEWAY_RATE_LIMIT": ("rate_limit", _non_negative(float)),
    "GATEWAY_RATE_LIMIT_BURST": ("rate_limit_burst", _non_negative(int)),
    # The same ranges as an assistant's ``history`` (gateway.manifests.model.History).
    "GATEWAY_HISTORY_MAX_MESSAGES": ("history_max_messages", _whole(1, 10_000)),
    "GATEWAY_HISTORY_MAX_KB": ("history_max_kb", _whole(1, 16_384)),
    "GATEWAY_WATCH": ("watch", _parse_bool),
    "WATCHFILES_FORCE_POLLING": ("watch_polling", _watchfiles_bool),
    "ENVIRONMENT": ("environment", _choice("development", "production")),
    "GATEWAY_AUTH": ("auth", _choice("keys", "none")),
    "GATEWAY_SANDBOX_USER": ("sandbox_user", _choice("auto", "own", "root")),
    "LOG_FORMAT": ("log_format", _choice("keyvalue", "json")),
}


def _dec_hook(type_: type, obj: object) -> object:
    if type_ is Path and isinstance(obj, str):
        return Path(obj)
    raise NotImplementedError


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional quotes.

    As docker compose and python-dotenv read it: a value in quotes ends at its
    closing quote (what follows, a comment, is dropped); an unquoted one ends
    before a ``#`` that follows a space or a tab (``KEY=s3cret # the web team``
    is ``s3cret``; ``a#b`` keeps its ``#``).
    """
    result: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, _, value = stripped.removeprefix("export ").partition("=")
        result[key.strip()] = _dotenv_value(value)
    return result


_INLINE_COMMENT = re.compile(r"[ \t]#")


def _dotenv_value(raw: str) -> str:
    """One ``.env`` value (``raw``: all after the ``=``): unquoted, without its inline
    comment. A ``#`` right after the ``=`` starts the value (``KEY=#a1`` is ``#a1``:
    a password may start with one), as compose reads it; after a blank it is a comment."""
    value = raw.strip()
    if value[:1] in ("'", '"'):
        end = value.find(value[0], 1)
        if end != -1:
            return value[1:end]
    found = _INLINE_COMMENT.search(raw)
    return (raw[: found.start()] if found else raw).strip()
