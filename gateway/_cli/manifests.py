"""``gateway validate``, ``schema``, ``tools`` and ``import-seed``: the manifest commands.

Imports click, ``_common`` and ``gateway._unicode`` (which imports nothing) at the top,
``gateway.manifests`` inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import click

from gateway._cli._common import (
    load_catalog_or_exit,
    load_settings,
    manifests_option,
    printable,
    register_kinds,
)
from gateway._unicode import fs_text

__all__ = ["import_seed_command", "schema_command", "tools_command", "validate_command"]


@click.command("validate", short_help="Check the manifests; print every problem (exit 1).")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "github", "json"]),
    default="text",
    show_default=True,
    help="text: file:line:col: message; github: workflow annotations; json: a list.",
)
@click.option(
    "--gateway-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Directory on sys.path for Python actions (default: GATEWAY_ROOT, else the parent "
    "of the manifests root).",
)
def validate_command(paths: tuple[str, ...], fmt: str, gateway_root: str | None) -> None:
    """Check manifests against the JSON Schema and each other.

    PATHS are manifest roots, or files inside one (default: GATEWAY_MANIFESTS,
    else ./manifests). Prints every problem, one a line, on stdout and exits 1
    if there is any, 0 when all is valid: every check's in one run (a document
    failing its schema still has its import and templates checked). A valid set's
    warnings (a declared secret shorter than 4 characters, never masked, or not UTF-8;
    a ``${VAR}`` value shorter than 4 characters in an http/sql config, a database URL
    or a provider) go to stderr as ``warning: ...`` lines and do not change the exit
    status. A file is checked in the context of its root (GATEWAY_MANIFESTS when it
    lies inside it, else its directory) and only its own problems are shown; a file
    the gateway would not load (not *.yaml/*.yml, hidden, under a hidden directory)
    is a problem.
    """
    import os
    from typing import cast

    from gateway.errors import ManifestError, Problem
    from gateway.manifests.loader import load_catalog
    from gateway.manifests.validate import (
        Format,
        format_problems,
        secret_warnings,
        template_warnings,
        variable_warnings,
    )

    register_kinds()
    settings = load_settings()
    code_root = Path(gateway_root) if gateway_root else settings.gateway_root
    roots: dict[Path, set[Path] | None] = {}  # root -> the files to report (None: all)
    problems: list[Problem] = []
    for target in [Path(p) for p in paths] or [settings.manifests]:
        if not target.exists():  # a typo: not "the manifests root" it would be taken for
            problems.append(
                Problem(file=str(target), line=1, col=1, message="no such file or directory")
            )
        elif target.is_file():
            inside = target.resolve().is_relative_to(settings.manifests.resolve())
            root = settings.manifests if inside else target.parent
            skipped = _not_loaded(target, root)
            if skipped is not None:  # "ok" would say nothing of it: the gateway never reads it
                problems.append(Problem(file=fs_text(str(target)), line=1, col=1, message=skipped))
                continue
            only = roots.setdefault(root, set())
            if only is not None:
                only.add(target.resolve())
        else:
            roots[target] = None
    for root, only in roots.items():
        try:
            catalog = load_catalog(root, gateway_root=code_root)
        except ManifestError as exc:
            problems += [p for p in exc.problems if only is None or Path(p.file).resolve() in only]
            continue
        click.echo(
            f"{root}: ok ({len(catalog.assistants)} assistants, {len(catalog.actions)} actions, "
            f"{len(catalog.files)} files, version {catalog.version})",
            err=True,
        )
        # Valid, but worth knowing (a secret too short to mask...): never fails the check.
        # Only the files asked for, as for problems.
        actions = [
            action
            for name, action in catalog.actions.items()
            if only is None
            or (
                (source := catalog.sources.get(f"action/{name}")) is not None
                and (catalog.root / source.file).resolve() in only
            )
        ]
        files = None
        if only is not None:
            files = {f for f in catalog.files if (catalog.root / f).resolve() in only}
        warnings = secret_warnings(actions, os.environ)
        warnings += template_warnings(actions, catalog.sources)
        warnings += variable_warnings(catalog.short_variables, files=files)
        for warning in warnings:
            click.echo(f"warning: {printable(warning)}", err=True)
    if problems or fmt == "json":
        click.echo(format_problems(problems, cast("Format", fmt)), nl=False)
    if problems:
        click.echo(f"{len(problems)} problem(s)", err=True)
        raise SystemExit(1)


def _not_loaded(target: Path, root: Path) -> str | None:
    """Why the gateway would never read the file ``target`` under ``root``, if it would not."""
    import os

    from gateway.manifests.loader import SUFFIXES

    name = target.name
    if fs_text(name) is not name:
        return "not a manifest file the gateway loads: its name is not valid UTF-8"
    if not name.endswith(SUFFIXES):
        return "not a manifest file the gateway loads: only *.yaml and *.yml files are read"
    if name.startswith("."):
        return "not a manifest file the gateway loads: hidden files (.name) are skipped"
    # As written, not resolved: a ConfigMap's a.yaml is a link into ..data/, read as a.yaml.
    given, base = Path(os.path.abspath(target)), Path(os.path.abspath(root))  # noqa: PTH100
    parts = given.parent.relative_to(base).parts if given.is_relative_to(base) else ()
    hidden = next((part for part in parts if part.startswith(".")), None)
    if hidden is not None:
        return (
            f"not a manifest file the gateway loads: it is under {hidden}/, and hidden "
            "directories are skipped"
        )
    return None


@click.command("schema", short_help="Print the manifest JSON Schema.")
def schema_command() -> None:
    """Print the manifest JSON Schema (what schemas/manifest.schema.json holds)."""
    from gateway.manifests.schema import manifest_schema_json

    register_kinds()
    click.echo(manifest_schema_json(), nl=False)


@click.command("tools", short_help="Print the tool schemas the model gets for an assistant.")
@click.argument("assistant")
@click.option(
    "--api",
    type=click.Choice(["chat", "responses"]),
    default="chat",
    show_default=True,
    help="Chat Completions form (nested `function`) or Responses API form (flat).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="OpenAI strict mode; a schema that cannot be strict stays as is, with a warning.",
)
@manifests_option
def tools_command(assistant: str, api: str, strict: bool, manifests_dir: str | None) -> None:
    """Print, as JSON, the tool schemas the model receives for ASSISTANT."""
    import json

    from gateway.errors import NotFound
    from gateway.manifests.tools import tool_schemas

    catalog = load_catalog_or_exit(load_settings(), manifests_dir)
    warnings: list[str] = []
    try:
        tools = tool_schemas(
            catalog,
            assistant,
            api="responses" if api == "responses" else "chat",
            strict=strict,
            warnings=warnings,
        )
    except NotFound:
        known = ", ".join(sorted(catalog.assistants)) or "none"
        raise click.ClickException(f"unknown assistant {assistant!r} (known: {known})") from None
    for warning in warnings:
        click.echo(f"warning: {printable(warning)}", err=True)
    click.echo(json.dumps(tools, indent=2, ensure_ascii=False))


@click.command("import-seed", short_help="Convert an Assistants-API assistant-config.json to YAML.")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--module",
    default="actions.tools",
    show_default=True,
    help="Python module the stub actions point at.",
)
def import_seed_command(config: str, module: str) -> None:
    """Convert an Assistants-API assistant-config.json (CONFIG) to manifest YAML.

    Prints one `kind: assistant` document and one stub `kind: action` per
    function name on stdout, ending with the Python functions still to write
    (as comments). Redirect it into the manifests root, e.g.
    `gateway import-seed assistant-config.json > manifests/helper.yaml`.
    """
    from gateway.errors import InvalidInput
    from gateway.manifests.seed import convert_seed

    path = Path(config)
    try:
        text = path.read_text(encoding="utf-8-sig")  # Windows tools write a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    try:
        click.echo(convert_seed(text, module=module, source=str(path)), nl=False)
    except InvalidInput as exc:
        raise click.ClickException(exc.message) from None
