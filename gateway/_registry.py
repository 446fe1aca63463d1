"""Registries of classes filled by class decorators at import: action kinds, provider APIs.

One rule for every such registry: a class registers under a non-empty key, and a key
another class already holds is an error (the same class again is not). Each decorator
(``register_action_kind``, ``register_api``) names its registry, key and wording and
calls ``add_class``. Imports nothing of the gateway.
"""

from __future__ import annotations

from typing import Any

__all__ = ["add_class"]


def add_class(
    registry: dict[str, type[Any]], key: str, cls: type[Any], *, what: str, attribute: str
) -> None:
    """Register ``cls`` under ``key`` (the value of its class attribute ``attribute``).

    Raises:
        ValueError: ``key`` is empty, or ``registry`` holds another class under it;
            ``what`` names the registry in the message (``"action kind"``).
    """
    if not key:
        raise ValueError(f"{cls.__name__} must set a non-empty `{attribute}`")
    existing = registry.get(key)
    if existing is not None and existing is not cls:
        raise ValueError(f"{what} {key!r} is already registered by {existing.__name__}")
    registry[key] = cls
