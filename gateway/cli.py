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
def _manifest_env() -> None:
    """Register the action kinds (the loader and the schema need them); imports kept lazy."""
    import gateway.executors  # noqa: F401  (registers the action kinds)


@main.command("validate")
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
    help="Directory on sys.path for Python actions (default: parent of the manifests root).",
)
def validate_command(paths: tuple[str, ...], fmt: str, gateway_root: str | None) -> None:
    """Check manifests against the schema and each other; PATHS are roots or files in one.

    Prints every problem and exits 1 if there is any, 0 when all is valid. A
    file is checked in the context of its manifests root (GATEWAY_MANIFESTS
    when it lies inside it, else its directory) and only its problems are shown.
    """
    from pathlib import Path
    from typing import cast

    from gateway.errors import ManifestError, Problem
    from gateway.manifests.loader import load_catalog
    from gateway.manifests.validate import Format, format_problems
    from gateway.settings import Settings, SettingsError

    _manifest_env()
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    code_root = Path(gateway_root) if gateway_root else settings.gateway_root
    roots: dict[Path, set[Path] | None] = {}
    for target in [Path(p) for p in paths] or [settings.manifests]:
        if target.is_file():
            inside = target.resolve().is_relative_to(settings.manifests.resolve())
            only = roots.setdefault(settings.manifests if inside else target.parent, set())
            if only is not None:
                only.add(target.resolve())
        else:
            roots[target] = None
    problems: list[Problem] = []
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
    if problems or fmt == "json":
        click.echo(format_problems(problems, cast("Format", fmt)), nl=False)
    if problems:
        click.echo(f"{len(problems)} problem(s)", err=True)
        raise SystemExit(1)


@main.command("schema")
def schema_command() -> None:
    """Print the manifest JSON Schema (what schemas/manifest.schema.json holds)."""
    from gateway.manifests.schema import manifest_schema_json

    _manifest_env()
    click.echo(manifest_schema_json(), nl=False)


@main.command("tools")
@click.argument("assistant")
@click.option("--api", type=click.Choice(["chat", "responses"]), default="chat", show_default=True)
@click.option("--strict", is_flag=True, help="OpenAI strict mode (per-tool fallback, warned).")
@click.option(
    "--manifests",
    "manifests_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Manifests root (default: GATEWAY_MANIFESTS or ./manifests).",
)
def tools_command(assistant: str, api: str, strict: bool, manifests_dir: str | None) -> None:
    """Print the tool schemas the model receives for ASSISTANT, as JSON."""
    import json
    from pathlib import Path

    from gateway.errors import ManifestError, NotFound
    from gateway.manifests.loader import load_catalog
    from gateway.manifests.tools import tool_schemas
    from gateway.settings import Settings, SettingsError

    _manifest_env()
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    root = Path(manifests_dir) if manifests_dir else settings.manifests
    try:
        catalog = load_catalog(root, gateway_root=settings.gateway_root)
    except ManifestError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(1) from None
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
        click.echo(f"warning: {warning}", err=True)
    click.echo(json.dumps(tools, indent=2, ensure_ascii=False))


@main.command("import-seed")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--module",
    default="actions.tools",
    show_default=True,
    help="Python module the stub actions point at.",
)
def import_seed_command(config: str, module: str) -> None:
    """Convert an Assistants-API assistant-config.json (CONFIG) to manifest YAML on stdout."""
    from pathlib import Path

    from gateway.errors import InvalidInput
    from gateway.manifests.seed import convert_seed

    path = Path(config)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    try:
        click.echo(convert_seed(text, module=module, source=str(path)), nl=False)
    except InvalidInput as exc:
        raise click.ClickException(exc.message) from None


# --- sandbox: invoke, test, doctor ---
def _sandbox_catalog(manifests_dir: str | None) -> tuple[object, object]:
    """Settings and a loaded catalog for the sandbox commands (exit 1 on invalid manifests)."""
    from pathlib import Path

    from gateway.errors import ManifestError
    from gateway.manifests.loader import load_catalog
    from gateway.settings import Settings, SettingsError

    _manifest_env()
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    from gateway.api.logs import configure_logging

    configure_logging(settings)  # logs to stderr: stdout carries only the result
    root = Path(manifests_dir) if manifests_dir else settings.manifests
    try:
        catalog = load_catalog(root, gateway_root=settings.gateway_root)
    except ManifestError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(1) from None
    return settings, catalog


@main.command("invoke")
@click.argument("action")
@click.option("--args", "args_json", default="{}", show_default=True, help="Arguments as JSON.")
@click.option(
    "--manifests",
    "manifests_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Manifests root (default: GATEWAY_MANIFESTS or ./manifests).",
)
def invoke_command(action: str, args_json: str, manifests_dir: str | None) -> None:
    """Run ACTION once through the real sandbox and print its output (exit 1 on failure)."""
    import asyncio

    from gateway.executors.runner import SandboxRunner
    from gateway.manifests.catalog import Catalog
    from gateway.sandbox.supervisor import Supervisor
    from gateway.settings import Settings

    settings, catalog = _sandbox_catalog(manifests_dir)
    assert isinstance(settings, Settings) and isinstance(catalog, Catalog)
    if action not in catalog.actions and action not in ("code_interpreter", "file_search"):
        known = ", ".join(sorted(catalog.actions)) or "none"
        raise click.ClickException(f"unknown action {action!r} (known: {known})")

    async def run() -> object:
        supervisor = Supervisor(settings)
        await supervisor.start(catalog)
        try:
            return await SandboxRunner(supervisor).run(catalog, action, args_json)
        finally:
            await supervisor.aclose()

    from gateway.executors.base import ToolResult

    result = asyncio.run(run())
    assert isinstance(result, ToolResult)
    click.echo(result.output)
    click.echo(
        f"{result.status} in {result.duration_ms:.1f} ms"
        + (" (truncated)" if result.truncated else ""),
        err=True,
    )
    if result.status != "succeeded":
        raise SystemExit(1)


@main.command("test")
@click.option(
    "--manifests",
    "manifests_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Manifests root (default: GATEWAY_MANIFESTS or ./manifests).",
)
@click.option("--action", "only", multiple=True, help="Only this action (repeatable).")
def test_command(manifests_dir: str | None, only: tuple[str, ...]) -> None:
    """Run every action's `examples:` in the sandbox; exit 1 if any expectation fails."""
    import asyncio

    from gateway.executors.examples import ExampleOutcome, run_examples
    from gateway.executors.runner import SandboxRunner
    from gateway.manifests.catalog import Catalog
    from gateway.sandbox.supervisor import Supervisor
    from gateway.settings import Settings

    settings, catalog = _sandbox_catalog(manifests_dir)
    assert isinstance(settings, Settings) and isinstance(catalog, Catalog)

    async def run() -> list[ExampleOutcome]:
        supervisor = Supervisor(settings)
        await supervisor.start(catalog)
        try:
            return await run_examples(catalog, SandboxRunner(supervisor), only=list(only))
        finally:
            await supervisor.aclose()

    outcomes = asyncio.run(run())
    for outcome in outcomes:
        mark = "ok  " if outcome.ok else "FAIL"
        click.echo(
            f"{mark} {outcome.action}[{outcome.index}] {outcome.result.status} "
            f"{outcome.result.duration_ms:.1f} ms"
        )
        for problem in outcome.problems:
            click.echo(f"     {problem}")
        if not outcome.ok:
            click.echo(f"     output: {outcome.result.output[:300]}")
    failed = sum(not o.ok for o in outcomes)
    click.echo(f"{len(outcomes) - failed} passed, {failed} failed", err=True)
    if failed:
        raise SystemExit(1)


@main.command("doctor")
def doctor_command() -> None:
    """Probe the sandbox: which isolation features work here, and a round-trip time."""
    import asyncio

    import msgspec

    from gateway.executors.runner import SandboxRunner
    from gateway.manifests.catalog import Catalog
    from gateway.sandbox.supervisor import Supervisor
    from gateway.settings import Settings, SettingsError

    _manifest_env()
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    from gateway.api.logs import configure_logging

    configure_logging(settings)

    async def run() -> tuple[dict[str, object], str, float]:
        supervisor = Supervisor(settings)
        await supervisor.start(None)
        try:
            root = settings.root
            empty = Catalog(version="doctor", root=root, gateway_root=root, loaded_at=0)
            runner = SandboxRunner(supervisor)
            result = await runner.run(empty, "code_interpreter", {"code": "print('ok')"})
            best = min(
                [
                    (await runner.run(empty, "code_interpreter", {"code": "pass"})).duration_ms
                    for _ in range(20)
                ]
            )
            caps = msgspec.to_builtins(supervisor.capabilities) or {}
            return caps, result.status, best
        finally:
            await supervisor.aclose()

    try:
        caps, status, best = asyncio.run(run())
    except RuntimeError as exc:
        raise click.ClickException(f"the sandbox does not start: {exc}") from None
    click.echo(f"running as uid {caps.get('uid')}")
    for feature in (
        "network_namespace",
        "drop_privileges",
        "user_namespace",
        "seccomp",
        "landlock",
    ):
        state = "yes" if caps.get(feature) else "no "
        click.echo(f"{feature:<18} {state}  {caps.get(feature + '_detail', '')}")
    click.echo(f"sandboxed call      {status}, best of 20: {best:.2f} ms")
    if status != "succeeded":
        raise SystemExit(1)


# --- server: serve, chat ---
@main.command("serve")
@click.option("--host", default=None, help="Interface (default: GATEWAY_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: GATEWAY_PORT or 8000).")
@click.option(
    "--manifests",
    "manifests_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Manifests root (default: GATEWAY_MANIFESTS or ./manifests).",
)
def serve_command(host: str | None, port: int | None, manifests_dir: str | None) -> None:
    """Serve the assistants over HTTP, SSE, WebSocket and the OpenAI-compatible API."""
    import msgspec
    import uvicorn

    from gateway.app import create_app
    from gateway.settings import Settings, SettingsError

    _manifest_env()
    try:
        settings = Settings.from_env()
        changes: dict[str, object] = {}
        if host is not None:
            changes["host"] = host
        if port is not None:
            changes["port"] = port
        if manifests_dir is not None:
            from pathlib import Path

            changes["manifests"] = Path(manifests_dir)
        settings = msgspec.structs.replace(settings, **changes)
        app = create_app(settings)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        ws="websockets-sansio",
        timeout_graceful_shutdown=10,
    )


@main.command("chat")
@click.argument("assistant", required=False)
@click.option("--url", default=None, help="Gateway URL (default: GATEWAY_HOST:GATEWAY_PORT).")
@click.option("--ws", "use_ws", is_flag=True, help="Talk over WebSocket instead of SSE.")
@click.option("--key", envvar="GATEWAY_KEY", default=None, help="API key (env GATEWAY_KEY).")
def chat_command(assistant: str | None, url: str | None, use_ws: bool, key: str | None) -> None:
    """Chat with an assistant of a running gateway in the terminal (empty line or Ctrl-D quits)."""
    import httpx

    from gateway.console import ChatConsole
    from gateway.settings import Settings

    if url is None:
        settings = Settings.from_env()
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
        url = f"http://{host}:{settings.port}"
    session = ChatConsole(url, assistant, key)
    try:
        with httpx.Client(timeout=httpx.Timeout(10.0, read=None)) as client:
            session.start(client)
            if use_ws:
                _chat_ws(session)
                return
            while message := _ask(session):
                session.send_http(client, message)
    except (httpx.HTTPError, RuntimeError, OSError) as exc:
        raise click.ClickException(f"{url}: {exc}") from None


def _ask(session: object) -> str:
    try:
        return click.prompt("you", default="", show_default=False, prompt_suffix="> ").strip()
    except (EOFError, click.Abort):
        return ""


def _chat_ws(session: object) -> None:
    from gateway.console import ChatConsole

    assert isinstance(session, ChatConsole)
    try:
        from websockets.sync.client import connect
    except ImportError:
        raise click.ClickException("--ws needs the `websockets` package") from None
    ws_url = session.url.replace("http", "ws", 1) + "/ws/chat"
    protocols = ["bearer", session.key] if session.key else None
    with connect(ws_url, subprotocols=protocols) as socket:  # type: ignore[arg-type]
        while message := _ask(session):
            session.send_ws(socket, message)


# --- knowledge: index ---
@main.command("index")
@click.option(
    "--manifests",
    "manifests_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Manifests root (default: GATEWAY_MANIFESTS or ./manifests).",
)
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Index directory (default: the server's, knowledge/ next to its SQLite database).",
)
def index_command(manifests_dir: str | None, cache_dir: str | None) -> None:
    """Build the file_search index for every assistant's knowledge files and print counts."""
    from pathlib import Path

    import gateway.executors  # noqa: F401  (registers the action kinds the loader decodes)
    from gateway.errors import ManifestError
    from gateway.knowledge import DEFAULT_CACHE_DIR, KnowledgeIndex, cache_dir_for
    from gateway.manifests.loader import load_catalog
    from gateway.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    root = Path(manifests_dir) if manifests_dir else settings.manifests
    try:
        catalog = load_catalog(root, gateway_root=settings.gateway_root)
    except ManifestError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(1) from None
    server_dir = cache_dir_for(settings.database_url)
    cache = Path(cache_dir) if cache_dir else server_dir or DEFAULT_CACHE_DIR
    if server_dir is None and not cache_dir:
        click.echo(
            "note: with this thread store the server keeps its index in memory; "
            f"this run only checks the files (index written to {cache})",
            err=True,
        )
    index = KnowledgeIndex(cache)
    try:
        total = index.index(catalog.knowledge_files)
        for name, assistant in sorted(catalog.assistants.items()):
            if assistant.file_search is None:
                continue
            files = [catalog.root / f for f in assistant.file_search.files]
            click.echo(f"{name}: {len(files)} files, {index.passages(files)} passages")
        click.echo(
            f"indexed {total.files} files ({total.parsed} parsed, {total.reused} reused, "
            f"{total.unchanged} unchanged, {total.missing} missing, {total.failed} failed), "
            f"{index.passages(catalog.knowledge_files)} passages in {cache / 'knowledge.sqlite3'}"
        )
    finally:
        index.close()
    if total.missing or total.failed:
        raise SystemExit(1)
