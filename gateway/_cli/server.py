"""``gateway serve`` and ``gateway chat``: run the server, talk to a running one.

Imports click and ``_common`` at the top; ``gateway.app`` (serve) or
``gateway.console`` (chat) inside the commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from gateway._cli._common import load_settings, manifests_option

if TYPE_CHECKING:
    from gateway.console import ChatConsole

__all__ = ["chat_command", "serve_command"]


@click.command("serve", short_help="Serve the assistants: HTTP, SSE, WebSocket, OpenAI API.")
@click.option(
    "--host", default=None, help="Interface to listen on (default: GATEWAY_HOST, else 127.0.0.1)."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port, 0 to 65535 (default: GATEWAY_PORT, else 8000).",
)
@manifests_option
def serve_command(host: str | None, port: int | None, manifests_dir: str | None) -> None:
    """Serve the assistants over HTTP, SSE, WebSocket and the OpenAI-compatible API.

    Loads the manifests, watches them for changes (GATEWAY_WATCH) and serves
    until SIGINT/SIGTERM, then drains: runs get GATEWAY_DRAIN_SECONDS to finish
    (then are cancelled) and their clients a clean end; SIGHUP reloads. Every
    other setting comes from the environment (see the README's Settings table).
    """
    from pathlib import Path

    import msgspec
    import uvicorn

    from gateway._cli._serving import run_server
    from gateway.app import create_app
    from gateway.settings import SettingsError

    settings = load_settings()
    changes: dict[str, object] = {}
    if host is not None:
        changes["host"] = host
    if port is not None:
        changes["port"] = port
    if manifests_dir is not None:
        changes["manifests"] = Path(manifests_dir)
    settings = msgspec.structs.replace(settings, **changes)
    try:
        # What getaddrinfo does first: an empty or overlong label would escape uvicorn
        # as a UnicodeError traceback after the whole startup.
        settings.host.encode("idna")
    except UnicodeError:
        raise click.ClickException(
            f"--host / GATEWAY_HOST: {settings.host!r} is not a host name or address"
        ) from None
    try:
        app = create_app(settings)
    except SettingsError as exc:  # e.g. ENVIRONMENT=production without keys
        raise click.ClickException(str(exc)) from None
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        ws="websockets-sansio",
        # A WebSocket frame is held to the body limit too (uvicorn would buffer up to
        # 16 MiB of each one): a larger frame closes the socket with 1009.
        ws_max_size=settings.max_body_bytes,  # at least 1 (settings refuse 0)
        timeout_graceful_shutdown=10,
    )
    run_server(config)


@click.command("chat", short_help="Chat in the terminal with an assistant of a running gateway.")
@click.argument("assistant", required=False)
@click.option(
    "--url", default=None, help="Gateway URL (default: http://GATEWAY_HOST:GATEWAY_PORT)."
)
@click.option("--ws", "use_ws", is_flag=True, help="Talk over WebSocket instead of SSE.")
@click.option("--key", envvar="GATEWAY_KEY", default=None, help="API key (env GATEWAY_KEY).")
def chat_command(assistant: str | None, url: str | None, use_ws: bool, key: str | None) -> None:
    """Chat with ASSISTANT of a running gateway in the terminal.

    ASSISTANT may be omitted when the gateway has a default one. Streams the
    answer and shows each tool call with its arguments, status and duration.
    Ctrl-C while an answer streams cancels its run; an empty line or Ctrl-D quits.
    """
    import httpx

    from gateway.console import ChatConsole

    if url is None:
        settings = load_settings()
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
        url = (
            f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"
        )
    shown = _checked_url(url)
    session = ChatConsole(url, assistant, key)
    try:
        with httpx.Client(timeout=httpx.Timeout(10.0, read=None)) as client:
            session.start(client)
            if use_ws:
                _chat_ws(session)
                return
            while message := _ask():
                session.send_http(client, message)
    except (httpx.HTTPError, RuntimeError, OSError) as exc:
        raise click.ClickException(f"{shown}: {exc}") from None


def _checked_url(url: str) -> str:
    """``url`` as errors may show it (a password in it masked).

    Raises:
        click.BadParameter: not an http(s) URL with a host (exit 2, naming --url).
    """
    import httpx

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise click.BadParameter(str(exc), param_hint="'--url'") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise click.BadParameter(
            "must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000",
            param_hint="'--url'",
        )
    if parsed.password:
        masked = "***"  # what errors show instead of the password
        return str(parsed.copy_with(username=parsed.username, password=masked))
    return url


def _ask() -> str:
    """The next message typed, or "" at an empty line or end of input."""
    try:
        return click.prompt("you", default="", show_default=False, prompt_suffix="> ").strip()
    except (EOFError, click.Abort):
        return ""


def _chat_ws(session: ChatConsole) -> None:
    """The conversation over one WebSocket (``/ws/chat``), a message at a time."""
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    ws_url = session.url.replace("http", "ws", 1) + "/ws/chat"
    try:
        # The key goes in the Authorization header: the ["bearer", KEY] subprotocol is for
        # browsers, which cannot set headers, and refuses keys with +, / or = (base64 ones).
        with connect(ws_url, additional_headers=session.headers) as socket:
            while message := _ask():
                session.send_ws(socket, message)
    except WebSocketException as exc:  # refused upgrade (a proxy), closed mid-run...
        raise RuntimeError(f"WebSocket /ws/chat: {exc}") from None
