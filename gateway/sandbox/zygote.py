# os.path on purpose: pathlib would grow every fork, and this is the hot path.
# ruff: noqa: PTH100, PTH101, PTH102, PTH106, PTH116, PTH118, PTH120
"""The zygote: a small, single-threaded interpreter that forks one child per call.

The supervisor starts ``python -I -B -c BOOT <fd>`` with a minimal environment;
``main`` turns that interpreter into a zygote: once the supervisor's ``Init`` came,
it becomes pid 1 of a pid and mount namespace of its own, with a fresh ``/proc``
and its calls' directories on a tmpfs (``_private``: the process started only
waits for it), then it imports the action kinds
and the catalog's Python modules once (user modules from the catalog's code
snapshot, ``_snapshot``: the source the load validated, whatever the disk holds
by now; others always from source: a same-size edit within a second must not
run a stale ``.pyc``), optionally
moves itself into a new network namespace, rehearses a call once
(``worker.warm_zygote``: what the first use of each type and kind computes is
then shared by every child), trims its heap, and then keeps
``_SPARES`` idle pre-forked children (*spares*, see ``worker.py``) lent to the
supervisor: each spare's socket goes to the supervisor in a ``Spare``
message, and the supervisor hands a call straight to a spare, so the zygote
is not on the call's path at all. ``Used`` says a spare got its call (fork the
next one: at once under load, after the call when it is the only one, see
``_CALM_GAP``). It holds no secrets (arguments travel on the call's own socket
straight to the child), is undumpable, and is the subreaper of its children:
it reaps them, kills whatever a failed call left behind, removes the child's
directory (a large one in a *remover*, a child of its own: see ``_INLINE_REMOVAL``)
and reports ``Exited``; ``Kill`` kills a spare's process group.
Where the kernel has Landlock, it computes the children's filesystem
allow-list once (``_fs_policy.landlock_rules``) from the supervisor's
``FsPolicy``, its own prefixes and ``sys.path``, and loads it once (calls with
uids of their own share one ruleset) or opens its paths once (``OpenedRules``:
with one uid for all calls, each spare builds its own ruleset from those fds).
Where it has not, it covers what that list would keep out with empty read-only
mounts in its own mount namespace, once (``_masks``). Either happens before the
user modules are imported (``_confine_imports``): their top-level code runs in
the zygote, and what it keeps in a global every call inherits, so it is confined
like a call (Landlock: ``_fs_policy.import_rules``, a layer on the zygote itself
that every child inherits and narrows).

Imports only the standard library, msgspec, ``gateway.sandbox`` and the
fresh-source loader of ``gateway.manifests._introspect`` (and, through
``_snapshot``, ``gateway.manifests.catalog``).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.machinery
import os
import selectors
import signal
import socket
import sys
import time

import msgspec

from gateway.manifests._confine import confined_hint
from gateway.manifests.catalog import SourceModule
from gateway.sandbox import _linux, _private
from gateway.sandbox._cleanup import remove_tree
from gateway.sandbox._fs_policy import (
    import_policy,
    import_rules,
    landlock_rules,
    pruned,
    read_guard,
)
from gateway.sandbox._libc import trim_heap
from gateway.sandbox._masks import cover_protected, will_mask
from gateway.sandbox._snapshot import read_snapshot, serve_snapshot
from gateway.sandbox.protocol import (
    Exited,
    Init,
    Kill,
    PrivateView,
    Ready,
    Spare,
    Used,
    decode_control,
    encode,
)
from gateway.sandbox.worker import (
    MINIMAL_ENV,
    children_of,
    load_kind,
    loaded_ruleset,
    run_spare,
    warm_zygote,
)

__all__ = ["BOOT", "REMOVER_NAME", "main"]

# Where the allow-list tests look for them (the computation lives in ``_fs_policy``).
_landlock_rules = landlock_rules
_pruned = pruned

_SPARES = 2
"""Idle pre-forked children kept lent out: forking and warming are off the call path."""
_CALM_GAP = 0.001
"""A call that starts alone, at least this many seconds after the last call ended, is
*calm*: while it runs, the zygote keeps one idle spare, not ``_SPARES``, and forks the
other once the call ended. The refill (a fork, then the new spare's copy-on-write
faults: about 3 ms of CPU) would otherwise compete for a CPU with the call it
replaces: on 2 cores, ``bench/sandbox.py``'s paced p50 went from 0.94-1.35 to
0.77-0.90 ms and its p95 from 2.7-3.2 to 1.0-2.0 ms (alternating runs). Back-to-back
and concurrent calls are never calm: their refill starts at once, so the next call
finds a spare warmed up (a deferred refill there cost 12% back to back)."""
_FORK_RETRY = 0.1
"""Seconds before forking again after the kernel refused a fork."""
_SWEEP_GAP = 0.5
"""Seconds after a call's child exited with status 0 before the zygote kills what it left.

A child that answered killed everything its action started first; but an action can
end the child itself (``os._exit(0)``) after starting a daemon in a session of its
own (fork, ``setsid``, fork), which then outlived the call for good: it is the
zygote's child now (subreaper), outside every process group the zygote kills, and
status 0 looks like a clean exit. Finding such strays scans ``/proc`` (1-5 ms), too
dear for every call: the zygote sweeps at most once per gap, so a stray lives at most
this long. A child that failed (status not 0) is swept at once, as before."""
_INLINE_REMOVAL = 512
"""Entries of a call's directory the zygote removes itself; a larger tree goes to a remover.

The zygote serves every call of its key: while it removes a tree it reaps no child,
forks no spare and answers no ``Kill``. A call that made ~150,000 files held it 2.8 s
(more on a busy disk), and a zygote that does not reap a killed call within the
supervisor's ``_KILL_GRACE`` is replaced, with every call on it. Most calls leave their
directory empty (one ``rmdir``); a few hundred entries cost about a millisecond. Past
that, a remover process (``REMOVER_NAME``, forked from the zygote: same uid, seccomp
filter, cgroups and limits) removes the rest while the zygote goes on; its directory
name is never reused (serial and random), and what a remover has not removed when the
zygote shuts down goes with the zygote's folder."""
_REMOVERS = 2
"""Removers running at once (each one more task in the zygote's pids cgroup, see the
supervisor's ``_ZYGOTE_TASKS``); further trees wait for one to end, in order."""
REMOVER_NAME = "gw-remover"
"""Process name of a remover (``/proc/<pid>/comm``)."""
OPENED_FD = 200
"""The zygote's opened allow-list paths (``OpenedRules``) are numbered from here, above
``RULESET_FD`` (a spare's own ruleset lands at 100) and clear of what a call dup2s."""

BOOT = (
    "import sys; sys.path[:0] = sys.argv[2:]; "
    "from gateway.sandbox.zygote import main; main(int(sys.argv[1]))"
)
"""The ``-c`` program the supervisor starts the zygote with."""

_OWN = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
"""The gateway package's directory: never user code, even under the gateway root."""

_FALLBACK_PRELOAD = [
    "asyncio",
    "concurrent.futures.thread",  # asyncio.to_thread and run_in_executor import it lazily
    "json",
    "datetime",
    "decimal",
    "re",
    "math",
    "random",
    "statistics",
    "collections",
    "itertools",
    "functools",
    "dataclasses",
    "typing",
    "uuid",
    "hashlib",
    "base64",
    "urllib.parse",
    "textwrap",
    "string",
    "csv",
    "io",
    "pathlib",
    "subprocess",
    "time",
    "zoneinfo",
    "fractions",
    "operator",
    "copy",
    "pprint",
    "enum",
    "encodings.idna",
    "socket",
    "selectors",
    "threading",
    "shutil",
    "tempfile",
    "linecache",
    "tokenize",
    "glob",
    "fnmatch",
    "struct",
    "heapq",
    "bisect",
    "sqlite3",
]


def main(ctl_fd: int) -> None:
    """Run the zygote on control socket ``ctl_fd`` until the supervisor closes it."""
    ctl = socket.socket(fileno=ctl_fd)
    ctl.setblocking(True)
    _Zygote(ctl).serve()


class _Zygote:
    """Keeps pre-forked spares lent to the supervisor; reaps them and all they started.

    Every child is a spare with a serial that is never reused (pids are): the
    supervisor names children by serial in ``Used`` and ``Kill``, the zygote in
    ``Spare`` and ``Exited``, so a late ``Kill`` can never hit a recycled pid.
    """

    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.pid = os.getpid()
        self.children: dict[int, int] = {}  # pid -> serial, until reaped
        self.serials: dict[int, int] = {}  # serial -> pid, until reaped
        self.idle: set[int] = set()  # serials lent out and not yet given a call
        self.serial = 0
        self.fork_failed_at = 0.0
        self.calm = False  # the running call is calm (see _CALM_GAP): keep one spare
        self.last_exit = 0.0  # when a child that got a call was last reaped (monotonic)
        self.sweep_at: float | None = None  # when to kill strays (see _SWEEP_GAP)
        self.tmp = _mkdtemp()
        os.chmod(self.tmp, 0o711)  # noqa: S103 - children may enter their own dir, not list others
        self.landlock: _linux.LandlockRules | None = None  # the children's allow-list
        self.ruleset: int | None = None  # that list loaded once, if every call may share it
        self.opened: _linux.OpenedRules | None = None  # else its paths, opened once
        self.dirs: dict[int, str] = {}  # serial -> the child's working directory
        self.removers: dict[int, str] = {}  # pid -> the tree a remover is removing
        self.removals: list[str] = []  # trees waiting for a remover (see _INLINE_REMOVAL)

    def init(self) -> None:
        msg, code = _receive_init(self.ctl)
        # From here on in namespaces of our own (or not, and the view says why); the
        # process the supervisor started waits for this one (see _private).
        view, host_pid, own_mounts = _private.enter(self.ctl.fileno(), self.tmp, msg.tmp_mb)
        self.pid = os.getpid()
        # Python's own SIGINT handler makes a signal a call may send (and Ctrl-C in a
        # terminal) a KeyboardInterrupt that ends the zygote with every call on it; the
        # supervisor ends it by closing its socket. Children get the default back.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        network_error: str | None = None
        if msg.isolate_network:
            # Before the next line: not root, it writes its own /proc/self/uid_map, which
            # an undumpable process does not own (EACCES: every network: false call of a
            # non-root gateway, the container image's, was refused as unisolated).
            network_error = _isolate_network(own_mounts)
        # Nothing in the zygote is worth reading, but same-uid children must not try.
        _linux.prctl(_linux.PR_SET_DUMPABLE, 0)
        _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 1)
        for path in reversed(msg.paths):
            if path not in sys.path:
                sys.path.insert(0, path)
        _fresh_source_under(msg.paths)
        # The catalog's user modules from the code it validated, never from disk (a
        # push since rejected, or landed after the load, must not run under it).
        serve_snapshot(code, _OWN)
        del code
        # The user modules' top-level code runs below: confined like a call from here on
        # (Landlock on this process, else the mounts of _masks), and every child inherits it.
        _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
        _import_home(self.tmp)
        view = _confine_imports(view, msg, self.tmp, own_mounts)
        errors: dict[str, str] = {}
        warnings: list[str] = []
        modules = list(msg.modules)
        if msg.call_user == "own" and not _world_readable(os.path.dirname(os.__file__)):
            # Children drop to another uid and could not import the rest of the stdlib.
            modules += [m for m in _FALLBACK_PRELOAD if m not in modules]
            warnings.append(
                f"the Python standard library ({os.path.dirname(os.__file__)}) is not readable "
                "by other users; sandboxed actions can only import modules the zygote preloaded"
            )
        for module in ["traceback", *modules]:
            try:
                name, _, hook = module.partition(":")
                imported = importlib.import_module(name)
                if hook:  # "module:function" = import, then call it once (warm-up)
                    getattr(imported, hook)()
            except BaseException as exc:
                errors[module] = f"{type(exc).__name__}: {exc}{confined_hint(exc)}"
        for kind, config in msg.warm:
            with contextlib.suppress(Exception):  # the call reports what fails here
                msgspec.convert(config, load_kind(kind)).sandbox_warm()
        self.landlock = _landlock_rules(msg.fs, self.tmp)
        capabilities = None
        if msg.probe:
            from gateway.sandbox.probes import probe

            capabilities = msgspec.structs.replace(probe(), **msgspec.structs.asdict(view))
        if self.landlock is not None and msg.call_user == "own":
            self.landlock, self.ruleset = _shared_ruleset(self.landlock, self.tmp)
        elif self.landlock is not None:
            with contextlib.suppress(OSError):  # each spare then opens the paths itself
                self.opened = _linux.OpenedRules(self.landlock, OPENED_FD)
        # Children inherit the environment, no_new_privs and the seccomp filter: set
        # them here once (the zygote needs none of the denied calls from now on).
        os.environ.clear()
        os.environ.update(MINIMAL_ENV)
        _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
        with contextlib.suppress(OSError):  # `gateway doctor` says when it is missing
            _linux.install_seccomp_filter()
        if msg.isolate_network:
            # A Unix socket file is reachable from any network namespace: no new ones.
            with contextlib.suppress(OSError):
                _linux.install_no_unix_sockets_filter()
        if msg.call_user in ("root", "same"):
            # As root, calls keep uid 0 without capabilities; the zygote needs none from
            # here on (its children are uid 0 too), so it drops them once for all. Not
            # root, what it has are a user namespace's (made for the private view and
            # the network), which calls must not inherit either (signal any process of
            # the namespace, override the modes of our uid's files...).
            _linux.drop_capabilities()
        warm_zygote(self.opened)  # after the kinds' imports: their configs are all known
        gc.collect()
        gc.freeze()  # keep the imported heap shared copy-on-write across forks
        trim_heap()  # fewer pages mapped: cheaper fork and exit per call
        ready = Ready(
            pid=host_pid,
            private=view,
            network_isolated=msg.isolate_network and network_error is None,
            network_error=network_error,
            import_errors=errors,
            warnings=warnings,
            capabilities=capabilities,
            tmp=self.tmp,
        )
        self.ctl.sendall(encode(ready))

    def serve(self) -> None:
        self.init()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w)
        selector = selectors.DefaultSelector()
        selector.register(self.ctl, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        while True:
            # Keep _SPARES idle spares lent out (one during a calm call); a message
            # waiting comes first.
            fork_at = self.fork_due()
            events = selector.select(timeout=self.wake_in(fork_at))
            if self.sweep_at is not None and time.monotonic() >= self.sweep_at:
                self.sweep_at = None
                self.kill_strays()
            if not events and fork_at is not None and time.monotonic() >= fork_at:
                self.fork_spare()
            for key, _ in events:
                if key.fd == wake_r:
                    while True:
                        try:
                            if not os.read(wake_r, 512):
                                break
                        except BlockingIOError:
                            break
                    self.reap()
                    continue
                try:
                    data, fds, _, _ = socket.recv_fds(self.ctl, 1 << 16, 4)
                except OSError:  # the supervisor went away mid-message: same as EOF
                    data, fds = b"", []
                for fd in fds:  # nothing the supervisor sends here carries fds
                    os.close(fd)
                if not data:
                    self.shutdown()
                    return
                msg = decode_control(data)
                if isinstance(msg, Used):
                    self.idle.discard(msg.id)
                    self.calm = (
                        len(self.children) - len(self.idle) == 1
                        and time.monotonic() - self.last_exit >= _CALM_GAP
                    )
                elif isinstance(msg, Kill):
                    self.kill(msg.id)

    def fork_due(self) -> float | None:
        """When to fork a spare (monotonic; None: enough are lent): keep ``_SPARES`` idle
        (one during a calm call), not sooner than ``_FORK_RETRY`` after a refused fork."""
        calls = len(self.children) - len(self.idle)
        if len(self.idle) < (1 if self.calm and calls else _SPARES):
            return self.fork_failed_at + _FORK_RETRY
        return None

    def wake_in(self, fork_at: float | None) -> float | None:
        """Seconds until a spare is due (``fork_at``) or the sweep, whichever is sooner.

        No generator or ``min()``: the serve loop turns a few times per call, and every
        object it makes is a copy-on-write fault after a fork (13 a call, measured).
        """
        sweep_at = self.sweep_at
        if sweep_at is not None and (fork_at is None or sweep_at < fork_at):
            fork_at = sweep_at
        return None if fork_at is None else max(0.0, fork_at - time.monotonic())

    def fork_spare(self) -> None:
        """Fork a spare and lend its socket to the supervisor."""
        # Unguessable: a call may not reach a sibling's directory by name (same uid, no root).
        cwd = os.path.join(self.tmp, f"s{self.serial + 1}-{os.urandom(12).hex()}")
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError:
            mine.close()
            theirs.close()
            self.fork_failed_at = time.monotonic()
            return
        if pid == 0:  # pragma: no cover - the spare child
            code = 70
            try:
                # Not closed here (Python code: more pages copied): the spare closes
                # every fd it does not keep, and ends with os._exit (no finalizers).
                mine.detach()
                code = run_spare(
                    self.ctl,
                    self.pid,
                    cwd,
                    theirs,
                    landlock=self.landlock,
                    ruleset=self.ruleset,
                    opened=self.opened,
                )
            except BaseException:
                code = 71
            finally:
                os._exit(code)
        theirs.close()
        self.serial += 1
        self.children[pid] = self.serial
        self.serials[self.serial] = pid
        self.dirs[self.serial] = cwd
        self.idle.add(self.serial)
        # If the supervisor is gone, EOF on the next read ends the loop.
        with contextlib.suppress(OSError), mine:
            socket.send_fds(self.ctl, [encode(Spare(id=self.serial, pid=pid))], [mine.fileno()])

    def kill(self, serial: int) -> None:
        pid = self.serials.get(serial)
        if pid is None:
            return  # already reaped
        # The child is not reaped until SIGCHLD is handled, so pid and pgid are still ours.
        for target in (-pid, pid):
            with contextlib.suppress(OSError):
                os.kill(target, signal.SIGKILL)

    def reap(self) -> None:
        if self.removals:  # a fork refused earlier (no pid left): try again
            self.start_removers()
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            serial = self.children.pop(pid, None)
            if serial is not None:
                # The zombie keeps the pgid reserved, so this hits only its group.
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            if serial is None:  # a remover that ended, or a stray we killed earlier
                if self.removers.pop(pid, None) is not None:
                    self.start_removers()
                continue
            del self.serials[serial]
            cwd = self.dirs.pop(serial)
            code = os.waitstatus_to_exitcode(status)
            had_call = serial not in self.idle
            if not had_call:
                self.idle.discard(serial)
                if code > 0:  # failed before any call: do not spin
                    self.fork_failed_at = time.monotonic()
            else:
                self.last_exit = time.monotonic()
            if code != 0:
                # The child did not clean up: its orphans were handed to us (subreaper).
                self.kill_strays()
            elif had_call and self.sweep_at is None:
                # Clean, or an action that ended the child itself: see _SWEEP_GAP.
                self.sweep_at = time.monotonic() + _SWEEP_GAP
            self.send(Exited(id=serial, status=code))
            try:
                os.rmdir(cwd)  # most calls leave their directory empty: one system call
            except OSError:
                self.remove(cwd)

    def remove(self, cwd: str) -> None:
        """Remove a call's directory, also what it locked (chmod 0): up to
        ``_INLINE_REMOVAL`` entries here, the rest in a remover."""
        if not remove_tree(cwd, _INLINE_REMOVAL):
            self.removals.append(cwd)
            self.start_removers()

    def start_removers(self) -> None:
        """Fork a remover for each waiting tree, ``_REMOVERS`` at most running at once.

        A refused fork leaves the tree waiting: tried again when a child is reaped,
        else removed with the zygote's folder at shutdown.
        """
        while self.removals and len(self.removers) < _REMOVERS:
            path = self.removals[0]
            try:
                pid = os.fork()
            except OSError:
                return
            if pid == 0:  # pragma: no cover - the remover
                code = 0
                try:
                    _linux.set_name(REMOVER_NAME)
                    # Gone with the zygote (whose shutdown removes its whole folder),
                    # and not holding the control socket open (the supervisor's EOF).
                    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
                    os.close(self.ctl.fileno())
                    if os.getppid() == self.pid:
                        with contextlib.suppress(OSError):
                            os.nice(10)  # behind the calls for a CPU
                        remove_tree(path)
                except BaseException:
                    code = 71
                finally:
                    os._exit(code)
            self.removals.pop(0)
            self.removers[pid] = path

    def kill_strays(self) -> None:
        for _ in range(1000):
            strays = [
                p
                for p in children_of(self.pid)
                if p not in self.children and p not in self.removers
            ]
            if not strays:
                return
            for pid in strays:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            for pid in strays:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)

    def shutdown(self) -> None:
        for pid in list(self.children):
            for target in (-pid, pid):
                with contextlib.suppress(OSError):
                    os.kill(target, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()
        # The removers' trees go with the folder below (removing it twice at once is
        # only slower).
        for pid in self.removers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in self.removers:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.removers.clear()
        self.kill_strays()
        remove_tree(self.tmp)

    def send(self, message: msgspec.Struct) -> None:
        # If the supervisor is gone, EOF on the next read ends the loop.
        with contextlib.suppress(OSError):
            self.ctl.sendall(encode(message))


def _receive_init(ctl: socket.socket) -> tuple[Init, list[SourceModule]]:
    """The supervisor's ``Init`` and the code snapshot in the memory file riding along.

    Read once, before anything is imported; a snapshot shorter than ``code_size``
    raises, and the zygote does not start.
    """
    data, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 1)
    try:
        msg = decode_control(data)
        assert isinstance(msg, Init)
        return msg, read_snapshot(fds[0], msg.code_size) if msg.code_size else []
    finally:
        for fd in fds:
            os.close(fd)


def _fresh_source_under(roots: list[str]) -> None:
    """Import user code under ``roots`` from its source, never from ``__pycache__``.

    A checkout that rewrites a file in place with the same size within the same
    second leaves a ``.pyc`` that still looks valid, and would run old code. The
    zygote runs with ``-B`` (writes no bytecode) and compiles user modules, only
    those, from source (the loader's introspection does the same: its loader is
    reused); the gateway package, the standard library and site-packages keep
    their caches.
    """
    from gateway.manifests._introspect import _FreshSourceLoader, _is_user_file

    own = _OWN
    real = [os.path.realpath(root) for root in roots]
    details = [
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
        (_FreshSourceLoader, importlib.machinery.SOURCE_SUFFIXES),
    ]

    def hook(path: str) -> importlib.machinery.FileFinder:
        resolved = os.path.realpath(path or ".")
        mine = resolved == own or resolved.startswith(own + os.sep)
        if mine or not any(resolved == r or _is_user_file(resolved, r) for r in real):
            raise ImportError("not user code")  # the default finders take it
        return importlib.machinery.FileFinder(path, *details)

    sys.path_hooks.insert(0, hook)
    for root in roots:  # a finder cached for a root before the hook was in place
        sys.path_importer_cache.pop(root, None)


def _import_home(tmp: str) -> None:
    """Give the user modules' top-level code a TMPDIR and HOME it may write: ``tmp/import``.

    Import-time code wants a temporary directory or a cache under HOME (tempfile,
    matplotlib, platformdirs); the zygote's own layer lets it write only ``tmp``,
    the calls' directory root. The folder is root's (or the server uid's), mode
    0700: a call with a uid of its own cannot enter it, and a call with the
    zygote's uid is allowed only its own directory by its Landlock list. Calls get
    their own directory as TMPDIR and HOME (``worker``), and the environment is
    reset before the first fork.
    """
    home = os.path.join(tmp, "import")
    os.mkdir(home, 0o700)
    os.environ["TMPDIR"] = home
    os.environ["HOME"] = home
    if "tempfile" in sys.modules:  # a cached answer would name the server's TMPDIR
        sys.modules["tempfile"].tempdir = None  # type: ignore[attr-defined]


def _confine_imports(view: PrivateView, msg: Init, tmp: str, own_mounts: bool) -> PrivateView:
    """Confine this zygote before it imports user modules (after no_new_privs).

    With Landlock, enforces ``import_rules`` on itself: the modules' top-level code
    reads only what calls read (never ``.env``, the thread store, the knowledge
    index, the gateway root's other entries), and a module global cannot carry
    such a file into the calls forked later. Without it, covers the same with the
    mounts of ``_masks``, once, before any import or fork. Returns ``view`` with
    what the mounts did.

    Raises:
        OSError: the kernel refused the Landlock layer; the zygote does not start.
    """
    rules = import_rules(msg.fs, tmp)
    if rules is not None:
        # Computed first: it lists / and walks /etc, which the first layer keeps out.
        # In every mode: calls under uids of their own cannot read the zygote's private
        # files in /etc, but its import-time code could, into a global they inherit.
        guard = read_guard(os.geteuid())
        _linux.landlock_restrict(rules)
        if guard is not None:  # see read_guard
            _linux.landlock_restrict(guard)
        return view
    fs = None if msg.fs is None else import_policy(msg.fs, tmp)
    return cover_protected(view, None, fs, tmp, msg.call_user, own_mounts)


def _shared_ruleset(
    rules: _linux.LandlockRules, tmp: str
) -> tuple[_linux.LandlockRules, int | None]:
    """The children's rules plus the whole call-directory root, and that list loaded once.

    Only when every call has a uid of its own: a child may then use anything
    below ``tmp`` (root's, mode 0711: enterable, not listable), because a
    sibling's directory is mode 0700 and owned by the sibling's uid (or still by
    root), so ownership, not Landlock, keeps calls apart. With one uid for all
    calls each spare loads the rules plus its own directory instead (a call
    owning ``tmp`` could ``chmod`` it and list the others). The fd (number >=
    100, inherited by every fork) is None if the kernel refused: each spare then
    builds its own, and the call fails closed if even that fails.
    """
    rules = rules._replace(rules=(*rules.rules, (tmp, _linux.FS_ALL)))
    return rules, loaded_ruleset(rules)


def _mkdtemp() -> str:
    base = os.environ.get("TMPDIR") or "/tmp"  # noqa: S108 - a private, random dir below it
    while True:
        path = os.path.join(base, f"gateway-sandbox-{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path


def _isolate_network(own_mounts: bool) -> str | None:
    """Move this process into a new, empty network namespace; return why not, if refused.

    ``own_mounts``: this zygote has a mount namespace of its own (``_private``).
    """
    try:
        if not _private.needs_user_namespace():  # root, or in a user namespace of its own
            _linux.unshare(_linux.CLONE_NEWNET)
            return None
        # Where _masks will mount (no Landlock, a mount namespace of its own), a new one
        # too: owned by the new user namespace, the only kind it may mount in.
        mounts = _linux.CLONE_NEWNS if own_mounts and will_mask() else 0
        _private.unshare_keeping_ids(_linux.CLONE_NEWNET | mounts)
    except OSError as exc:
        return f"the kernel refused a new network namespace: {exc.strerror or exc}"
    return None


def _world_readable(path: str) -> bool:
    """Whether ``path`` and its parents can be entered and read by any uid."""
    import stat

    current = os.path.abspath(path)
    while True:
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return False
        if not (mode & stat.S_IXOTH and mode & stat.S_IROTH):
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent
