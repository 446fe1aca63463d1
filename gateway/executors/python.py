"""The ``python`` action kind: call ``module:callable`` inside the sandbox.

The module is imported with the gateway root on ``sys.path`` (the zygote
imports every catalog module once, so a call only looks it up). Sync and async
callables both work; the validated arguments are passed as keywords. A ``str``
goes to the model as is, anything else as JSON. Whether the module imports is
checked at load time by the manifest loader in a subprocess, never here.
Imports only ``gateway.manifests.model``.
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Annotated, Any, ClassVar

import msgspec

from gateway.manifests.model import (
    Action,
    ActionConfig,
    CallContext,
    CheckContext,
    KindProblem,
    register_action_kind,
)

__all__ = ["PythonConfig", "resolve_function"]

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
_FUNCTION = rf"^{_DOTTED}:{_DOTTED}(?!\n)$"  # not before a final newline: see model.NAME_PATTERN


def resolve_function(spec: str) -> Any:
    """Import ``module:attr.path`` and return the object it names."""
    module_name, _, attr_path = spec.partition(":")
    # Usually imported already (the sandbox's zygote preloads action modules): sys.modules
    # spares a sandboxed call importlib's Python code and its copy-on-write page faults.
    obj: Any = sys.modules.get(module_name) or importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return obj


@register_action_kind
class PythonConfig(ActionConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``python:`` — a plain Python function from the deployment's code.

    Attributes:
        function: ``module:callable``, e.g. ``actions.weather:get_weather``.
    """

    key: ClassVar[str] = "python"
    network_default: ClassVar[bool] = False
    preload: ClassVar[tuple[str, ...]] = ()

    function: Annotated[
        str, msgspec.Meta(pattern=_FUNCTION, description="module:callable, e.g. actions.x:f")
    ]

    def check(self, action: Action, ctx: CheckContext) -> list[KindProblem]:
        """Only the format; importability is checked by the loader in a subprocess."""
        if not re.match(_FUNCTION, self.function):
            return [KindProblem("function", f"{self.function!r} is not module:callable")]
        return []

    def sandbox_imports(self) -> list[str]:
        """Modules the zygote imports once so calls only look the function up."""
        return [self.function.partition(":")[0]]

    def run(self, call: CallContext) -> Any:
        """Call the function with the arguments as keywords (the worker awaits coroutines)."""
        return resolve_function(self.function)(**call.arguments)
