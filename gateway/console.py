"""The terminal chat client behind ``gateway chat``: a person talking to a running gateway.

It speaks only the public API (``GET /start``, ``POST /chat`` as SSE, or
``WS /ws/chat`` with ``--ws``), prints the answer as it streams, and shows
each tool call the way one wants to read it: name and arguments when it
starts, status, duration and a short output when it ends. Imports httpx and
rich, nothing from the server side of the package; for ``--ws``,
``gateway._cli.server`` opens the socket (``websockets``, imported only then)
and hands it to ``ChatConsole.send_ws``.

Everything the server sends is untrusted: a model's answer or a tool's output
can hold rich markup (``[/]``) or terminal escape sequences (which could move
the cursor over a line already shown, retitle the window or write the
clipboard), so every string is shown through ``_visible`` (control characters
made visible) inside a rich ``Text``, never parsed as markup. An answer that
is not the gateway's protocol (a non-JSON body, an event missing its fields:
another server, a proxy) raises ``ProtocolError``, which ``gateway chat``
prints as a one-line error.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.text import Text

__all__ = ["ChatConsole", "ProtocolError"]

_STATUS_STYLE = {"succeeded": "green", "failed": "red", "timed_out": "yellow"}
_RESUME_ATTEMPTS = 3  # a cut stream is resumed this many times, 0.25 s, 0.5 s, 0.75 s apart
# C0 controls but newline and tab, DEL, the C1 controls (0x9b is a one-byte CSI), and more.
_CONTROL = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
"""What a terminal obeys (C0 and C1 controls, DEL) or that reorders or breaks what it shows
(bidirectional marks, embeddings, overrides and isolates; line and paragraph separators)."""


class ProtocolError(RuntimeError):
    """The server's answer is not the gateway's protocol (not JSON, a field missing...)."""


def _visible(value: object) -> str:
    """``value`` as text that cannot drive a terminal: control characters shown as ``\\xNN``,
    bidirectional and line-separator characters as ``\\uNNNN`` (a U+202E in an answer
    showed the rest of the line reversed); newline and tab kept. Print it in a ``Text``,
    so rich markup in it stays text too.
    """
    text = str(value).replace("\r\n", "\n")
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _event_data(event: str, data: str | bytes) -> dict[str, Any]:
    """The JSON object an event carries.

    Raises:
        ProtocolError: ``data`` is not a JSON object.
    """
    try:
        decoded = json.loads(data)
    except ValueError:
        decoded = None
    if not isinstance(decoded, dict):
        raise ProtocolError(f"the server sent a {event!r} event whose data is not a JSON object")
    return decoded


def _sse_frames(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """``(event, data, id)`` of each frame of a text/event-stream (``id`` None when absent).

    Comment lines (``: keep-alive``) and unknown fields are skipped.
    """
    event, data, ident = "message", "", None
    for line in lines:
        if not line:
            if data:
                yield event, _event_data(event, data), ident
            event, data, ident = "message", "", None
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line.startswith("id:"):
            ident = line[3:].strip()


class _Progress:
    """How far one run's stream got: its ids, the last event id seen, whether it ended."""

    def __init__(self, thread_id: str | None) -> None:
        self.thread_id = thread_id
        self.run_id: str | None = None
        self.last_id: str | None = None
        self.done = False


def _error_of(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` of a failed answer: the gateway's JSON error, else (another server, a
    proxy's HTML page) just the status, so a non-JSON body is never a decode traceback.
    """
    status = f"HTTP {response.status_code}"
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):  # not JSON, or JSON that is not an object
        error = None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return {"type": "http_error", "message": status}
    return {"type": error.get("type", "http_error"), "message": f"{status}: {error['message']}"}


class ChatConsole:
    """One conversation with one assistant, rendered on a rich ``Console``.

    Args:
        url: the gateway's base URL (``http://127.0.0.1:8000``).
        assistant: the assistant to talk to (None: the gateway's default).
        key: an API key, sent as ``Authorization: Bearer``.
        console: where to print (a fresh ``Console`` by default).
    """

    def __init__(
        self, url: str, assistant: str | None, key: str | None, console: Console | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.assistant = assistant
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.key = key
        # emoji=False: an answer's ":smile:" is text, not a code to replace.
        self.console = console or Console(highlight=False, emoji=False)
        self.thread_id: str | None = None
        self._open_line = False

    def start(self, client: httpx.Client) -> None:
        """Open a thread and print the assistant's greeting.

        Raises:
            RuntimeError: the gateway refused (its status and message).
            ProtocolError: the answer is not a gateway's (not JSON, no thread id).
        """
        params = {"assistant": self.assistant} if self.assistant else {}
        response = client.get(f"{self.url}/start", params=params, headers=self.headers)
        if response.status_code != 200:
            raise RuntimeError(_error_of(response)["message"])
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("thread_id"), str):
            raise ProtocolError(
                f"GET /start answered HTTP {response.status_code} without a thread_id: "
                "is this a gateway?"
            )
        self.thread_id, self.assistant = body["thread_id"], str(body.get("assistant"))
        self.console.print(
            Text.assemble(
                (_visible(self.assistant), "bold"),
                " ",
                (f"thread {_visible(self.thread_id)}", "dim"),
            )
        )
        if body.get("initial_message"):
            self.console.print(Text(_visible(body["initial_message"]), style="cyan"))

    def send_http(self, client: httpx.Client, message: str) -> None:
        """Send one message over SSE and render the events as they arrive.

        A stream that ends or breaks before the run's ``done`` (a proxy's timeout, a
        network blip) is resumed from ``GET /threads/{id}/runs/{run_id}/events`` after
        the last event id seen, as the playground does: the run goes on on the server.
        When that fails too, an error says the answer is incomplete. Ctrl-C while the
        answer streams cancels the run (its model call and actions stop) and returns.
        """
        progress = _Progress(self.thread_id)
        try:
            self._send_http(client, message, progress)
        except KeyboardInterrupt:
            self._cancel(client, progress)

    def _send_http(self, client: httpx.Client, message: str, progress: _Progress) -> None:
        body = {"thread_id": self.thread_id, "message": message, "stream": True}
        with client.stream("POST", f"{self.url}/chat", json=body, headers=self.headers) as resp:
            if resp.status_code != 200:
                resp.read()
                self.render("error", _error_of(resp))
                return
            self._follow(resp, progress)
        for attempt in range(1, _RESUME_ATTEMPTS + 1):
            if progress.done or progress.run_id is None or progress.thread_id is None:
                break
            time.sleep(0.25 * attempt)
            headers = {**self.headers, "Accept": "text/event-stream"}
            if progress.last_id:
                headers["Last-Event-ID"] = progress.last_id
            thread, run = quote(progress.thread_id, safe=""), quote(progress.run_id, safe="")
            url = f"{self.url}/threads/{thread}/runs/{run}/events"
            try:
                with client.stream("GET", url, headers=headers) as resp:
                    if resp.status_code != 200:
                        resp.read()
                        self.render("error", _error_of(resp))
                        break
                    self._follow(resp, progress)
            except httpx.TransportError:
                continue  # still unreachable: try again
        if not progress.done:
            resumed = " and could not be resumed" if progress.run_id else ""
            message = f"the answer was cut before its end{resumed}"
            self.render("error", {"type": "stream_cut", "message": message})

    def _cancel(self, client: httpx.Client, progress: _Progress) -> None:
        """After Ctrl-C: cancel the run being answered (``POST .../cancel``) and say so."""
        if self._open_line:
            self.console.print()
            self._open_line = False
        if progress.done:
            return
        if progress.run_id is None or progress.thread_id is None:
            self.console.print("[yellow]interrupted before the run started[/]")
            return
        thread, run = quote(progress.thread_id, safe=""), quote(progress.run_id, safe="")
        url = f"{self.url}/threads/{thread}/runs/{run}/cancel"
        response = client.post(url, headers=self.headers)
        if response.status_code != 200:
            self.render("error", _error_of(response))
            return
        self.console.print("[yellow]cancelled[/]")

    def _follow(self, response: httpx.Response, progress: _Progress) -> None:
        """Render one SSE response's events into ``progress`` until ``done`` or its end."""
        try:
            for event, data, ident in _sse_frames(response.iter_lines()):
                self.render(event, data)
                if event == "thread.run.created":
                    progress.run_id = str(data.get("run_id"))
                    progress.thread_id = str(data.get("thread_id", progress.thread_id))
                if ident:
                    progress.last_id = ident
                if event == "done":
                    progress.done = True
                    return
        except httpx.TransportError:
            return  # broken off mid-stream: the caller resumes

    def send_ws(self, socket: Any, message: str) -> None:
        """Send one message on an open WebSocket and render events until its run's ``done``.

        A refused message (bad frame, busy thread, rate limit...) gets a lone ``error``
        and no run; an ``error`` inside a run is followed by ``thread.run.failed``,
        ``metadata`` and ``done``, which must be read here, not taken for the next answer.

        The first Ctrl-C cancels the run (over HTTP) and keeps reading to its ``done``;
        a second one is not caught.

        Raises:
            ProtocolError: a frame is not ``{"event": NAME, "data": {...}}``.
        """
        socket.send(json.dumps({"thread_id": self.thread_id, "message": message}))
        progress = _Progress(self.thread_id)
        interrupted = False
        while True:
            try:
                frame = _event_data("WebSocket", socket.recv())
                event, data = frame.get("event"), frame.get("data")
                if not isinstance(event, str) or not isinstance(data, dict):
                    raise ProtocolError("the server sent a WebSocket frame without event and data")
                self.render(event, data)
                if event == "thread.run.created":
                    progress.run_id = str(data.get("run_id"))
                    progress.thread_id = str(data.get("thread_id", progress.thread_id))
                    if interrupted:  # Ctrl-C came before the run existed
                        self._cancel_over_http(progress)
                elif event == "done" or (event == "error" and progress.run_id is None):
                    return
            except KeyboardInterrupt:
                if interrupted:
                    raise
                interrupted = True
                if progress.run_id is not None:
                    self._cancel_over_http(progress)

    def _cancel_over_http(self, progress: _Progress) -> None:
        with httpx.Client(timeout=10.0) as client:
            self._cancel(client, progress)

    def render(self, event: str, data: dict[str, Any]) -> None:
        """Print one event.

        Raises:
            ProtocolError: the event lacks a field it must carry.
        """
        try:
            self._render(event, data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(
                f"the server sent a malformed {event!r} event ({type(exc).__name__}: {exc})"
            ) from None

    def _render(self, event: str, data: dict[str, Any]) -> None:
        out = self.console
        if event == "thread.message.delta":
            if not self._open_line:
                out.print("[cyan]assistant>[/] ", end="")
                self._open_line = True
            out.print(Text(_visible(data["delta"]), style="cyan"), end="")
            return
        if self._open_line:
            out.print()
            self._open_line = False
        if event == "thread.run.step.created":
            call = data["tool_call"]
            arguments = f"({_visible(call['arguments'])})"
            out.print(
                Text.assemble(
                    "  ", ("tool", "magenta"), " ", _visible(call["name"]), (arguments, "dim")
                )
            )
        elif event == "thread.run.step.completed":
            call = data["tool_call"]
            style = _STATUS_STYLE.get(call["status"], "white")
            output = str(call["output"])
            output = output if len(output) <= 200 else output[:200] + "..."
            took = f"in {float(call['duration_ms']):.0f} ms: {_visible(output)}"
            out.print(
                Text.assemble(
                    "  ",
                    (_visible(call["status"]), style),
                    " ",
                    _visible(call["name"]),
                    " ",
                    (took, "dim"),
                )
            )
        elif event == "thread.run.completed" and data.get("incomplete_details"):
            reason = _visible(data["incomplete_details"].get("reason"))
            if reason == "max_tool_rounds":
                out.print(Text("stopped: the model kept calling tools (max_tool_rounds)", "yellow"))
            else:
                out.print(Text(f"answer cut short ({reason})", style="yellow"))
        elif event in ("error", "thread.run.failed"):
            info = data.get("error", data)
            kind, message = _visible(info.get("type")), _visible(info.get("message"))
            out.print(Text(f"error ({kind}): {message}", style="red"))
        elif event == "metadata":
            if data.get("empty_answer"):  # else the user sees nothing and waits on
                out.print(Text("(the model answered nothing)", style="yellow"))
            t = {k: float(data["timings"][k]) for k in ("total_ms", "model_ms", "tools_ms")}
            split = f"model {t['model_ms']:.0f}, tools {t['tools_ms']:.0f}"
            tokens = int(data["usage"]["total_tokens"])
            out.print(Text(f"{t['total_ms']:.0f} ms ({split}), {tokens} tokens", style="dim"))
