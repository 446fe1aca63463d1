"""Shared fixtures for every test: structlog reset, kinds registered."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

import gateway.executors  # noqa: F401  (registers the action kinds)


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """structlog's global configuration is reset around every test."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
