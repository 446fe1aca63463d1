# os.path on purpose: pathlib would grow every fork, and this is the hot path.
# ruff: noqa: PTH100, PTH101, PTH102, PTH116, PTH118, PTH120
"""The zygote: a small, single-threaded interpreter that forks one child per call.

The supervisor starts ``python -I -B -c BOOT <fd>`` with a minimal environment;
``main`` turns that interpreter into a zygote: it imports the action kinds
and the catalog's Python modules once (user modules always from source: a
same-size edit within a second must not run a stale ``.pyc``), optionally
moves itself into a new network namespace, keeps one pre-forked child ready
(see ``worker.py``), and on each ``Start`` hands the call's socket and output
pipe to it (or forks one), then forks the next spare. It holds no secrets
(arguments travel on the call's own socket straight to the child), is
undumpable, and is the subreaper of its children: it reaps them, kills
whatever a failed call left behind, removes the call's directory and reports
``Exited``. Where the kernel has Landlock, it computes the children's
filesystem allow-list once (``_fs_policy.landlock_rules``) from the
supervisor's ``FsPolicy``, its own prefixes and ``sys.path``.

Imports only the standard library, msgspec, ``gateway.sandbox`` and the
fresh-source loader of ``gateway.manifests._introspect``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.machinery
import os
import selectors
import shutil
import signal
import socket
import sys

import msgspec

from gateway.sandbox import _linux
from gateway.sandbox._fs_policy import landlock_rules, pruned
from gateway.sandbox._libc import trim_heap
from gateway.sandbox.protocol import (
    Exited,
    Init,
    Kill,
    Ready,
    Start,
    decode_control,
    encode,
)
from gateway.sandbox.worker import (
    CALL_NAME,
    call_dir,
    children_of,
    prepare,
    run_child,
    run_spare,
)

__all__ = ["BOOT", "main"]

# Where the allow-list tests look for them (the computation lives in ``_fs_policy``).
_landlock_rules = landlock_rules
_pruned = pruned

_SPARES = 2
"""Pre-forked children kept ready: forking (~1 ms) and warming are off the call path."""

BOOT = (
    "import sys; sys.path[:0] = sys.argv[2:]; "
    "from gateway.sandbox.zygote import main; main(int(sys.argv[1]))"
)
"""The ``-c`` program the supervisor starts the zygote with."""

_FALLBACK_PRELOAD = [
    "asyncio",
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
    """Forks one child per call, reaps it and everything it started."""

    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.pid = os.getpid()
        self.calls: dict[int, int] = {}  # child pid -> call id
        self.pids: dict[int, int] = {}  # call id -> child pid
        self.spares: list[tuple[int, socket.socket]] = []  # pre-forked children, waiting
        self.tmp = _mkdtemp()
        os.chmod(self.tmp, 0o711)  # noqa: S103 - children may enter their own dir, not list others
        self.landlock: _linux.LandlockRules | None = None  # the children's allow-list

    def init(self) -> None:
        data = self.ctl.recv(1 << 20)
        msg = decode_control(data)
        assert isinstance(msg, Init)
        # Nothing in the zygote is worth reading, but same-uid children must not try.
        _linux.prctl(_linux.PR_SET_DUMPABLE, 0)
        _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 1)
        network_error: str | None = None
        if msg.isolate_network:
            network_error = _isolate_network()
        for path in reversed(msg.paths):
            if path not in sys.path:
                sys.path.insert(0, path)
        _fresh_source_under(msg.paths)
        errors: dict[str, str] = {}
        warnings: list[str] = []
        modules = list(msg.modules)
        if os.geteuid() == 0 and not _world_readable(os.path.dirname(os.__file__)):
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
                errors[module] = f"{type(exc).__name__}: {exc}"
        capabilities = None
        if msg.probe:
            from gateway.sandbox.probes import probe

            capabilities = probe()
        with contextlib.suppress(OSError):
            _linux.prepare_seccomp_filter()  # built once here, not in every call
        self.landlock = _landlock_rules(msg.fs, self.tmp)
        gc.collect()
        gc.freeze()  # keep the imported heap shared copy-on-write across forks
        trim_heap()  # fewer pages mapped: cheaper fork and exit per call
        ready = Ready(
            pid=self.pid,
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
            # Top the pool of spares up whenever no message waits (handing a call over
            # comes first): under a steady stream of calls, spares must keep up with it.
            refill = len(self.spares) < _SPARES
            events = selector.select(timeout=0 if refill else None)
            if not events and refill:
                self.fork_spare(selector)
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
                if not data:
                    self.shutdown()
                    return
                msg = decode_control(data)
                if isinstance(msg, Start) and len(fds) == 2:
                    self.start(msg, fds[0], fds[1], selector)
                else:
                    for fd in fds:
                        os.close(fd)
                    if isinstance(msg, Kill):
                        self.kill(msg.id)

    def start(
        self, msg: Start, call_fd: int, out_fd: int, selector: selectors.BaseSelector
    ) -> None:
        pid = self.hand_to_spare(msg, call_fd, out_fd)
        if pid is None:
            try:
                pid = os.fork()
            except OSError as exc:
                os.close(call_fd)
                os.close(out_fd)
                self.send(Exited(id=msg.id, status=-1, error=f"fork failed: {exc.strerror}"))
                return
            if pid == 0:  # pragma: no cover - the child; coverage cannot follow os._exit
                code = 70
                try:
                    selector.close()
                    prepare(self.ctl, None)
                    _linux.set_name(CALL_NAME)
                    code = run_child(
                        msg, call_fd, out_fd, self.tmp, self.pid, landlock=self.landlock
                    )
                except BaseException:
                    code = 71
                finally:
                    os._exit(code)
        os.close(call_fd)
        os.close(out_fd)
        self.calls[pid] = msg.id
        self.pids[msg.id] = pid

    def hand_to_spare(self, msg: Start, call_fd: int, out_fd: int) -> int | None:
        """Give the call to the pre-forked child; its pid, or None to fork one now."""
        if not self.spares:
            return None
        pid, sock = self.spares.pop(0)  # the oldest has finished warming up
        try:
            socket.send_fds(sock, [encode(msg)], [call_fd, out_fd])
        except OSError:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            return None
        finally:
            sock.close()
        return pid

    def fork_spare(self, selector: selectors.BaseSelector) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError:
            mine.close()
            theirs.close()
            return
        if pid == 0:  # pragma: no cover - the spare child
            code = 70
            try:
                selector.close()
                mine.close()
                code = run_spare(self.ctl, self.pid, self.tmp, theirs, landlock=self.landlock)
            except BaseException:
                code = 71
            finally:
                os._exit(code)
        theirs.close()
        self.spares.append((pid, mine))

    def kill(self, call_id: int) -> None:
        pid = self.pids.get(call_id)
        if pid is None:
            return
        # The child is not reaped until SIGCHLD is handled, so pid and pgid are still ours.
        for target in (-pid, pid):
            with contextlib.suppress(OSError):
                os.kill(target, signal.SIGKILL)

    def reap(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            call_id = self.calls.pop(pid, None)
            for spare in [sp for sp in self.spares if sp[0] == pid]:
                spare[1].close()  # a spare died on its own; the pool is topped up when idle
                self.spares.remove(spare)
            if call_id is not None:
                # The zombie keeps the pgid reserved, so this hits only its group.
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            if call_id is None:  # a spare, or a stray we killed earlier
                shutil.rmtree(call_dir(self.tmp, pid), ignore_errors=True)
                continue
            self.pids.pop(call_id, None)
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                # The child did not clean up: its orphans were handed to us (subreaper).
                self.kill_strays()
            self.send(Exited(id=call_id, status=code))
            # Removed before the pid can be reused (nothing forks in between).
            shutil.rmtree(call_dir(self.tmp, pid), ignore_errors=True)

    def kill_strays(self) -> None:
        for _ in range(1000):
            spares = {sp[0] for sp in self.spares}
            strays = [p for p in children_of(self.pid) if p not in self.calls and p not in spares]
            if not strays:
                return
            for pid in strays:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            for pid in strays:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)

    def shutdown(self) -> None:
        for pid, sock in self.spares:
            sock.close()
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        self.spares.clear()
        for call_id in list(self.pids):
            self.kill(call_id)
        for pid in list(self.calls):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.calls.clear()
        self.kill_strays()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def send(self, message: msgspec.Struct) -> None:
        # If the supervisor is gone, EOF on the next read ends the loop.
        with contextlib.suppress(OSError):
            self.ctl.sendall(encode(message))


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

    own = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # the gateway package
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


def _mkdtemp() -> str:
    base = os.environ.get("TMPDIR") or "/tmp"  # noqa: S108 - a private, random dir below it
    while True:
        path = os.path.join(base, f"gateway-sandbox-{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path


def _isolate_network() -> str | None:
    """Move this process into a new, empty network namespace; return why not, if refused."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        if uid == 0:
            _linux.unshare(_linux.CLONE_NEWNET)
            return None
        _linux.unshare(_linux.CLONE_NEWUSER | _linux.CLONE_NEWNET)
        with open("/proc/self/setgroups", "w") as fh:  # noqa: PTH123 - procfs write
            fh.write("deny")
        with open("/proc/self/uid_map", "w") as fh:  # noqa: PTH123 - procfs write
            fh.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as fh:  # noqa: PTH123 - procfs write
            fh.write(f"{gid} {gid} 1")
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
