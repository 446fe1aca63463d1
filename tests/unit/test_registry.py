"""``add_class``: the one rule of the action-kind and provider-API registries."""

from __future__ import annotations

import pytest

from gateway._registry import add_class
from gateway.manifests.model import ActionConfig, register_action_kind


def test_a_key_holds_one_class_and_the_same_class_may_register_again() -> None:
    """A second class under a key is refused naming the holder; the same class again is not."""

    class First:
        pass

    class Second:
        pass

    registry: dict[str, type] = {}
    add_class(registry, "k", First, what="thing", attribute="key")
    add_class(registry, "k", First, what="thing", attribute="key")
    with pytest.raises(ValueError, match="thing 'k' is already registered by First"):
        add_class(registry, "k", Second, what="thing", attribute="key")
    assert registry == {"k": First}


def test_an_action_kind_without_a_key_is_refused() -> None:
    """A kind that forgot its YAML key is an error at import, naming the class."""

    class Nameless(ActionConfig, frozen=True, kw_only=True):
        pass

    with pytest.raises(ValueError, match="Nameless must set a non-empty `key`"):
        register_action_kind(Nameless)
