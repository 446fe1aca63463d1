"""The commands behind the ``gateway`` console script, one module per area.

``gateway.cli`` assembles them into the click group ``main``. Each command is a
thin shell: it reads ``Settings`` once (``_common.load_settings``), calls the
package that does the work, prints, and exits 0 (ok), 1 (the input or the
manifests are wrong) or 2 (usage). Modules here import click and ``_common`` at
the top and the rest of ``gateway`` inside the commands, so ``gateway --help``
stays fast and a command loads only what it needs (``_serving``, how ``serve``
runs uvicorn, is imported inside that command). Nothing imports ``_cli``
except ``gateway.cli``.
"""
