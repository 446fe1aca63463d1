"""API keys, who may call what, and the per-key rate limit.

Keys come from ``GATEWAY_API_KEYS`` (clients) and ``GATEWAY_ADMIN_KEYS``
(operators), comma-separated. Each entry is one of::

    KEY                          an anonymous key, every assistant (logged as key-N / admin-N)
    NAME=KEY                     a named key (the name, never the key, is logged)
    NAME@ASSISTANT+ASSISTANT=KEY a client key limited to those assistants

An entry with ``=`` is always ``NAME=KEY`` (split at the first ``=``), so a key that
itself contains ``=`` (base64 padding) needs a name. Anything else is refused at
start-up with a ``SettingsError`` naming the variable and the entry's position (never
the key, nor text that might be part of it): a NAME that does not parse, an empty
NAME or KEY, a KEY starting with ``=`` or holding spaces, control characters or
anything but ASCII (a header carries ASCII: the SDKs cannot send such a key as
``Authorization: Bearer``, so it would work only as ``?api_key=``), an admin key
with ``@`` (admin keys use every assistant), the same key twice, or one name for
entries with different rights. Spaces around ``=``, ``@`` and ``+`` are
ignored. Keys are compared in constant time (``hmac.compare_digest`` over SHA-256
digests, every entry checked). The gateway is open (no key needed) only when no key
is set and ``ENVIRONMENT=development``, or when ``GATEWAY_AUTH=none``; production
without keys refuses to start. ``/``, ``/health``, ``/ready``, ``/schema`` and ``/ui``
are always open. The settings cannot know the assistants: a key limited to one the
manifest set lacks is reported on every load (``KeyRing.assistant_warnings``, the
reloader's ``check``). Imports ``gateway.errors``, ``gateway.settings`` and
``NAME_PATTERN`` from ``gateway.manifests.model``.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import re
import time
from collections.abc import Collection, Iterable

import msgspec

from gateway.errors import NotFound
from gateway.manifests.model import NAME_PATTERN
from gateway.settings import Settings, SettingsError

__all__ = ["OPEN_PRINCIPAL", "KeyRing", "Principal", "RateLimiter", "route_access"]

_KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # fullmatch, not `$` (it matches before "\n")
_ASSISTANT = re.compile(NAME_PATTERN)
# Whitespace or a control character: inside a key, most likely a missing comma
# ("web=k1 ops=k2") or a pasted line break, and not sendable in a header anyway.
_BLANK = re.compile(r"[\s\x00-\x1f\x7f]")
_AUTO_NAME = re.compile(r"(key|admin)-[0-9]+")


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: a key's name, whether it is an admin key, and its assistants.

    ``assistants`` is None when the key may use every assistant.
    """

    name: str
    admin: bool = False
    assistants: frozenset[str] | None = None

    def may_use(self, assistant: str) -> bool:
        """Whether this caller may talk to ``assistant``."""
        return self.admin or self.assistants is None or assistant in self.assistants

    def check_assistant(self, assistant: str) -> None:
        """Raise ``NotFound`` unless this caller may talk to ``assistant``: the 404 of a
        missing assistant, so a limited key cannot tell which other names exist."""
        if not self.may_use(assistant):
            raise NotFound("assistant", assistant)


OPEN_PRINCIPAL = Principal(name="anonymous", admin=True)


class _Entry(msgspec.Struct, frozen=True):
    digest: bytes
    principal: Principal
    where: str  # "GATEWAY_API_KEYS entry 2": how errors name it (never by its key)


def _parse(entry: str, *, admin: bool, index: int) -> _Entry:
    """One entry of ``GATEWAY_API_KEYS`` (or ``GATEWAY_ADMIN_KEYS`` when ``admin``).

    Errors name the entry by its position only: text that does not parse as a NAME
    may well be part of a key (``dGVzdA==`` splits into ``dGVzdA`` and ``=``).

    Raises:
        SettingsError: the entry is not ``KEY``, ``NAME=KEY`` or ``NAME@A+B=KEY`` (the
            last one for client keys only).
    """
    where = f"{'GATEWAY_ADMIN_KEYS' if admin else 'GATEWAY_API_KEYS'} entry {index + 1}"
    entry = entry.strip()
    if not entry:  # GATEWAY_*_KEYS drops empty entries; a caller passing one is wrong
        raise SettingsError(f"{where}: empty")
    if "=" not in entry:
        name, key, assistants = f"{'admin' if admin else 'key'}-{index + 1}", entry, None
    else:
        label, _, key = (part.strip() for part in entry.partition("="))
        if not label:
            raise SettingsError(f"{where}: nothing before '=' (write NAME=KEY)")
        if not key:
            raise SettingsError(
                f"{where}: no key after '=' (an unset variable? a key that contains '=', "
                "such as base64 padding, needs a name: NAME=KEY)"
            )
        if key.startswith("="):
            raise SettingsError(
                f"{where}: the key after NAME= starts with '=' (a key that contains '=', "
                "such as base64 padding, needs a name: NAME=KEY)"
            )
        name, at, allowed = (part.strip() for part in label.partition("@"))
        if not _KEY_NAME.fullmatch(name):
            raise SettingsError(
                f"{where}: the text before '=' is no NAME (1 to 64 of A-Za-z0-9_.-, then "
                "optionally @ASSISTANT+ASSISTANT); a key that contains '=' needs a name: "
                "NAME=KEY"
            )
        assistants = _assistants(allowed, where) if at else None
        if assistants is not None and admin:
            limit = "+".join(sorted(assistants))
            raise SettingsError(
                f"{where} ({name!r}): an admin key may use every assistant, so '@{limit}' "
                "would not limit it; limited keys go in GATEWAY_API_KEYS"
            )
    if _BLANK.search(key):
        raise SettingsError(
            f"{where}: a key cannot contain spaces or control characters "
            "(entries are separated by commas)"
        )
    if not key.isascii():
        raise SettingsError(
            f"{where}: a key can hold only ASCII characters (clients send it in an HTTP "
            "header, Authorization: Bearer KEY, and the SDKs cannot send anything else "
            "there; a pasted typographic quote or dash?)"
        )
    digest = hashlib.sha256(key.encode()).digest()
    return _Entry(digest, Principal(name=name, admin=admin, assistants=assistants), where)


def _assistants(allowed: str, where: str) -> frozenset[str]:
    """The assistant names after ``@``, joined by ``+``, each a manifest name."""
    names = [part.strip() for part in allowed.split("+")]
    if not all(_ASSISTANT.search(name) for name in names):
        raise SettingsError(
            f"{where}: after '@' come assistant names (1 to 64 of A-Za-z0-9_-) joined by '+'"
        )
    return frozenset(names)


def _check_unique(entries: Iterable[_Entry]) -> None:
    """Refuse the same key twice (only the first entry's rights would ever apply) and one
    name for entries with different rights (logs and rate limits go by name). One name
    for several keys with the same rights is fine: rotating a client's key.

    Raises:
        SettingsError: naming both entries by position (and the shared name).
    """
    by_digest: dict[bytes, _Entry] = {}
    by_name: dict[str, _Entry] = {}
    for entry in entries:
        first = by_digest.setdefault(entry.digest, entry)
        if first is not entry:
            raise SettingsError(f"{entry.where} has the same key as {first.where}: list it once")
        name = entry.principal.name
        first = by_name.setdefault(name, entry)
        if first.principal == entry.principal:
            continue
        auto = (
            " (an entry without a name is named key-N or admin-N)"
            if _AUTO_NAME.fullmatch(name)
            else ""
        )
        if first.principal.admin != entry.principal.admin:
            what = "a client key and an admin key need different names"
        else:
            what = "entries that may use different assistants need different names"
        raise SettingsError(
            f"{entry.where} is named {name!r} like {first.where}{auto}: {what} "
            "(logs and rate limits go by name)"
        )


class KeyRing:
    """The configured keys; ``lookup`` finds the principal of a presented key."""

    def __init__(self, api_keys: Iterable[str], admin_keys: Iterable[str], *, open_: bool) -> None:
        """Parse and check every entry (see the module docstring for the forms).

        Raises:
            SettingsError: an entry is malformed, or entries clash (same key, or one name
                with different rights); the message names the variable and the position.
        """
        self._entries = [_parse(k, admin=False, index=i) for i, k in enumerate(api_keys)]
        self._entries += [_parse(k, admin=True, index=i) for i, k in enumerate(admin_keys)]
        _check_unique(self._entries)
        self.open = open_

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """Build the key ring; refuse production without keys unless ``GATEWAY_AUTH=none``.

        The entries are checked even with ``GATEWAY_AUTH=none`` (which then ignores them),
        so a broken one does not wait for authentication to be turned back on.

        Raises:
            SettingsError: production with no key and ``GATEWAY_AUTH`` not ``none``, or a
                malformed entry (see ``KeyRing``).
        """
        has_keys = bool(settings.api_keys or settings.admin_keys)
        if settings.auth == "none":
            cls(settings.api_keys, settings.admin_keys, open_=True)  # only to check them
            return cls((), (), open_=True)
        if not has_keys and settings.environment == "production":
            raise SettingsError(
                "ENVIRONMENT=production needs GATEWAY_API_KEYS or GATEWAY_ADMIN_KEYS "
                "(or GATEWAY_AUTH=none to serve without authentication)"
            )
        return cls(settings.api_keys, settings.admin_keys, open_=not has_keys)

    def assistant_warnings(self, assistants: Collection[str]) -> list[str]:
        """One warning per client key limited to assistants not among ``assistants`` (the
        live manifest set's), naming the key by its NAME, never the key itself.

        Such a key gets 404 for those assistants, as for any it may not use (for all
        of them, when none of its own exists): most likely a typo in
        ``GATEWAY_API_KEYS`` or an assistant renamed.
        """
        warnings = []
        for entry in self._entries:
            principal = entry.principal
            if principal.admin or principal.assistants is None:
                continue  # an admin key, or a key for every assistant
            unknown = sorted(principal.assistants.difference(assistants))
            if not unknown:
                continue
            where = f"GATEWAY_API_KEYS: key {principal.name!r}"
            names = ", ".join(repr(name) for name in unknown)
            plural = "s" if len(unknown) > 1 else ""
            text = f"{where} is limited to assistant{plural} {names}, not in the manifest set"
            if len(unknown) == len(principal.assistants):
                text += ", so it may use no assistant"
            warnings.append(text)
        return warnings

    def lookup(self, key: str) -> Principal | None:
        """The principal of ``key``, or None; compares against every entry in constant time."""
        digest = hashlib.sha256(key.encode()).digest()
        found: Principal | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest) and found is None:
                found = entry.principal
        return found


_OPEN_PATHS = frozenset({"/", "/health", "/ready", "/favicon.ico"})
_OPEN_PREFIXES = ("/schema", "/ui")
_ADMIN_PATHS = frozenset({"/manifests/status", "/manifests/reload"})
_SLASHES = re.compile(r"/{2,}")


def _normalize(path: str) -> str:
    """``path`` as the router will match it: repeated slashes, dot segments and a
    trailing slash removed (``//manifests/status/`` is ``/manifests/status``).
    """
    cleaned = posixpath.normpath("/" + _SLASHES.sub("/", path).lstrip("/"))
    return "/" if cleaned in ("", ".", "//") else cleaned


def route_access(path: str) -> str:
    """The access level of ``path``: ``open``, ``client`` or ``admin``.

    Decided by path alone so it also covers unknown routes (no key: 401, not
    404), after normalizing it the way the router does, so that a variant such
    as ``/manifests/status/`` or ``//actions/x/invoke`` cannot slip past.
    """
    path = _normalize(path)
    if path in _OPEN_PATHS:
        return "open"
    for prefix in _OPEN_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return "open"
    if path in _ADMIN_PATHS:
        return "admin"
    if path.startswith("/actions/") and path.endswith("/invoke"):
        return "admin"
    return "client"


_PRUNE_AT = 10_000


class RateLimiter:
    """A token bucket per caller: ``burst`` requests at once, refilled at ``per_minute``.

    Args:
        per_minute: sustained requests per minute per caller (0 disables).
        burst: bucket size (default: ``per_minute``, at least 1).
    """

    def __init__(self, per_minute: float, burst: int = 0) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst or max(1, int(per_minute)))
        self._buckets: dict[str, tuple[float, float]] = {}
        # Size at which idle callers are next forgotten: doubled past what a prune leaves,
        # so many recent callers (one bucket per address when open) cost amortized O(1),
        # not a scan of every bucket per request.
        self._prune_at = _PRUNE_AT

    def take(self, caller: str) -> float:
        """Take one token for ``caller``: 0.0 when allowed, else seconds until a token is due."""
        now = time.monotonic()
        tokens, at = self._buckets.get(caller, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[caller] = (tokens - 1.0, now)
            if len(self._buckets) > self._prune_at:  # forget idle callers (they are full anyway)
                self._prune(now)
                self._prune_at = max(_PRUNE_AT, 2 * len(self._buckets))
            return 0.0
        self._buckets[caller] = (tokens, now)
        return (1.0 - tokens) / self.rate if self.rate > 0 else 60.0

    def _prune(self, now: float) -> None:
        full_after = self.capacity / self.rate if self.rate > 0 else 0.0
        for caller, (_, at) in list(self._buckets.items()):
            if now - at > full_after:
                del self._buckets[caller]
