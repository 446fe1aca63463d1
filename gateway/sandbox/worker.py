"""The sandbox's child side: the zygote loop and what one forked call child does.

The supervisor starts ``python -I -c BOOT <fd>`` with a minimal environment;
``main`` turns that interpreter into a *zygote*: it imports the action kinds
and the catalog's Python modules once, optionally moves itself into a new
network namespace, then forks one child per ``Start`` message. The zygote is
single-threaded and holds no secrets (arguments travel on the call's own
socket straight to the child), so forking it is safe and copy-on-write cheap.

A child, before running anything: starts a new session, keeps only its call
socket and output pipe, gets a fresh private working directory, sets rlimits,
``PR_SET_NO_NEW_PRIVS``, becomes a subreaper for its descendants, drops to an
unprivileged uid when the zygote is root, asks to die with the zygote, and
replaces its environment with a minimal one plus the action's secrets. After
the action it kills whatever it started, so a call leaves nothing behind.

This module imports only the standard library, msgspec and ``gateway.sandbox``
/ ``gateway.manifests``; action kinds are imported by name from ``Init``.
"""

from __future__ import annotations

import gc
import importlib
import os
import resource
import selectors
import shutil
import signal
import socket
import sys
from collections.abc import Awaitable
from typing import Any

import msgspec

from gateway.manifests.model import ActionConfig
from gateway.sandbox import _linux
from gateway.sandbox.protocol import (
    HEADER,
    CallRequest,
    CallResult,
    Exited,
    Init,
    Kill,
    Limits,
    Ready,
    Start,
    decode_control,
    encode,
    frame,
)

__all__ = ["BOOT", "MINIMAL_ENV", "main"]

BOOT = (
    "import sys; sys.path[:0] = sys.argv[2:]; "
    "from gateway.sandbox.worker import main; main(int(sys.argv[1]))"
)
"""The ``-c`` program the supervisor starts the zygote with."""

MINIMAL_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
"""The only variables a child sees besides HOME/TMPDIR and its declared secrets."""

_FALLBACK_PRELOAD = [
    "asyncio", "json", "datetime", "decimal", "re", "math", "random", "statistics",
    "collections", "itertools", "functools", "dataclasses", "typing", "uuid", "hashlib",
    "base64", "urllib.parse", "textwrap", "string", "csv", "io", "pathlib", "subprocess",
    "time", "zoneinfo", "fractions", "operator", "copy", "pprint", "enum",
]
_MAX_REQUEST = 64 * 1024 * 1024
_MB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")


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
        self.calls: dict[int, tuple[int, str]] = {}  # child pid -> (call id, cwd)
        self.pids: dict[int, int] = {}  # call id -> child pid
        self.tmp = _mkdtemp()
        os.chmod(self.tmp, 0o711)  # children may enter their own dir, not list others

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
                importlib.import_module(module)
            except BaseException as exc:  # noqa: BLE001 - reported to the supervisor
                errors[module] = f"{type(exc).__name__}: {exc}"
        capabilities = None
        if msg.probe:
            from gateway.sandbox.probes import probe

            capabilities = probe()
        gc.collect()
        gc.freeze()  # keep the imported heap shared copy-on-write across forks
        ready = Ready(
            pid=self.pid,
            network_isolated=msg.isolate_network and network_error is None,
            network_error=network_error,
            import_errors=errors,
            warnings=warnings,
            capabilities=capabilities,
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
            for key, _ in selector.select():
                if key.fd == wake_r:
                    while True:
                        try:
                            if not os.read(wake_r, 512):
                                break
                        except BlockingIOError:
                            break
                    self.reap()
                    continue
                data, fds, _, _ = socket.recv_fds(self.ctl, 1 << 16, 4)
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

    def start(self, msg: Start, call_fd: int, out_fd: int, selector: selectors.BaseSelector) -> None:
        cwd = os.path.join(self.tmp, f"c{msg.id}")
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
                code = _child(self, msg, call_fd, out_fd, cwd)
            except BaseException:  # noqa: BLE001 - a child must never return into the zygote
                code = 71
            finally:
                os._exit(code)
        os.close(call_fd)
        os.close(out_fd)
        self.calls[pid] = (msg.id, cwd)
        self.pids[msg.id] = pid

    def kill(self, call_id: int) -> None:
        pid = self.pids.get(call_id)
        if pid is None:
            return
        # The child is not reaped until SIGCHLD is handled, so pid and pgid are still ours.
        for target in (-pid, pid):
            try:
                os.kill(target, signal.SIGKILL)
            except OSError:
                pass

    def reap(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            entry = self.calls.pop(pid, None)
            if entry is not None:
                try:  # the zombie keeps the pgid reserved, so this hits only its group
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            if entry is None:
                continue  # a stray we killed earlier
            call_id, cwd = entry
            self.pids.pop(call_id, None)
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                # The child did not clean up: its orphans were handed to us (subreaper).
                self.kill_strays()
            shutil.rmtree(cwd, ignore_errors=True)
            self.send(Exited(id=call_id, status=code))

    def kill_strays(self) -> None:
        for _ in range(1000):
            strays = [pid for pid in _children_of(self.pid) if pid not in self.calls]
            if not strays:
                return
            for pid in strays:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            for pid in strays:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass

    def shutdown(self) -> None:
        for call_id in list(self.pids):
            self.kill(call_id)
        for pid in list(self.calls):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.calls.clear()
        self.kill_strays()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def send(self, message: msgspec.Struct) -> None:
        try:
            self.ctl.sendall(encode(message))
        except OSError:
            pass  # the supervisor is gone; EOF on the next read ends the loop


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


def _children_of(parent: int) -> list[int]:
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


def _child(zygote: _Zygote, msg: Start, call_fd: int, out_fd: int, cwd: str) -> int:
    """Confine this freshly forked process, run one call, clean up; return the exit code."""
    os.setsid()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over the limit fails, not kills
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.dup2(call_fd, 3, inheritable=False)
    zygote.ctl.detach()  # its fd goes with the range below; the object must not close it later
    os.closerange(4, 1 << 20)
    limits = msg.limits
    os.mkdir(cwd, 0o700)
    if msg.uid is not None and msg.gid is not None:
        os.chown(cwd, msg.uid, msg.gid)
    os.chdir(cwd)
    _apply_limits(limits, drop=msg.uid is not None)
    _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
    _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 1)
    if msg.uid is not None and msg.gid is not None:
        os.setgroups([])
        os.setresgid(msg.gid, msg.gid, msg.gid)
        os.setresuid(msg.uid, msg.uid, msg.uid)
    # After the uid change (which clears it): die with the zygote, and check we did not miss it.
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != zygote.pid:
        return 72
    sock = socket.socket(fileno=3)
    sock.setblocking(True)
    request = _read_request(sock)
    os.environ.clear()
    os.environ.update(MINIMAL_ENV)
    os.environ.update({"HOME": cwd, "TMPDIR": cwd})
    os.environ.update(request.call.secrets)
    if "tempfile" in sys.modules:
        sys.modules["tempfile"].tempdir = cwd
    sys.dont_write_bytecode = True
    result = _execute(request, limits)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    # Clean up before answering: when the supervisor has the result, only we are left,
    # and we are about to exit (a thread of the action may still fork: check again after).
    clean = _kill_descendants()
    sock.sendall(frame(result))
    return 0 if _kill_descendants() and clean else 73


def _apply_limits(limits: Limits, *, drop: bool) -> None:
    with open("/proc/self/statm", "rb") as fh:  # noqa: PTH123 - hot path
        vsize = int(fh.read().split()[0]) * _PAGE
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


def _load_kind(path: str) -> type[ActionConfig]:
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, ActionConfig)):
        raise TypeError(f"{path} is not an action kind")
    return obj


async def _await(value: Awaitable[Any]) -> Any:
    return await value


def _enc_hook(obj: Any) -> Any:
    raise TypeError(f"the action returned a {type(obj).__name__}, which is not JSON-serializable")


def _execute(request: CallRequest, limits: Limits) -> CallResult:
    """Run the action; turn its value or exception into a ``CallResult``."""
    try:
        config = msgspec.convert(request.config, _load_kind(request.kind))
        value = config.run(request.call)
        if hasattr(value, "__await__"):
            import asyncio

            value = asyncio.run(_await(value))
        text = value if isinstance(value, str) else msgspec.json.encode(value, enc_hook=_enc_hook)
        if isinstance(text, bytes):
            text = text.decode()
    except MemoryError:
        return CallResult(
            ok=False,
            error_type="memory",
            message=f"the action ran out of memory (limit {limits.memory_mb} MB)",
        )
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a tool error
        import traceback

        typed = getattr(exc, "error_type", None)
        error_type = typed or "exception"
        message = str(exc) if typed else f"{type(exc).__name__}: {exc}"
        detail = getattr(exc, "detail", None)
        return CallResult(
            ok=False,
            error_type=str(error_type),
            message=message[:2000],
            detail=detail if isinstance(detail, dict) else {},
            traceback=traceback.format_exc()[-8000:],
        )
    limit = limits.max_output_kb * 1024
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) > limit:
        kept = encoded[:limit].decode("utf-8", errors="ignore")
        note = f"\n[output truncated: {len(encoded)} bytes, limit {limits.max_output_kb} KB]"
        return CallResult(ok=True, output=kept + note, truncated=True)
    return CallResult(ok=True, output=text)


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
        for child in _children_of(me):
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return True
    return False
