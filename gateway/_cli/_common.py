"""What every ``gateway`` command shares: settings, the manifests root, the catalog.

Imports click (and ``gateway._unicode``, which imports nothing) at the top, the rest of
``gateway`` lazily (see the package docstring). ``printable`` is ``gateway._unicode``'s,
which the logs share.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from gateway._unicode import printable

if TYPE_CHECKING:
    from gateway.manifests.catalog import Catalog
    from gateway.settings import Settings

__all__ = [
    "configure_cli_logging",
    "load_catalog_or_exit",
    "load_settings",
    "manifests_option",
    "printable",
    "register_kinds",
]

manifests_option = click.option(
    "--manifests",
    "manifests_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Manifests root (default: GATEWAY_MANIFESTS, else ./manifests).",
)
"""The ``--manifests DIR`` option of the commands that load one manifest set."""


def register_kinds() -> None:
    """Register the action kinds (``python``, ``http``, ``sql``): the loader and schema use them."""
    import gateway.executors  # noqa: F401  (importing the package registers the kinds)


def load_settings(*, logging: bool = False) -> Settings:
    """Read the settings from the environment and ``./.env``, once.

    Args:
        logging: also configure logging (to stderr, so stdout carries only the result).

    Raises:
        click.ClickException: a variable has an unusable value (exit 1, one line).
    """
    from gateway.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    if logging:
        from gateway.api.logs import configure_logging

        configure_logging(settings)
    return settings


def configure_cli_logging() -> None:
    """Configure the gateway's logging (``LOG_FORMAT``, ``LOGGING_LEVEL``) for any command.

    Called by the ``gateway`` group before every command, so none is left with
    structlog's default: a console renderer writing to stdout (into the JSON or
    YAML a command prints) whose tracebacks show every frame's local variables,
    secrets included. Lines go to stderr, tracebacks without locals (see
    ``gateway.api.logs``). Settings that do not read fall back to the defaults
    here; a command that needs them reports the error itself (``load_settings``).
    """
    from gateway.api.logs import configure_logging
    from gateway.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError:
        settings = Settings()
    configure_logging(settings)


def load_catalog_or_exit(settings: Settings, manifests_dir: str | None) -> Catalog:
    """Load and validate one manifest set: ``manifests_dir``, else ``settings.manifests``.

    Python actions import relative to ``GATEWAY_ROOT`` when set, else the parent
    of that root.

    Raises:
        SystemExit: the set is invalid; every problem has been printed to stderr
            as ``file:line:col: message`` (exit 1).
    """
    from gateway.errors import ManifestError
    from gateway.manifests.loader import load_catalog
    from gateway.manifests.validate import problem_line

    register_kinds()
    root = Path(manifests_dir) if manifests_dir else settings.manifests
    try:
        return load_catalog(root, gateway_root=settings.gateway_root)
    except ManifestError as exc:
        for problem in exc.problems:
            click.echo(problem_line(problem), err=True)  # a file name may hold "\n::error"
        raise SystemExit(1) from None
