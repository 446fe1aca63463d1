"""Settings, read from the environment (and a ``.env`` file) once, typed.

``Settings.from_env()`` is called by the CLI and handed to ``create_app``;
nothing else reads ``os.environ`` for configuration. Unknown ``GATEWAY_*``
variables are ignored, but a malformed value (``GATEWAY_PORT=abc``) is an
error naming the variable, never a silent default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec

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
    sse_heartbeat: float = 15.0
    environment: Literal["development", "production"] = "development"
    auth: Literal["keys", "none"] = "keys"
    logging_level: str = "INFO"
    log_format: Literal["keyvalue", "json"] = "keyvalue"
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    max_body_bytes: int = 1_048_576
    sandbox_concurrency: int = 8
    reload_debounce_ms: int = 50
    gateway_root: Path | None = None
    rate_limit: float = 0.0
    rate_limit_burst: int = 0

    @property
    def root(self) -> Path:
        """Directory put on ``sys.path`` for Python actions (parent of the manifests root)."""
        if self.gateway_root is not None:
            return self.gateway_root
        return self.manifests.resolve().parent

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
        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        raw: dict[str, object] = {}
        simple = {
            "GATEWAY_MANIFESTS": "manifests",
            "GATEWAY_DATABASE_URL": "database_url",
            "GATEWAY_HOST": "host",
            "LOGGING_LEVEL": "logging_level",
            "OPENAI_API_KEY": "openai_api_key",
            "OPENAI_BASE_URL": "openai_base_url",
            "GATEWAY_ROOT": "gateway_root",
        }
        for var, field in simple.items():
            if (value := get(var)) is not None:
                raw[field] = value
        default_assistant = get("GATEWAY_DEFAULT_ASSISTANT") or get("ASSISTANT_ID")
        if default_assistant is not None:
            raw["default_assistant"] = default_assistant
        for var, field in (("GATEWAY_API_KEYS", "api_keys"), ("GATEWAY_ADMIN_KEYS", "admin_keys")):
            if (value := get(var)) is not None:
                raw[field] = tuple(k.strip() for k in value.split(",") if k.strip())
        typed = {
            "GATEWAY_PORT": ("port", int),
            "GATEWAY_SSE_HEARTBEAT": ("sse_heartbeat", float),
            "GATEWAY_MAX_BODY_BYTES": ("max_body_bytes", int),
            "GATEWAY_SANDBOX_CONCURRENCY": ("sandbox_concurrency", int),
            "GATEWAY_RELOAD_DEBOUNCE_MS": ("reload_debounce_ms", int),
            "GATEWAY_RATE_LIMIT": ("rate_limit", float),
            "GATEWAY_RATE_LIMIT_BURST": ("rate_limit_burst", int),
        }
        for var, (field, conv) in typed.items():
            if (value := get(var)) is not None:
                try:
                    raw[field] = conv(value)
                except ValueError:
                    raise SettingsError(f"{var} must be a number, got {value!r}") from None
        if (value := get("GATEWAY_WATCH")) is not None:
            raw["watch"] = _parse_bool("GATEWAY_WATCH", value)
        choices = {
            "ENVIRONMENT": ("environment", ("development", "production")),
            "GATEWAY_AUTH": ("auth", ("keys", "none")),
            "LOG_FORMAT": ("log_format", ("keyvalue", "json")),
        }
        for var, (field, allowed) in choices.items():
            if (value := get(var)) is not None:
                value = value.lower()
                if value not in allowed:
                    raise SettingsError(f"{var} must be one of {', '.join(allowed)}, got {value!r}")
                raw[field] = value
        # PROJECT_ID / BUCKET_ID from the old Assistant Service are accepted and ignored.
        try:
            return msgspec.convert(raw, cls, strict=False, dec_hook=_dec_hook)
        except msgspec.ValidationError as exc:  # pragma: no cover - guarded above
            raise SettingsError(str(exc)) from None


def _dec_hook(type_: type, obj: object) -> object:
    if type_ is Path and isinstance(obj, str):
        return Path(obj)
    raise NotImplementedError


def _parse_bool(var: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{var} must be true or false, got {value!r}")


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional quotes."""
    result: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, _, value = stripped.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        result[key.strip()] = value
    return result
