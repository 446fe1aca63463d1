"""The web playground at /ui, driven in Debian's chromium through Playwright.

Skips (saying why) when chromium is not installed, except under ``CI=true``
where a missing browser is a failure: ``just test`` installs it first.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests._fake import write_remote

if TYPE_CHECKING:
    from tests.integration.conftest import GatewayServer

pytestmark = pytest.mark.browser


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "Debian's chromium is not installed (apt-get install chromium, or `just test`)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless chromium per module, with the flags this closed network needs."""
    executable = _chromium()
    with sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=executable,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    yield opened
    context.close()


def test_playground_chats_and_shows_tool_calls(page: Page, api_server: GatewayServer) -> None:
    """A person picks an assistant, sends a message, and sees the tool call and the answer."""
    server = api_server
    page.goto(f"{server.url}/ui")
    expect(page.locator("#assistant option")).not_to_have_count(0)
    page.select_option("#assistant", "helper")
    expect(page.locator(".msg.assistant").first).to_contain_text("Ask me about the weather")

    page.fill("#message", "what is the weather in Paris?")
    page.click("form#send button[type=submit]")

    expect(page.locator(".msg.user")).to_have_text("what is the weather in Paris?")
    tool_lines = page.locator(".msg.tool")
    expect(tool_lines.first).to_contain_text("get_weather")
    expect(tool_lines.first).to_contain_text("Paris")
    expect(tool_lines.nth(1)).to_contain_text("succeeded")
    expect(page.locator(".msg.meta")).to_contain_text("manifests")
    answer = page.locator(".msg.assistant").last
    expect(answer).to_contain_text("21")

    # The thread is real: the server stored both sides of the exchange.
    thread_id = page.evaluate("threadId")
    history = page.request.get(f"{server.url}/threads/{thread_id}/messages").json()
    text = str(history)
    assert "what is the weather in Paris?" in text
    assert "get_weather" in text


def test_playground_shows_server_errors(
    page: Page, gateway_server: Callable[..., Any], api_manifests: Path
) -> None:
    """A rejected request (wrong API key) is shown to the person instead of failing silently."""
    server = gateway_server(api_manifests, env={"GATEWAY_API_KEYS": "right-key"})
    page.goto(f"{server.url}/ui")
    expect(page.locator(".msg.error").first).to_contain_text("401")
    page.fill("#key", "right-key")
    page.press("#key", "Enter")
    expect(page.locator("#assistant option")).not_to_have_count(0)
    expect(page.locator(".msg.error")).to_have_count(0)
    expect(page.locator(".msg.assistant").first).to_contain_text("Ask me about the weather")


def _cut_after(body: str, event: str) -> str:
    """The SSE ``body`` up to and including the first ``event`` frame, then half a frame."""
    frames = body.split("\n\n")
    for i, frame in enumerate(frames):
        if f"event: {event}\n" in frame:
            return "\n\n".join(frames[: i + 1]) + "\n\n" + frames[i + 1][: len(frames[i + 1]) // 2]
    raise AssertionError(f"no {event} frame in {body!r}")


def test_playground_resumes_a_cut_stream(page: Page, api_server: GatewayServer) -> None:
    """A stream cut mid-way (a proxy timeout, a network blip) is resumed from the run's
    events with Last-Event-ID: the whole answer shows, each event once, and no error.
    """
    server = api_server
    resumed: list[dict[str, str]] = []

    def cut(route: Any) -> None:
        response = route.fetch()
        route.fulfill(
            response=response, body=_cut_after(response.text(), "thread.run.step.created")
        )

    page.route("**/chat", cut)
    page.on(
        "request",
        lambda r: resumed.append(r.headers) if "/runs/" in r.url and "/events" in r.url else None,
    )
    page.goto(f"{server.url}/ui")
    page.select_option("#assistant", "helper")
    expect(page.locator(".msg.assistant").first).to_contain_text("Ask me about the weather")
    page.fill("#message", "what is the weather in Paris?")
    page.click("form#send button[type=submit]")

    expect(page.locator(".msg.meta")).to_contain_text("manifests")
    expect(page.locator(".msg.assistant").last).to_contain_text("21")
    tool_lines = page.locator(".msg.tool")
    expect(tool_lines).to_have_count(2)
    expect(tool_lines.nth(1)).to_contain_text("succeeded")
    expect(page.locator(".msg.error")).to_have_count(0)
    assert resumed, "the page never asked for the run's events"
    assert resumed[0].get("last-event-id", "").endswith(":2")


def test_playground_reports_network_failures_and_non_json_errors(
    page: Page, api_server: GatewayServer
) -> None:
    """A request that never reaches the gateway, or a proxy's HTML error page, is shown
    to the person (not an unhandled promise rejection and a page that does nothing).
    """
    server = api_server
    page.goto(f"{server.url}/ui")
    page.select_option("#assistant", "helper")
    expect(page.locator(".msg.assistant").first).to_contain_text("Ask me about the weather")

    page.route(
        "**/start?*", lambda route: route.fulfill(status=502, body="<html>Bad Gateway</html>")
    )
    page.click("#new")
    expect(page.locator(".msg.error")).to_contain_text("HTTP 502")

    page.route("**/chat", lambda route: route.abort("connectionrefused"))
    page.fill("#message", "hello")
    page.click("form#send button[type=submit]")
    expect(page.locator(".msg.error")).to_have_count(2)
    expect(page.locator(".msg.error").last).to_contain_text("gateway")


def test_playground_does_not_reuse_the_old_thread_when_a_new_one_fails(
    page: Page, api_server: GatewayServer
) -> None:
    """After "New thread" failed, the next message starts a new thread; it does not go on
    the previous one (maybe another assistant's) as if nothing had happened.
    """
    server = api_server
    page.goto(f"{server.url}/ui")
    page.select_option("#assistant", "helper")
    expect(page.locator(".msg.assistant").first).to_contain_text("Ask me about the weather")
    old = page.evaluate("threadId")
    assert old

    page.route(
        "**/start?*",
        lambda route: route.fulfill(
            status=503,
            json={
                "error": {
                    "type": "not_ready",
                    "message": "the gateway is starting",
                    "correlation_id": "x",
                }
            },
        ),
    )
    page.click("#new")
    expect(page.locator(".msg.error")).to_contain_text("starting")
    sent: list[Any] = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/chat") else None)
    page.fill("#message", "what is the weather in Paris?")
    page.click("form#send button[type=submit]")
    expect(page.locator(".msg.meta")).to_contain_text("manifests")
    assert sent and sent[0]["thread_id"] == "new"
    assert page.evaluate("threadId") != old


def test_playground_works_at_its_trailing_slash_address(
    page: Page, api_server: GatewayServer
) -> None:
    """``/ui/`` serves the page too; its API calls must not go to ``/ui/assistants``."""
    server = api_server
    page.goto(f"{server.url}/ui/")
    expect(page.locator("#assistant option")).not_to_have_count(0)
    page.select_option("#assistant", "helper")
    expect(page.locator(".msg.assistant").first).to_contain_text("Ask me about the weather")
    page.fill("#message", "what is the weather in Paris?")
    page.click("form#send button[type=submit]")
    expect(page.locator(".msg.assistant").last).to_contain_text("21")
    expect(page.locator(".msg.error")).to_have_count(0)


def test_playground_shows_a_failed_run_once(
    page: Page, gateway_server: Callable[..., Any], tmp_path: Path
) -> None:
    """A failed run streams error + thread.run.failed; the person sees one message, not two."""
    from gateway.testing.fake_openai import FakeOpenAI

    manifests = tmp_path / "manifests"
    with FakeOpenAI() as fake:
        write_remote(manifests, fake)
        server = gateway_server(manifests)
        fake.fail_next(500, times=1)
        page.goto(f"{server.url}/ui")
        expect(page.locator("#assistant option")).to_have_count(1)
        page.fill("#message", "hello")
        page.click("form#send button[type=submit]")
        expect(page.locator(".msg.meta")).to_have_count(1)
        expect(page.locator(".msg.error")).to_have_count(1)


def test_playground_new_thread_drops_the_answer_streaming(
    page: Page, gateway_server: Callable[..., Any], tmp_path: Path
) -> None:
    """Starting a new thread while an answer streams stops showing it and cancels its run:
    the rest of the old answer, its metadata and errors landed in the new conversation."""
    from gateway.testing.fake_openai import FakeOpenAI

    manifests = tmp_path / "manifests"
    with FakeOpenAI() as fake:
        write_remote(manifests, fake, "initial_message: Fresh start.\n")
        server = gateway_server(manifests)
        fake.delay(0, between_chunks=0.05)
        fake.add_text(" ".join(f"word{n}" for n in range(40)))  # 2 s at this pace
        cancels: list[str] = []
        page.on("request", lambda r: cancels.append(r.url) if r.url.endswith("/cancel") else None)
        page.goto(f"{server.url}/ui")
        expect(page.locator(".msg.assistant")).to_have_text("Fresh start.")
        old_thread = page.evaluate("threadId")
        page.fill("#message", "tell me everything")
        page.click("form#send button[type=submit]")
        expect(page.locator(".msg.assistant").last).to_contain_text("word3")
        page.click("#new")
        expect(page.locator(".msg.assistant")).to_have_text("Fresh start.")
        assert page.evaluate("threadId") != old_thread
        # The old run has ended (cancelled; else after its 2 s answer, metadata sent): what
        # the page still took from it would show within a moment.
        deadline = time.monotonic() + 10
        while server.services.the_engine().active_runs:
            assert time.monotonic() < deadline, "the old run did not end"
            time.sleep(0.02)
        page.wait_for_timeout(500)
        expect(page.locator(".msg")).to_have_count(1)
        assert len(cancels) == 1 and f"/threads/{old_thread}/runs/" in cancels[0]


def test_playground_runs_only_its_own_script(page: Page, api_server: GatewayServer) -> None:
    """The page is served with a Content-Security-Policy allowing its own inline script
    and style by hash and nothing else: markup that ever slipped into the log (a model's
    answer rendered as HTML) could not run script; no other site may frame the page."""
    server = api_server
    response = page.goto(f"{server.url}/ui")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "connect-src 'self'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    expect(page.locator("#assistant option")).not_to_have_count(0)  # its own script runs
    page.evaluate(
        """() => {
            const log = document.getElementById("log");
            log.insertAdjacentHTML("beforeend", '<img src="x" onerror="window.pwned = 1">');
            const s = document.createElement("script");
            s.textContent = "window.pwned = 2";
            document.body.appendChild(s);
        }"""
    )
    page.wait_for_timeout(300)  # an onerror handler, if allowed, runs once the image fails
    assert page.evaluate("window.pwned === undefined")


def test_playground_says_an_answer_was_cut_short(
    page: Page, gateway_server: Callable[..., Any], tmp_path: Path
) -> None:
    """An answer the model's token limit cut (an incomplete run) is shown, then said to be
    cut short and why; it looked like a whole answer, as `gateway chat` already said."""
    from gateway.testing.fake_openai import FakeOpenAI

    manifests = tmp_path / "manifests"
    with FakeOpenAI() as fake:
        write_remote(manifests, fake)
        server = gateway_server(manifests)
        fake.add_text("It is sun", finish_reason="length")
        page.goto(f"{server.url}/ui")
        expect(page.locator("#assistant option")).to_have_count(1)
        page.fill("#message", "weather?")
        page.click("form#send button[type=submit]")
        expect(page.locator(".msg.meta")).to_have_count(1)
        expect(page.locator(".msg.assistant").last).to_have_text("It is sun")
        expect(page.locator(".msg.notice")).to_have_text(
            "The answer was cut short: it reached the size limit of one answer"
            " (max_completion_tokens)."
        )
        expect(page.locator(".msg.error")).to_have_count(0)


def test_playground_says_in_words_why_a_run_has_no_whole_answer(
    page: Page, gateway_server: Callable[..., Any], tmp_path: Path
) -> None:
    """An empty answer (metadata.empty_answer) showed as an empty bubble, and a run stopped
    at max_tool_rounds as "cut short (max_tool_rounds)"; each is now a sentence a person
    reads, the raw reason kept beside it for the developer, and so is a stop sequence."""
    from gateway.testing.fake_openai import FakeOpenAI

    manifests = tmp_path / "manifests"
    with FakeOpenAI() as fake:
        write_remote(manifests, fake, "max_tool_rounds: 2\n")
        server = gateway_server(manifests)
        page.goto(f"{server.url}/ui")
        expect(page.locator("#assistant option")).to_have_count(1)
        notices, bubbles = page.locator(".msg.notice"), page.locator(".msg.assistant")

        fake.add_text("\n")  # a local model answering a newline
        page.fill("#message", "hello?")
        page.click("form#send button[type=submit]")
        expect(page.locator(".msg.meta")).to_have_count(1)
        expect(notices).to_have_text(
            ["The model answered nothing (empty_answer, finish_reason: stop)."]
        )
        expect(bubbles).to_have_count(0)  # no empty bubble

        for _ in range(3):  # two rounds run; the third answer still calls a tool
            fake.add_tool_calls([("lookup", {"q": "again"})])
        page.fill("#message", "look it up")
        page.click("form#send button[type=submit]")
        expect(page.locator(".msg.meta")).to_have_count(2)
        expect(notices.last).to_have_text(
            "The assistant stopped after 2 tool rounds without an answer (max_tool_rounds)."
        )

        fake.add_text("Count: 1, 2", finish_reason="stop_sequence")
        page.fill("#message", "count")
        page.click("form#send button[type=submit]")
        expect(page.locator(".msg.meta")).to_have_count(3)
        expect(bubbles.last).to_have_text("Count: 1, 2")
        expect(notices.last).to_have_text(
            "The model stopped at one of its stop sequences (finish_reason: stop_sequence)."
        )
        expect(notices).to_have_count(3)
        expect(page.locator(".msg.error")).to_have_count(0)


def test_playground_sends_nothing_while_an_answer_streams(
    page: Page, gateway_server: Callable[..., Any], tmp_path: Path
) -> None:
    """A message sent while an answer streamed got the gateway's 409 (one run per thread);
    now Send (and Enter) is off during the run and back on after done, error or cancel."""
    from gateway.testing.fake_openai import FakeOpenAI

    manifests = tmp_path / "manifests"
    with FakeOpenAI() as fake:
        write_remote(manifests, fake, "initial_message: Hello.\n")
        server = gateway_server(manifests)
        fake.delay(0, between_chunks=0.05)
        slow = " ".join(f"word{n}" for n in range(30))  # 1.5 s at this pace
        chats: list[str] = []
        page.on("request", lambda r: chats.append(r.url) if r.url.endswith("/chat") else None)
        page.goto(f"{server.url}/ui")
        expect(page.locator(".msg.assistant")).to_have_text("Hello.")
        button = page.locator("form#send button[type=submit]")

        # Done: off while it streams, Enter included; on again at the end.
        fake.add_text(slow)
        page.fill("#message", "first")
        page.press("#message", "Enter")
        expect(button).to_be_disabled()
        expect(page.locator(".msg.assistant").last).to_contain_text("word2")
        page.fill("#message", "second")
        page.press("#message", "Enter")
        expect(page.locator(".msg.meta")).to_have_count(1)
        expect(button).to_be_enabled()
        expect(page.locator(".msg.user")).to_have_count(1)
        expect(page.locator("#message")).to_have_value("second")  # kept, to send now
        assert len(chats) == 1

        # Error: on again after a failed run.
        fake.fail_next(500, times=1)
        page.press("#message", "Enter")
        expect(page.locator(".msg.error")).to_have_count(1)
        expect(button).to_be_enabled()
        expect(page.locator(".msg.error")).not_to_contain_text("409")

        # Cancel: "New thread" while it streams puts Send back at once.
        fake.add_text(slow)
        page.fill("#message", "third")
        page.click("form#send button[type=submit]")
        expect(page.locator(".msg.assistant").last).to_contain_text("word2")
        expect(button).to_be_disabled()
        page.click("#new")
        expect(page.locator(".msg.assistant")).to_have_text("Hello.")
        expect(button).to_be_enabled()
