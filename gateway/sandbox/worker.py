# os.path on purpose: pathlib would grow every fork, and this is the hot path.
# ruff: noqa: PTH102, PTH208
"""The sandbox's child side: what one pre-forked child (a *spare*) does (see ``zygote.py``).

A spare inherits from the zygote what every child shares: the minimal
environment, ``PR_SET_NO_NEW_PRIVS``, the seccomp filter, the zygote's own
Landlock domain (``_fs_policy.import_rules``, which a call's rules only narrow),
the Landlock ruleset fd and, when calls keep uid 0, an empty capability set. Before its call it
starts a new session, keeps only its socket (and that ruleset), becomes a
subreaper for its descendants, makes itself the OOM killer's first choice
(``oom_score_adj`` 1000, see ``_first_to_die``), makes and enters its private
working directory, and rehearses the call path. The supervisor then hands it the
call's socket and output pipe; the child sets rlimits, restricts its
filesystem access to the allow-list (plus its SQLite database's directory, if
any) where the kernel has Landlock, drops to its own unprivileged uid when
calls get one, asks to die with the zygote, adds the action's secrets (read,
with the arguments, from its own call socket) to its environment,
acknowledges the call (``TAKEN``), runs the action, and answers one
length-prefixed ``CallResult`` after killing whatever the action started.

Imports only the standard library, msgspec, ``gateway.sandbox.protocol``,
``gateway.sandbox._mask``, ``gateway.manifests.model`` and ``gateway._unicode``;
action kinds are imported by name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import os
import resource
import signal
import socket
import stat
import sys
from _signal import signal as _set_handler  # type: ignore[import-not-found]
from collections.abc import Awaitable
from typing import Any

import msgspec

from gateway._unicode import valid_text
from gateway.manifests.model import ActionConfig, CallContext
from gateway.sandbox import _linux
from gateway.sandbox._mask import mask
from gateway.sandbox.protocol import (
    HEADER,
    TAKEN,
    CallRequest,
    CallResult,
    Limits,
    Start,
    decode_control,
    frame,
    output_result,
)

__all__ = [
    "CALL_NAME",
    "MESSAGE_CHARS",
    "MINIMAL_ENV",
    "RESULT_LOST",
    "RULESET_FD",
    "SPARE_NAME",
    "TRACEBACK_CHARS",
    "children_of",
    "load_kind",
    "loaded_ruleset",
    "prepare",
    "run_call",
    "run_spare",
    "warm_zygote",
]

SCRATCH_FULL = 75
"""Exit code of a spare that could not make its directory: the zygote's scratch tmpfs
is full (see ``results.SETUP_FAILED``)."""
SPARE_NAME = "gw-spare"
"""Process name of a pre-forked child waiting for a call (``/proc/<pid>/comm``)."""
CALL_NAME = "gw-call"
"""Process name of a child running a call."""

MINIMAL_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
"""The only variables a child sees besides HOME/TMPDIR and its declared secrets."""

_DB_WRITE = (
    _linux.FS_READ
    | _linux.FS_WRITE_FILE
    | _linux.FS_REMOVE_FILE
    | _linux.FS_MAKE_REG
    | _linux.FS_TRUNCATE
)
"""A writable SQLite database's directory: its file, journal and WAL files."""
RULESET_FD = 100
"""A Landlock ruleset fd is moved at or above this, clear of the fds a call dup2s."""
_MAX_REQUEST = 64 * 1024 * 1024
_MB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")


def children_of(parent: int) -> list[int]:
    """Pids whose parent is ``parent`` (the kernel here has no /proc/*/children)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:  # noqa: PTH123 - hot path
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(int(name))
    return found


def prepare(ctl: socket.socket, keep: socket.socket, *also: int) -> None:
    """The first steps of a fresh fork: own session, only ``keep`` and ``also`` open."""
    os.setsid()
    signal.set_wakeup_fd(-1)
    # The C module's own: ``signal.signal`` converts to and from enums in Python, which
    # touches (copies) about 70 pages of the zygote's memory in a fresh fork.
    _set_handler(signal.SIGCHLD.value, signal.SIG_DFL.value)
    _set_handler(signal.SIGXFSZ.value, signal.SIG_IGN.value)  # a write over the limit fails
    _set_handler(signal.SIGINT.value, signal.default_int_handler)  # the zygote ignores it
    ctl.detach()  # its fd is closed below; the object must not close a reused number
    low = 3
    for fd in sorted({keep.fileno(), *also}):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)
    # Die with the zygote while waiting (re-armed after the uid change, which clears it).
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)


def _rehearsal(a: int = 0, b: str = "") -> dict[str, Any]:
    """The python action the zygote and each spare rehearse (never sent by the supervisor)."""
    return {"a": a, "b": b}


_WARM_REQUEST = frame(
    CallRequest(
        kind="gateway.executors.python:PythonConfig",
        config={"function": "gateway.sandbox.worker:_rehearsal"},
        call=CallContext(action="warm", arguments={"a": 1, "b": "x"}, secrets={"K": "v"}),
    )
)


def warm_zygote(opened: _linux.OpenedRules | None) -> None:
    """Prepare, once in the zygote, what every child would otherwise redo (copy-on-write).

    msgspec resolves a type's annotations (``eval`` of each string, with
    ``from __future__ import annotations``) on first use and caches the result
    on the type: the call path is rehearsed here once and every kind's config
    converted (they are all known subclasses of ``ActionConfig`` by now), else
    each child would parse and evaluate the same annotations again (about 1 ms
    of CPU a call). The rehearsal also builds one ``opened`` ruleset, so the
    objects the first use creates are shared too. Only before the first spare:
    the rehearsal's cleanup (``_answer``) kills the caller's children.
    """
    _rehearse()
    if opened is not None:
        with contextlib.suppress(OSError):
            os.close(opened.ruleset())
    seen: set[type[ActionConfig]] = set()
    pending: list[type[ActionConfig]] = [ActionConfig]
    while pending:
        sub: type[ActionConfig]
        for sub in pending.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                pending.append(sub)
                with contextlib.suppress(Exception):  # only the type's resolution matters
                    msgspec.convert({}, sub)


def _rehearse() -> None:
    """Read a request through a socket pair, run ``_rehearsal``, answer: a call's own path."""
    theirs, mine = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with theirs, mine:
        theirs.sendall(_WARM_REQUEST)
        request = _read_request(mine)
        os.environ.update(request.call.secrets)
        for name in request.call.secrets:
            del os.environ[name]
        _answer(mine, _execute(request, Limits()))
        _read_exactly(theirs, HEADER.size)


def _warm(ready: _Prepared) -> None:
    """Rehearse the call path while idle, so its copy-on-write page faults are paid now.

    Runs a request through ``_rehearse``, re-applies the current rlimits and
    touches the directory's owner: the same code and objects a real call
    touches, with nothing irreversible.
    """
    try:
        _rehearse()
        for which in (resource.RLIMIT_CPU, resource.RLIMIT_FSIZE, resource.RLIMIT_CORE):
            resource.setrlimit(which, resource.getrlimit(which))
        os.chown(ready.cwd, -1, -1)
    except Exception:  # noqa: S110 - warming is best effort
        pass


def run_spare(
    ctl: socket.socket,
    zygote_pid: int,
    cwd: str,
    sock: socket.socket,
    *,
    landlock: _linux.LandlockRules | None = None,
    ruleset: int | None = None,
    opened: _linux.OpenedRules | None = None,
) -> int:
    """A pre-forked child: do all that does not depend on the call, wait for it, run it.

    While it waits, a spare makes and enters its working directory ``cwd`` and
    rehearses the call path (``_warm``) so that the copy-on-write page faults of
    its first run (several microseconds each) are paid before a call waits. The
    zygote already set what every child shares: the minimal environment,
    no_new_privs, the seccomp filter, no capabilities (``Init.call_user``
    ``root``), and ``ruleset``: its Landlock rules loaded once when every call
    has a uid of its own (else None: each spare loads its own, see ``_Prepared``,
    from the zygote's ``opened`` rules when it has them).
    """
    prepare(ctl, sock, *(() if ruleset is None else (ruleset,)), *(opened.fds if opened else ()))
    _linux.set_name(SPARE_NAME)
    if os.getppid() != zygote_pid:
        return 72
    _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 1)
    _first_to_die()
    try:
        ready = _Prepared.make(cwd, landlock, ruleset, opened)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return SCRATCH_FULL
        raise
    _warm(ready)
    data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 2)
    sock.close()
    if not data or len(fds) != 2:
        return 0
    msg = decode_control(data)
    assert isinstance(msg, Start)
    _linux.set_name(CALL_NAME)
    return run_call(msg, fds[0], fds[1], zygote_pid, ready, landlock=landlock)


def _first_to_die() -> None:
    """Be the OOM killer's first choice (``oom_score_adj`` 1000), before the zygote and
    the server: in the zygote's memory cgroup (see ``_cgroup``) the largest call goes,
    not the zygote with every call on it, and a call holding memory files it does not
    map (no resident memory of its own to speak of) still outranks the zygote. Raising
    it needs no privilege. Set before Landlock, which keeps ``/proc`` read-only, so a
    call cannot lower it again (without Landlock, to the zygote's 0 at most, lacking
    ``CAP_SYS_RESOURCE``). What it starts inherits it."""
    try:  # os-level: a text file object costs page faults in every spare
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
    except OSError:
        return
    try:
        os.write(fd, b"1000")
    except OSError:
        pass
    finally:
        os.close(fd)


class _Prepared:
    """What a spare set up before its call: its directory, Landlock ruleset, address space.

    ``shared``: ``ruleset`` is the zygote's (one kernel object for every child:
    never add rules to it); otherwise it is this spare's own, with its directory.
    """

    __slots__ = ("cwd", "ruleset", "shared", "vsize")

    def __init__(self, cwd: str, ruleset: int | None, *, shared: bool, vsize: int) -> None:
        self.cwd = cwd
        self.ruleset = ruleset
        self.shared = shared
        self.vsize = vsize

    @classmethod
    def make(
        cls,
        cwd: str,
        landlock: _linux.LandlockRules | None,
        shared: int | None,
        opened: _linux.OpenedRules | None = None,
    ) -> _Prepared:
        """Make and enter ``cwd`` (mode 0700, root's until the call gets its uid).

        Without the zygote's ``shared`` ruleset, load the rules plus ``cwd`` into
        one of our own (number >= 100, clear of what a call dup2s), from the
        zygote's ``opened`` paths when it has them (whose fds are closed here);
        a failure leaves the call to build it, and to fail closed if it cannot.
        """
        os.mkdir(cwd, 0o700)
        os.chdir(cwd)
        os.environ["HOME"] = cwd
        os.environ["TMPDIR"] = cwd
        if "tempfile" in sys.modules:
            sys.modules["tempfile"].tempdir = cwd  # type: ignore[attr-defined]
        sys.dont_write_bytecode = True
        if shared is not None or landlock is None:
            return cls(cwd, shared, shared=shared is not None, vsize=_vsize())
        if opened is not None:
            try:
                ruleset = loaded_ruleset(opened, ((cwd, _linux.FS_ALL),))
            finally:
                opened.close()
        else:
            own = landlock._replace(rules=(*landlock.rules, (cwd, _linux.FS_ALL)))
            ruleset = loaded_ruleset(own)
        return cls(cwd, ruleset, shared=False, vsize=_vsize())


def loaded_ruleset(
    rules: _linux.LandlockRules | _linux.OpenedRules, extra: tuple[tuple[str, int], ...] = ()
) -> int | None:
    """``rules`` (and ``extra``) loaded into a ruleset fd numbered >= ``RULESET_FD``.

    None if the kernel refused: a child without one builds its ruleset when its
    call comes, and fails closed if even that fails.
    """
    try:
        if isinstance(rules, _linux.OpenedRules):
            fd = rules.ruleset(extra)
        else:
            fd = _linux.landlock_ruleset(rules._replace(rules=(*rules.rules, *extra)))
    except OSError:
        return None
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, RULESET_FD)
    except OSError:
        return None
    finally:
        os.close(fd)


def _vsize() -> int:
    with open("/proc/self/statm", "rb") as fh:  # noqa: PTH123 - hot path
        return int(fh.read().split()[0]) * _PAGE


def run_call(
    msg: Start,
    call_fd: int,
    out_fd: int,
    zygote_pid: int,
    ready: _Prepared,
    *,
    landlock: _linux.LandlockRules | None,
) -> int:
    """Confine this prepared child to one call, run it, clean up; return the exit code.

    ``landlock``: the zygote's filesystem allow-list (None: the kernel has no
    Landlock); ``ready.ruleset``: that list, already loaded (see ``_Prepared``).
    A call with directories of its own (a SQLite database's) adds them, to a
    fresh copy if the ruleset is shared. The call's directory is removed by the
    zygote once this child is reaped.
    """
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    if call_fd != 3:
        os.dup2(call_fd, 3)
    os.set_inheritable(3, False)
    ruleset = ready.ruleset
    if ruleset is None or ruleset < 4:
        os.closerange(4, 1 << 20)
        ruleset = None
    else:
        os.closerange(4, ruleset)
        os.closerange(ruleset + 1, 1 << 20)
    limits = msg.limits
    uid, gid = msg.uid, msg.gid
    drop = uid is not None and gid is not None
    if uid is not None and gid is not None:
        os.chown(ready.cwd, uid, gid)
    _apply_limits(limits, drop=drop, vsize=ready.vsize)
    if landlock is not None:  # after no_new_privs, before the uid change (opens as the zygote)
        extra = (
            *((p, _linux.FS_READ) for p in msg.fs_read),
            *((p, _DB_WRITE) for p in msg.fs_write),
            *((p, _DB_WRITE) for p in _wal_files(msg.fs_wal)),
        )
        if ruleset is None or (extra and ready.shared):
            if ruleset is not None:
                os.close(ruleset)
            ruleset = _linux.landlock_ruleset(landlock)
            extra = (*extra, (ready.cwd, _linux.FS_ALL))
        if extra:
            _linux.landlock_add_rules(ruleset, landlock.handled, extra)
        _linux.landlock_enforce(ruleset)
    elif ruleset is not None:
        os.close(ruleset)
    if uid is not None and gid is not None:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    # After the uid change (which clears it): die with the zygote, and check we did not miss it.
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != zygote_pid:
        return 72
    sock = socket.socket(fileno=3)
    sock.setblocking(True)
    request = _read_request(sock)
    sock.sendall(TAKEN)
    if request.call.secrets:
        os.environ.update(request.call.secrets)
    result = _execute(request, limits)
    return _answer(sock, result)


def _wal_files(databases: list[str]) -> list[str]:
    """The ``-wal`` and ``-shm`` files of those ``databases`` in WAL mode, made if missing.

    A read-only connection to a WAL-mode database opens both files (it writes its
    read marks into ``-shm``), and the last connection to close removes them: a
    call allowed only to read the folder failed ("attempt to write a readonly
    database"). They are made here, before Landlock and the uid change, with the
    database's owner and mode (so the call may write them where it may write the
    database, as SQLite would have made them), and the call gets a rule for each
    file, not for the folder or the database.
    """
    files = []
    for database in databases:
        try:
            with open(database, "rb") as fh:  # noqa: PTH123 - the header only
                header = fh.read(20)
                info = os.fstat(fh.fileno())
        except OSError:
            continue  # the call reports it
        if header[:16] != b"SQLite format 3\x00" or header[18:20] != b"\x02\x02":
            continue  # not WAL mode: a rollback journal is never needed to read
        for suffix in ("-wal", "-shm"):
            path = database + suffix
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                # Only a regular file: a link would carry the rule (and SQLite's writes) to
                # wherever it points.
                with contextlib.suppress(OSError):
                    if stat.S_ISREG(os.lstat(path).st_mode):
                        files.append(path)
                continue
            except OSError:
                continue  # the folder is not ours to write: SQLite says why
            try:
                if os.geteuid() == 0:
                    os.fchown(fd, info.st_uid, info.st_gid)
                os.fchmod(fd, info.st_mode & 0o666)
            finally:
                os.close(fd)
            files.append(path)
    return files


MESSAGE_CHARS = 2000
"""What a failed result keeps of the exception's message (its start)."""
TRACEBACK_CHARS = 8000
"""What a failed result keeps of the traceback (its end)."""

RESULT_LOST = 74
"""Exit code of a child whose action closed or replaced fd 3, so its result could not go.

An action may exit with 74 itself: the supervisor's message names both (``exit_failure``)."""


def _answer(sock: socket.socket, result: CallResult) -> int:
    """Kill what the action started, send ``result``; the exit code (73: not clean).

    ``RESULT_LOST`` when the action closed its result socket (fd 3) or ``dup2``-ed
    something else over it: the supervisor then reads no result, and says why.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    # Clean up before answering: when the supervisor has the result, only we are left,
    # and we are about to exit (a thread of the action may still fork: check again after).
    clean = _kill_descendants()
    try:
        data = frame(result)
    except (msgspec.EncodeError, ValueError):  # a lone surrogate: message or traceback
        data = frame(
            msgspec.structs.replace(
                result,
                message=valid_text(result.message),
                traceback=valid_text(result.traceback),
            )
        )
    try:
        sock.sendall(data)
    except OSError:
        _kill_descendants()
        return RESULT_LOST
    return 0 if _kill_descendants() and clean else 73


def _apply_limits(limits: Limits, *, drop: bool, vsize: int) -> None:
    address_space = vsize + limits.memory_mb * _MB
    table = [
        (resource.RLIMIT_AS, address_space, address_space),
        (resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1),
        (resource.RLIMIT_FSIZE, limits.max_file_size_mb * _MB, limits.max_file_size_mb * _MB),
        (resource.RLIMIT_NOFILE, limits.max_open_files, limits.max_open_files),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if drop:
        # RLIMIT_NPROC counts per uid: meaningful only once the call has a uid of its own.
        table.append((resource.RLIMIT_NPROC, limits.max_processes, limits.max_processes))
    for which, soft, hard in table:
        resource.setrlimit(which, (soft, hard))


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < size:
        chunk = sock.recv(min(size - len(buffer), 1 << 20))
        if not chunk:
            raise EOFError("the supervisor closed the call socket")
        buffer += chunk
    return bytes(buffer)


def _read_request(sock: socket.socket) -> CallRequest:
    (size,) = HEADER.unpack(_read_exactly(sock, HEADER.size))
    if size > _MAX_REQUEST:
        raise ValueError("request too large")
    return msgspec.json.decode(_read_exactly(sock, size), type=CallRequest)


def load_kind(path: str) -> type[ActionConfig]:
    """The ``ActionConfig`` class named ``module:Class`` (imported by the zygote already)."""
    module_name, _, qualname = path.partition(":")
    # Imported by the zygote: sys.modules spares the child importlib's Python code.
    obj: Any = sys.modules.get(module_name) or importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, ActionConfig)):
        raise TypeError(f"{path} is not an action kind")
    return obj


async def _await(value: Awaitable[Any]) -> Any:
    return await value


_LEFT_GRACE = 1.0
"""Seconds the tasks an async action left running get to end once cancelled."""


def _run_async(value: Awaitable[Any]) -> Any:
    """Await ``value`` on a fresh event loop; what it left running does not hold the answer.

    ``asyncio.run`` waits, after the action returned, for every task it left
    (one that ignores cancellation: forever) and every thread of the loop's
    executor (``to_thread`` of a call it gave up on with ``wait_for``), so
    the call timed out and its value was lost. Here the left tasks are
    cancelled and get ``_LEFT_GRACE`` seconds, threads none: the child exits
    right after answering, and they end with it.
    """
    import asyncio

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_await(value))
    finally:
        try:
            left = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in left:
                task.cancel()
            left.append(loop.create_task(loop.shutdown_asyncgens()))
            loop.run_until_complete(asyncio.wait(left, timeout=_LEFT_GRACE))
        finally:
            asyncio.set_event_loop(None)
            loop.close()  # its executor is shut down without waiting for the threads


def _enc_hook(obj: Any) -> Any:
    raise TypeError(f"the action returned a {type(obj).__name__}, which is not JSON-serializable")


def _carried(detail: object) -> dict[str, Any]:
    """The entries of an exception's ``detail`` that JSON can carry (others are dropped).

    One value the result frame could not encode would otherwise fail the whole
    answer, and the call would read as a sandbox failure instead of its error.
    """
    if not isinstance(detail, dict):
        return {}
    kept: dict[str, Any] = {}
    for key, value in detail.items():
        try:
            msgspec.json.encode(value)
        except (TypeError, ValueError, OverflowError, RecursionError):
            continue
        kept[valid_text(str(key))] = value  # a key a lone surrogate would break too
    return kept


def _execute(request: CallRequest, limits: Limits) -> CallResult:
    """Run the action; turn its value or exception into a ``CallResult``.

    What the action hands back is its code too: a ``str`` subclass's methods, an
    exception's ``__str__``, ``error_type`` or ``detail`` may raise. None of that may
    escape (the spare would exit 71, reported as a sandbox failure): the value is
    copied to a plain ``str`` first, and an exception that cannot be read is
    reported by its type alone.
    """
    try:
        config = msgspec.convert(request.config, load_kind(request.kind))
        value = config.run(request.call)
        if hasattr(value, "__await__"):
            value = _run_async(value)
        if isinstance(value, str):
            text = str.__str__(value)  # a plain copy of a subclass: its methods never run
        else:
            text = msgspec.json.encode(value, enc_hook=_enc_hook).decode()
    except MemoryError:
        return CallResult(
            ok=False,
            error_type="memory",
            message=f"the action ran out of memory (limit {limits.memory_mb} MB)",
        )
    except BaseException as exc:
        return _raised(exc, request.call.masked())
    return output_result(text, limits.max_output_kb, request.call.masked())


def _raised(exc: BaseException, secrets: dict[str, str]) -> CallResult:
    """The ``CallResult`` of an exception the action raised (read defensively, see ``_execute``).

    ``secrets`` are masked before the message and the traceback are cut (see
    ``output_result``); the server masks what it receives again.
    """
    import traceback

    try:  # it guards the exception's str() itself, not a metaclass that breaks __qualname__
        trace = mask(traceback.format_exc(), secrets)[-TRACEBACK_CHARS:]
    except BaseException:
        trace = "(the traceback could not be formatted)"
    try:
        typed = getattr(exc, "error_type", None)
        message = f"{exc}" if typed else f"{type(exc).__name__}: {exc}"
        return CallResult(
            ok=False,
            error_type=f"{typed or 'exception'}",
            message=mask(message, secrets)[:MESSAGE_CHARS],
            detail=_carried(getattr(exc, "detail", None)),
            traceback=trace,
        )
    except BaseException:  # its message, type or detail raised: report what is certain
        return CallResult(
            ok=False,
            error_type="exception",
            message=f"the action raised {_type_name(exc)}, whose message could not be read",
            traceback=trace,
        )


def _type_name(exc: BaseException) -> str:
    """The name of ``exc``'s class as the interpreter holds it (a metaclass cannot fake it)."""
    name: str = _TYPE_NAME.__get__(type(exc), type)
    return name


_TYPE_NAME: Any = type.__dict__["__name__"]


def _children_of_me(me: int) -> list[int]:
    """``children_of(me)``; when listing /proc fails for want of a file descriptor (the
    action used up ``max_open_files``), the action's descriptors are closed first: it has
    returned, and only 0-3 (its output and the result socket) are still needed."""
    try:
        return children_of(me)
    except OSError:
        os.closerange(4, 1 << 20)
        return children_of(me)


def _kill_descendants() -> bool:
    """Kill and reap everything this call started (we are its subreaper); True when clean."""
    me = os.getpid()
    for _ in range(1000):
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid:
            continue
        for child in _children_of_me(me):
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return True
    return False
