"""The ``gateway`` console script: the click group ``main`` and its ten commands.

The commands live in ``gateway._cli``, one module per area (manifests,
sandbox, server, knowledge); this module only assembles them, in the order
``gateway --help`` lists them. Every command is a thin shell over the package
that does the work and exits 0 (ok), 1 (the input or the manifests are wrong:
every problem printed, never a traceback) or 2 (usage). Imports click and
``gateway._cli`` only.
"""

from __future__ import annotations

import click

from gateway._cli._common import configure_cli_logging
from gateway._cli.knowledge import index_command
from gateway._cli.manifests import (
    import_seed_command,
    schema_command,
    tools_command,
    validate_command,
)
from gateway._cli.sandbox import doctor_command, invoke_command, test_command
from gateway._cli.server import chat_command, serve_command

__all__ = ["main"]


class _OrderedGroup(click.Group):
    """A group that lists its commands in the order they were added, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The command names in the order they were added."""
        return list(self.commands)


@click.group(cls=_OrderedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gateway")
def main() -> None:
    """Declarative gateway for AI assistants with sandboxed actions.

    Serves the assistants declared in a directory of YAML manifests
    (GATEWAY_MANIFESTS, default ./manifests); settings come from environment
    variables and ./.env. Run `gateway COMMAND --help` for a command's options.
    """
    # Every command logs the gateway's way (stderr, no frame locals), whatever it is.
    configure_cli_logging()


for _command in (
    serve_command,  # the server
    validate_command,  # manifests: check, schema, what the model sees
    schema_command,
    tools_command,
    invoke_command,  # actions through the sandbox
    test_command,
    chat_command,  # a terminal client of a running server
    index_command,  # knowledge files
    import_seed_command,  # migrating from the Assistants API
    doctor_command,  # the sandbox on this machine
):
    main.add_command(_command)
