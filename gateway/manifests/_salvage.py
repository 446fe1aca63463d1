"""What of a manifest document with problems the later checks may still look at.

A document that fails the JSON Schema or its decode never reaches a catalog,
but most of the loader's later checks read one or two of its fields only: the
import of ``python.function``, an action kind's own ``check`` (its templates,
its database), ``secrets``, ``parameters`` and ``examples``, an assistant's
``actions``, ``provider`` and ``file_search``. ``salvage`` builds the
document's Struct from its sound fields, so that those checks run in the same
load and ``gateway validate`` lists every problem of a push at once rather
than one stage per push.

Left out, so that the checks reading them are skipped (silently: the problem
that made it so is reported already):

- a top-level field with a problem anywhere inside it, and unknown fields;
  ``examples`` too when ``parameters`` is left out (they are checked against it);
- an action's kind config when its kind key is missing or ambiguous, when it
  is not a mapping, or when a field it requires is broken: nothing to import,
  no template to parse. Its other broken fields are left out as above.

A required ``name`` or ``description`` that is broken or missing takes a
stand-in, which no check reads. Only actions and assistants are salvaged: the
checks across documents read nothing of the other kinds. A salvaged Struct
exists only for a document whose own problems fail the load, so it never
reaches a catalog.

Imports ``gateway.manifests`` modules only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from gateway.manifests._yaml import Path_, parse_path
from gateway.manifests.model import ACTION_KINDS, Action, Assistant

__all__ = ["salvage"]

_STAND_INS = {"name": "-", "description": "-"}
"""Values for a required top-level field that is broken or missing (a valid name)."""
_DEPENDENTS = {"parameters": ("examples",)}
"""Fields left out with the field they are checked against."""
_INTERNAL = ("kind_key", "config")

_S = TypeVar("_S", bound=msgspec.Struct)


def salvage(
    data: Mapping[str, Any], kind: str, kind_key: str | None, broken: list[Path_]
) -> Action | Assistant | None:
    """The Struct of the sound fields of ``data``, or None when nothing is worth checking.

    Args:
        data: the document, a mapping whose ``kind`` is known.
        kind: that kind.
        kind_key: an action's one kind key (``python``...); None with none or several.
        broken: the paths of the document's problems (``()``: the document itself).
    """
    if kind == "assistant":
        return _convert(Assistant, _sound(data, Assistant, broken, keep=("kind",)), _STAND_INS)
    if kind != "action":
        return None
    action = _convert(Action, _sound(data, Action, broken, keep=("kind",)), _STAND_INS)
    if action is None or kind_key is None:
        return action
    inside = [path[1:] for path in broken if path[:1] == (kind_key,)]
    raw = data.get(kind_key)
    if not isinstance(raw, Mapping) or () in inside:  # the config as a whole is wrong
        return action
    config = _convert(ACTION_KINDS[kind_key], _sound(raw, ACTION_KINDS[kind_key], inside), {})
    if config is None:
        return action
    return msgspec.structs.replace(action, kind_key=kind_key, config=config)


def _sound(
    data: Mapping[str, Any],
    cls: type[msgspec.Struct],
    broken: list[Path_],
    keep: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The fields of ``data`` that ``cls`` declares and no problem lies in (and ``keep``)."""
    names = {f.name for f in msgspec.structs.fields(cls)} - set(_INTERNAL)
    bad = {path[0] for path in broken if path}
    for field, dependents in _DEPENDENTS.items():
        if field in bad:
            bad.update(dependents)
    return {k: v for k, v in data.items() if k in keep or (k in names and k not in bad)}


def _convert(cls: type[_S], fields: dict[str, Any], stand_ins: Mapping[str, str]) -> _S | None:
    """``fields`` as ``cls``, leaving out a field the conversion refuses (the schema
    and the model rarely disagree) and standing in for a missing required one."""
    required = [f.name for f in msgspec.structs.fields(cls) if f.required]
    for _ in range(len(fields) + 1):
        for name in required:
            if name not in fields:
                if name not in stand_ins:
                    return None  # nothing to check without it (a sql action's query)
                fields[name] = stand_ins[name]
        try:
            return msgspec.convert(fields, cls)
        except msgspec.ValidationError as exc:
            key = _top_key(exc)
            if key is None or key not in fields or fields[key] == stand_ins.get(key):
                return None
            del fields[key]
            for dependent in _DEPENDENTS.get(key, ()):
                fields.pop(dependent, None)
    return None


def _top_key(exc: msgspec.ValidationError) -> str | None:
    """The top-level field a msgspec error names (``... - at `$.a.b```: ``a``)."""
    _, found, where = str(exc).rpartition(" - at `")
    path = parse_path(where.rstrip("`")) if found else ()
    return path[0] if path and isinstance(path[0], str) else None
