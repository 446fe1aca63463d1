"""The ``gateway`` command: serve, validate, schema, tools, invoke, test, chat, index,
import-seed, doctor.

Each command is a thin shell over the package: it reads ``Settings`` once,
calls the real code, prints, and exits with a meaningful status (0 ok, 1 the
input is wrong, 2 usage). No command prints a traceback for bad input.
"""

from __future__ import annotations

import click

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gateway")
def main() -> None:
    """Declarative gateway for AI assistants with sandboxed actions."""


# Commands are added below, one section per area; keep each self-contained.
# --- manifests: validate, schema, tools, import-seed ---
# --- sandbox: invoke, test, doctor ---
# --- server: serve, chat ---
# --- knowledge: index ---
