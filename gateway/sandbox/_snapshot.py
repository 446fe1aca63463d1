"""A catalog's code snapshot, carried to a zygote and imported from there, never from disk.

The loader keeps the source of every user module it imported and validated
(``Catalog.code``). The supervisor writes it to an anonymous memory file
(``write_snapshot``: ``memfd``, no name, nothing to clean up) whose fd rides
along with the zygote's ``Init`` (``Init.code_size`` says how many bytes), so
the snapshot's size is not bound by the control socket's one-datagram
messages. The zygote reads it once (``read_snapshot``) and puts a finder first
on ``sys.meta_path`` (``serve_snapshot``) that imports those modules, by name,
from the snapshot: a restarted zygote of a catalog whose push on disk was
since rejected, or overwritten, still runs the code that catalog validated.
Each module keeps its real path as ``__file__`` and as its code's file name,
and its lines are put in ``linecache``, so a traceback names the real file and
line and quotes the validated line, not what the disk holds now; files next to
the module are read from disk as before. A user module the snapshot does not
hold (imported only at call time) is found by the ordinary finders: from disk.

Imports the standard library, msgspec and ``gateway.manifests.catalog``
(``SourceModule``), plus the fresh-source loader of ``gateway.manifests._introspect``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import linecache
import os
import sys
from collections.abc import Sequence
from types import ModuleType

import msgspec

from gateway.manifests._introspect import _FreshSourceLoader
from gateway.manifests.catalog import SourceModule

__all__ = ["SnapshotFinder", "read_snapshot", "serve_snapshot", "write_snapshot"]

_decoder = msgspec.msgpack.Decoder(list[SourceModule])


def write_snapshot(modules: Sequence[SourceModule]) -> tuple[int, int]:
    """An anonymous memory file holding ``modules``: (fd, size). Blocking; close the fd."""
    data = msgspec.msgpack.encode(list(modules))
    fd = os.memfd_create("gateway-code", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd, len(data)


def read_snapshot(fd: int, size: int) -> list[SourceModule]:
    """The modules in the memory file ``fd`` (``size`` bytes, read from its start).

    Raises:
        ValueError: it holds fewer bytes than ``size``, or not a snapshot.
    """
    chunks: list[bytes] = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(size - offset, 1 << 24), offset)
        if not chunk:
            raise ValueError(f"the code snapshot ended at {offset} of {size} bytes")
        chunks.append(chunk)
        offset += len(chunk)
    try:
        return _decoder.decode(b"".join(chunks))
    except msgspec.DecodeError as exc:
        raise ValueError(f"the code snapshot is unreadable: {exc}") from None


class _SnapshotLoader(_FreshSourceLoader):
    """A source loader whose module's own source is the snapshot's bytes.

    Anything else it is asked to read (``importlib.resources``, a data file next
    to the module) comes from disk, as for any module.
    """

    def __init__(self, fullname: str, path: str, source: bytes) -> None:
        super().__init__(fullname, path)
        self._source = source

    def get_data(self, path: str) -> bytes:
        if path == self.path:
            return self._source
        return super().get_data(path)

    def exec_module(self, module: ModuleType) -> None:
        # A traceback quotes the lines linecache holds; an entry without an mtime is
        # never checked against the disk (linecache's convention for loader sources).
        text = importlib.util.decode_source(self._source)
        linecache.cache[self.path] = (len(text), None, text.splitlines(True), self.path)
        super().exec_module(module)


class SnapshotFinder(importlib.abc.MetaPathFinder):
    """Finds the snapshot's modules by name (first on ``sys.meta_path``)."""

    def __init__(self, modules: dict[str, SourceModule]) -> None:
        self.modules = modules

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        module = self.modules.get(fullname)
        if module is None:
            return None
        locations = list(module.locations) if module.locations is not None else None
        if module.source is None:  # a namespace package: no code, only where to look
            spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
            spec.submodule_search_locations = locations
            return spec
        loader = _SnapshotLoader(fullname, module.file, module.source)
        return importlib.util.spec_from_file_location(
            fullname, module.file, loader=loader, submodule_search_locations=locations
        )


def serve_snapshot(modules: list[SourceModule], own: str) -> SnapshotFinder | None:
    """Import ``modules`` from the snapshot from now on; None if there is nothing to serve.

    Modules of the gateway package itself (``own``, when the gateway root holds
    it, as in a development checkout) are left to the ordinary finders.
    """

    def inside_own(path: str) -> bool:
        return path == own or path.startswith(own + os.sep)

    served = {
        m.name: m
        for m in modules
        if not inside_own(m.real) and not any(inside_own(p) for p in m.locations or ())
    }
    if not served:
        return None
    finder = SnapshotFinder(served)
    sys.meta_path.insert(0, finder)
    return finder
