"""Which zygotes a catalog needs, what each imports, and the fingerprint that says reusable.

A zygote is keyed by network access and the libraries its kind preloads
(``zygote_key``); ``zygote_keys`` lists a catalog's zygotes, ``zygote_modules``
what one imports,
and ``fingerprint`` hashes all it loads (modules, gateway root, filesystem
policy, the content of the catalog's code files) so ``Supervisor.reload``
replaces only the zygotes whose fingerprint changed; ``zygote_code`` is the
catalog's code snapshot a zygote imports user modules from (only one that
imports user code gets it); ``zygote_warm`` lists the
configs a zygote warms once (``ActionConfig.sandbox_warm``). Supervisor side
only; imports the standard library, msgspec, ``gateway._files`` and
``gateway.manifests.model`` (``ActionConfig``, at call time).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import msgspec

from gateway._files import open_regular

if TYPE_CHECKING:
    from gateway.manifests.catalog import Catalog, SourceModule
    from gateway.manifests.model import Action
    from gateway.sandbox.protocol import FsPolicy

__all__ = [
    "PROBE_KEY",
    "WARM_BUDGET",
    "Key",
    "fingerprint",
    "zygote_code",
    "zygote_key",
    "zygote_keys",
    "zygote_modules",
    "zygote_warm",
]

_BASE_MODULES = ["gateway.executors", "gateway.executors.builtins"]
"""What every zygote imports: the kinds, and code_interpreter's module (not a YAML kind:
a call would otherwise import it from source every time)."""

Key = tuple[bool, tuple[str, ...]]
"""(network, preloaded libraries): one zygote each."""
PROBE_KEY: Key = (True, ())
"""The zygote that probes the kernel's capabilities."""


def zygote_key(action: Action) -> Key:
    """Which zygote runs ``action``: by network, and by the libraries its kind preloads."""
    preload: tuple[str, ...] = getattr(type(action.config), "preload", ())
    return (action.network, tuple(preload))


def zygote_keys(catalog: Catalog | None) -> list[Key]:
    """The zygotes a catalog needs (always the light pair for python and code_interpreter)."""
    keys: list[Key] = [(True, ()), (False, ())]
    for action in catalog.actions.values() if catalog is not None else ():
        if action.config is not None and zygote_key(action) not in keys:
            keys.append(zygote_key(action))
    return keys


def fingerprint(key: Key, catalog: Catalog | None, fs: FsPolicy | None = None) -> str:
    """What a zygote for ``key`` loads from ``catalog``, hashed: equal means reusable.

    The modules it imports and the gateway root they come from, the configs it
    warms (``zygote_warm``); when it imports user code, also the content (not the
    mtime: a checkout may keep it) of every code file of the catalog: the source
    the load validated (``Catalog.code``, what the zygote will run), else the
    file's bytes on disk now. Blocking (may read files): call it off the event loop.
    """
    modules = zygote_modules(key, catalog)
    digest = hashlib.sha256()
    root = str(catalog.gateway_root) if catalog is not None else ""
    digest.update(msgspec.json.encode([key, root, modules, fs, zygote_warm(key, catalog)]))
    if catalog is not None and _imports_user_code(key, modules):
        # Where each module name comes from: the snapshot serves modules by name.
        layout = [(m.name, m.file, m.locations) for m in catalog.code]
        digest.update(msgspec.json.encode(layout))
        sources = catalog.code_sources()
        for path in sorted(catalog.code_files):
            data = sources.get(str(path))
            if data is None:
                try:
                    with open_regular(path) as fh:  # a FIFO swapped in must not hang a reload
                        data = fh.read()
                except OSError:
                    data = b"\x00missing"
            digest.update(f"{path}\x00{len(data)}\x00".encode())
            digest.update(data)
    return digest.hexdigest()


def zygote_code(key: Key, catalog: Catalog | None) -> tuple[SourceModule, ...]:
    """The code snapshot a zygote for ``key`` imports user modules from (see ``_snapshot``).

    Empty for a zygote that imports no user code (the ``http`` and ``sql`` ones, the
    network-on Python one of a catalog without a ``network: true`` Python action): its
    fingerprint does not cover the code, so it is kept across code pushes and must not
    hold an old copy of it.
    """
    if catalog is None or not _imports_user_code(key, zygote_modules(key, catalog)):
        return ()
    return catalog.code


def _imports_user_code(key: Key, modules: list[str]) -> bool:
    return modules != [*_BASE_MODULES, *key[1]]


def zygote_modules(key: Key, catalog: Catalog | None) -> list[str]:
    """What a zygote imports once: the worker's kinds, the preloads, the action modules."""
    modules = [*_BASE_MODULES, *key[1]]
    for action in catalog.actions.values() if catalog is not None else ():
        imports = getattr(action.config, "sandbox_imports", None)
        if action.config is None or imports is None or zygote_key(action) != key:
            continue
        for module in imports():
            if module not in modules:
                modules.append(module)
    return modules


WARM_BUDGET = 64 * 1024
"""Bytes of encoded configs at most in a zygote's ``Init.warm``. ``Init`` is one
datagram (the kernel refuses one over the socket's send buffer, about 208 KiB), so
a catalog of hundreds of templated actions must not grow it without bound. Configs
past the budget are left out: their calls compile their templates themselves."""


def zygote_warm(key: Key, catalog: Catalog | None) -> list[tuple[str, dict[str, Any]]]:
    """(kind ``module:Class``, config) of ``key``'s actions whose kind has a ``sandbox_warm``.

    The zygote runs each once (compiling an http or sql action's templates), so
    every fork finds them done. Sorted, so the fingerprint does not depend on the
    catalog's order, and cut at ``WARM_BUDGET``. Left out: kinds without one
    (python: adding a python action does not need a new zygote) and
    ``isolation: inline`` actions (they never run in a zygote).
    """
    from gateway.manifests.model import ActionConfig

    found: set[tuple[str, bytes]] = set()
    for action in catalog.actions.values() if catalog is not None else ():
        config = action.config
        if config is None or action.isolation != "sandbox" or zygote_key(action) != key:
            continue
        kind = type(config)
        if kind.sandbox_warm is ActionConfig.sandbox_warm:
            continue
        found.add((f"{kind.__module__}:{kind.__qualname__}", msgspec.json.encode(config)))
    warm: list[tuple[str, dict[str, Any]]] = []
    budget = WARM_BUDGET
    for kind_name, encoded in sorted(found):
        budget -= len(kind_name) + len(encoded)
        if budget < 0:
            break
        warm.append((kind_name, msgspec.json.decode(encoded)))
    return warm
