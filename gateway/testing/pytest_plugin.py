"""pytest fixtures for the fake OpenAI server.

Enable in a test suite's root ``conftest.py`` with
``pytest_plugins = ["gateway.testing.pytest_plugin"]``, then ask for the
``fake_openai`` fixture: a started ``FakeOpenAI``, fresh for each test and
stopped afterwards. Imports only ``gateway.testing.fake_openai`` and pytest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.testing.fake_openai import FakeOpenAI

__all__ = ["fake_openai"]


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running ``FakeOpenAI`` on a free loopback port (``.base_url`` ends in ``/v1``)."""
    with FakeOpenAI() as fake:
        yield fake
