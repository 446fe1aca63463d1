"""Landlock: the filesystem allow-list syscalls (ABI probe, ruleset, rules, enforce).

The access-right constants of ``linux/landlock.h``, ``landlock_handled`` (the
rights an ABI knows), the ``LandlockRules`` value the zygote computes once,
and the calls that turn it into a ruleset and enforce it on a call child.
``_linux`` re-exports every public name here. Imports only the standard
library and ``gateway.sandbox._libc``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import stat
from typing import NamedTuple

from gateway.sandbox._libc import check, libc, syscall

__all__ = [
    "FS_ALL",
    "FS_EXECUTE",
    "FS_FILE_RIGHTS",
    "FS_IOCTL_DEV",
    "FS_MAKE_BLOCK",
    "FS_MAKE_CHAR",
    "FS_MAKE_DIR",
    "FS_MAKE_FIFO",
    "FS_MAKE_REG",
    "FS_MAKE_SOCK",
    "FS_MAKE_SYM",
    "FS_READ",
    "FS_READ_DIR",
    "FS_READ_FILE",
    "FS_REFER",
    "FS_REMOVE_DIR",
    "FS_REMOVE_FILE",
    "FS_TRUNCATE",
    "FS_WRITE_FILE",
    "SCOPE_ABSTRACT_UNIX_SOCKET",
    "SCOPE_SIGNAL",
    "LandlockRules",
    "OpenedRules",
    "landlock_abi",
    "landlock_add_rules",
    "landlock_enforce",
    "landlock_handled",
    "landlock_restrict",
    "landlock_ruleset",
    "landlock_scoped",
]

_SYS_LANDLOCK_CREATE_RULESET = 444  # x86_64 and aarch64 share these numbers
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1


def landlock_abi() -> int:
    """Return the Landlock ABI version the kernel offers; ``OSError`` when unavailable."""
    result = libc.syscall(
        ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET),
        ctypes.c_void_p(None),
        ctypes.c_size_t(0),
        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
    )
    return check(int(result), "landlock_create_ruleset")


# Landlock filesystem access rights (linux/landlock.h).
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
FS_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
"""The only rights a rule on a file (not a directory) may carry."""
FS_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
"""Read and execute files, list directories."""
FS_ALL = (1 << 16) - 1
"""Every right (masked with what the ABI handles)."""


def landlock_handled(abi: int) -> int:
    """The filesystem rights Landlock ABI ``abi`` knows (all of them are handled: denied
    unless a rule allows them). Network rights are never handled."""
    if abi < 1:
        return 0
    if abi == 1:
        return FS_REFER - 1
    if abi == 2:
        return FS_TRUNCATE - 1
    if abi < 5:
        return FS_IOCTL_DEV - 1
    return FS_ALL


SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
"""Connections only to abstract Unix sockets bound in the same Landlock domain or one
nested in it. Such a socket has no file, owner or mode: without the scope a
``network: true`` call (the host's network namespace) reached every one the host's
processes listen on, whatever the call's uid (a container runtime's shim: CVE-2020-15257)."""
SCOPE_SIGNAL = 1 << 1  # ABI 6
"""Signals only to processes in the same Landlock domain or one nested in it."""


def landlock_scoped(abi: int) -> int:
    """The scopes this ABI can restrict that the sandbox asks for (signals and abstract
    Unix sockets, from ABI 6)."""
    return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0


class LandlockRules(NamedTuple):
    """A filesystem allow-list: the rights handled, (path, rights) rules beneath paths,
    and the scopes restricted (``SCOPE_SIGNAL``: no signal leaves the call's domain;
    ``SCOPE_ABSTRACT_UNIX_SOCKET``: no connection to an abstract socket bound outside it)."""

    handled: int
    rules: tuple[tuple[str, int], ...]
    scoped: int = 0


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),  # ABI 4; never handled here
        ("scoped", ctypes.c_uint64),  # ABI 6
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_ruleset(rules: LandlockRules) -> int:
    """Create a ruleset fd (close-on-exec) holding ``rules``; enforce it with ``landlock_enforce``.

    Raises:
        OSError: the kernel refused to create the ruleset or to add a rule.
    """
    attr = _RulesetAttr(rules.handled, 0, rules.scoped)
    # An older kernel takes the shorter struct it knows (only the fs rights) when unscoped.
    size = ctypes.sizeof(attr) if rules.scoped else ctypes.sizeof(ctypes.c_uint64)
    ruleset = check(
        syscall(
            _SYS_LANDLOCK_CREATE_RULESET,
            ctypes.byref(attr),
            ctypes.c_size_t(size),
            ctypes.c_uint32(0),
        ),
        "landlock_create_ruleset",
    )
    try:
        landlock_add_rules(ruleset, rules.handled, rules.rules)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def landlock_add_rules(ruleset: int, handled: int, rules: tuple[tuple[str, int], ...]) -> int:
    """Add (path, rights) rules to ``ruleset``; return how many were added.

    A path that cannot be opened (missing, no search permission) gets no rule,
    so it stays denied. Rights are masked with ``handled`` (and, on a file, with
    the rights a file can carry).

    Raises:
        OSError: the kernel refused a rule.
    """
    added = 0
    for path, access in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            allowed = access & handled
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                allowed &= FS_FILE_RIGHTS
            if not allowed:
                continue
            beneath = _PathBeneathAttr(allowed, fd)
            check(
                syscall(
                    _SYS_LANDLOCK_ADD_RULE,
                    ctypes.c_int(ruleset),
                    ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
                    ctypes.byref(beneath),
                    ctypes.c_uint32(0),
                ),
                f"landlock_add_rule({path})",
            )
            added += 1
        finally:
            os.close(fd)
    return added


_add_rule = ctypes.CFUNCTYPE(
    ctypes.c_long,
    ctypes.c_long,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_uint32,
    use_errno=True,
)(("syscall", libc))
"""``syscall(landlock_add_rule, ...)`` typed once: plain ints in, no ctypes objects per rule."""


class OpenedRules:
    """``LandlockRules`` whose paths were opened once, so a ruleset is built from fds.

    With one uid for all calls, every spare loads the rules plus its own
    directory into a ruleset of its own. Opening each path, checking whether it
    is a directory and converting each rule through ctypes cost a spare
    0.45-0.55 ms for 29 rules (about 0.35 ms from opened fds); the zygote
    does that part once here and each fork inherits the ``O_PATH`` fds (numbered
    from ``low`` up, clear of what a call uses) and the rule structs.
    ``ruleset`` then only creates the ruleset and adds the rules by address.
    Whoever inherits the fds closes them (``close``) before running a call:
    Landlock checks the path an ``openat`` reaches, but a call has no use for them.

    A path missing when the zygote starts gets no rule, as in ``landlock_add_rules``.
    """

    __slots__ = ("_addresses", "_attrs", "fds", "rules")

    def __init__(self, rules: LandlockRules, low: int) -> None:
        self.rules = rules
        self.fds: list[int] = []
        entries: list[tuple[int, int]] = []
        try:
            for path, access in rules.rules:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    allowed = access & rules.handled
                    if not stat.S_ISDIR(os.fstat(fd).st_mode):
                        allowed &= FS_FILE_RIGHTS
                    if allowed:
                        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)
                        self.fds.append(high)
                        entries.append((allowed, high))
                finally:
                    os.close(fd)
        except BaseException:
            self.close()
            raise
        self._attrs = (_PathBeneathAttr * len(entries))(*(_PathBeneathAttr(*e) for e in entries))
        size = ctypes.sizeof(_PathBeneathAttr)
        base = ctypes.addressof(self._attrs)
        self._addresses = [base + i * size for i in range(len(entries))]

    def ruleset(self, extra: tuple[tuple[str, int], ...] = ()) -> int:
        """A new ruleset fd with these rules and ``extra`` (opened by path now).

        Raises:
            OSError: the kernel refused to create the ruleset or to add a rule.
        """
        ruleset = landlock_ruleset(self.rules._replace(rules=()))
        try:
            for address in self._addresses:
                if _add_rule(_SYS_LANDLOCK_ADD_RULE, ruleset, 1, address, 0) < 0:
                    check(-1, "landlock_add_rule")
            landlock_add_rules(ruleset, self.rules.handled, extra)
        except BaseException:
            os.close(ruleset)
            raise
        return ruleset

    def close(self) -> None:
        """Close the inherited fds (in a spare: before its call runs)."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


def landlock_enforce(ruleset: int) -> None:
    """Restrict this thread (and what it starts) to ``ruleset``, then close it.

    Needs ``PR_SET_NO_NEW_PRIVS`` first.

    Raises:
        OSError: the kernel refused.
    """
    try:
        check(
            syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)),
            "landlock_restrict_self",
        )
    finally:
        os.close(ruleset)


def landlock_restrict(rules: LandlockRules) -> None:
    """Restrict this thread (and what it starts) to ``rules``; needs no_new_privs first.

    Raises:
        OSError: the kernel refused to create or enforce the ruleset.
    """
    landlock_enforce(landlock_ruleset(rules))
