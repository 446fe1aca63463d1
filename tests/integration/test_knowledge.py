"""file_search against the real server: the offline model calls it, passages come back cited."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from gateway.knowledge import index as index_module
from tests._serve import serve, wait_ready
from tests.unit.knowledge.test_knowledge_index import FAQ, make_pdf
from tests.unit.knowledge.test_knowledge_limits import pdf_bomb

if TYPE_CHECKING:
    from tests.integration.conftest import GatewayServer, ServerFactory

LIBRARIAN = """
kind: assistant
name: librarian
provider: offline
description: Answers from the shop's documents.
file_search:
  files: [docs/faq.md, docs/manual.pdf]
  max_results: 3
"""


def _site(root: Path) -> Path:
    manifests = root / "manifests"
    (manifests / "docs").mkdir(parents=True)
    (manifests / "docs" / "faq.md").write_text(FAQ)
    make_pdf(manifests / "docs" / "manual.pdf", ["Tyre pressure: inflate to 4 bar", "Oil weekly"])
    (manifests / "librarian.yaml").write_text(LIBRARIAN)
    return manifests


def _search(
    server: GatewayServer | str, about: str, assistant: str = "librarian"
) -> list[dict[str, Any]]:
    """The passages file_search found on ``server`` (or at this base URL)."""
    url = server if isinstance(server, str) else server.url
    response = httpx.post(
        url + "/chat",
        json={"assistant": assistant, "message": f"search the knowledge files about {about}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    (call,) = response.json()["tool_calls"]
    assert call["name"] == "file_search" and call["status"] == "succeeded", call
    passages: list[dict[str, Any]] = json.loads(call["output"])
    return passages


def test_file_search_returns_cited_passages(tmp_path: Path, gateway_server: ServerFactory) -> None:
    """The best passage comes back first with its source file and location (heading or page)."""
    server = gateway_server(_site(tmp_path / "site"))
    passages = _search(server, "refunds")
    assert passages[0]["source"] == "faq.md"
    assert passages[0]["location"] == "Shop FAQ > Returns"
    assert "full refund" in passages[0]["text"]
    (tyre, *_) = _search(server, "tyre pressure")
    assert (tyre["source"], tyre["location"]) == ("manual.pdf", "page 1")


def test_edited_knowledge_file_is_searched_as_it_is_now(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """After a knowledge file changes on disk, file_search finds the new text."""
    manifests = _site(tmp_path / "site")
    server = gateway_server(manifests, env={"GATEWAY_WATCH": "true"})
    assert _search(server, "Grenoble") == []
    faq = manifests / "docs" / "faq.md"
    faq.write_text(FAQ.replace("Lyon", "Grenoble"))
    deadline = time.monotonic() + 10
    while not (hits := _search(server, "Grenoble")):
        assert time.monotonic() < deadline, "the edit was never searched"
        time.sleep(0.05)
    assert hits[0]["location"] == "Shop FAQ > Shipping"


def test_a_knowledge_file_swapped_for_a_symlink_out_of_the_root_is_not_read(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """A knowledge file replaced after loading by a symlink to a file outside the manifests
    root (validation would refuse it, the last good set keeps serving) is not searched."""
    manifests = _site(tmp_path / "site")
    server = gateway_server(manifests)
    assert _search(server, "refunds")[0]["source"] == "faq.md"
    secret = tmp_path / "secret.md"
    secret.write_text("# Refunds\n\nrefunds token hunter2\n")
    faq = manifests / "docs" / "faq.md"
    faq.unlink()
    faq.symlink_to(secret)
    passages = _search(server, "refunds hunter2")
    assert not any("hunter2" in p["text"] for p in passages), passages


def test_a_knowledge_file_swapped_for_a_symlink_loop_leaves_the_others_searchable(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """A knowledge file replaced after loading by a symlink loop (resolving it raised
    RuntimeError, and every file_search call of the assistant failed as an internal
    error) is searched as missing: the other files still answer."""
    manifests = _site(tmp_path / "site")
    server = gateway_server(manifests)
    manual = manifests / "docs" / "manual.pdf"
    manual.unlink()
    manual.symlink_to(manual.name)
    passages = _search(server, "refunds")
    assert {p["source"] for p in passages} == {"faq.md"}, passages


def test_a_knowledge_file_that_cannot_be_parsed_is_named_in_the_manifests_status(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """A knowledge file whose content failed to parse (searched as empty: before, only a
    log line said so) is listed in the warnings of GET /manifests/status with its name
    and the reason, until its content parses."""
    manifests = _site(tmp_path / "site")
    manual = manifests / "docs" / "manual.pdf"
    manual.write_bytes(b"%PDF-1.4 not really")
    server = gateway_server(manifests)
    assert {p["source"] for p in _search(server, "refunds")} == {"faq.md"}
    (warning,) = httpx.get(server.url + "/manifests/status", timeout=10).json()["warnings"]
    assert warning.startswith("knowledge file 'docs/manual.pdf' cannot be searched: "), warning
    assert "PdfStreamError" in warning, warning
    make_pdf(manual, ["Tyre pressure: inflate to 4 bar"])
    assert _search(server, "tyre")[0]["source"] == "manual.pdf"
    assert httpx.get(server.url + "/manifests/status", timeout=10).json()["warnings"] == []


def test_a_pdf_bomb_among_the_knowledge_files_does_not_take_the_server_down(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """A 130 KB PDF whose page tree names one heavy page 20,000 times (hours of parsing
    in the server before) fails on the page limit; file_search answers from the others."""
    manifests = _site(tmp_path / "site")
    pdf_bomb(manifests / "docs" / "manual.pdf", pages=20_000, inflated_mb=5)
    server = gateway_server(manifests)
    passages = _search(server, "refunds")
    assert {p["source"] for p in passages} == {"faq.md"}
    assert httpx.get(server.url + "/ready", timeout=10).status_code == 200


def test_a_knowledge_file_grown_past_its_cap_is_rejected_and_not_read(
    tmp_path: Path, gateway_server: ServerFactory
) -> None:
    """A knowledge file growing past file_search.max_file_size_mb makes the reload a
    rejection naming the file, line and limit; the last good set keeps serving, and its
    file_search does not read the grown file."""
    manifests = tmp_path / "site" / "manifests"
    (manifests / "docs").mkdir(parents=True)
    (manifests / "docs" / "faq.md").write_text(FAQ)
    (grow := manifests / "docs" / "grow.md").write_text("# Zoo\n\nThe zebra sleeps standing.\n")
    (manifests / "librarian.yaml").write_text(
        "kind: assistant\nname: librarian\nprovider: offline\n"
        "file_search:\n  files: [docs/faq.md, docs/grow.md]\n  max_file_size_mb: 1\n"
    )
    server = gateway_server(manifests, env={"GATEWAY_WATCH": "true"})
    assert _search(server, "zebra")[0]["source"] == "grow.md"
    good = httpx.get(server.url + "/manifests/status", timeout=10).json()["version"]
    grow.write_text("# Zoo\n\nThe zebra crossing.\n" + "stripes " * (1 << 18))
    deadline = time.monotonic() + 10
    while (status := httpx.get(server.url + "/manifests/status", timeout=10).json())[
        "last_attempt"
    ]["result"] != "rejected":
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert status["version"] == good
    (error,) = status["last_attempt"]["errors"]
    assert error.endswith(
        "librarian.yaml:5:24: knowledge file 'docs/grow.md' is 2.1 MiB, "
        "over the limit of 1 MiB (file_search.max_file_size_mb)"
    ), error
    assert _search(server, "zebra") == []
    assert _search(server, "refunds")[0]["source"] == "faq.md"


# `gateway index` of another gateway version: this one's with its schema version patched.
OTHER_VERSION_INDEX = """
import sys

import gateway.knowledge.index as index_module

index_module._SCHEMA_VERSION = int(sys.argv.pop(1))
from gateway.cli import main

main()
"""


def test_a_rolling_upgrade_keeps_the_running_servers_cache_and_removes_it_once_it_stops(
    tmp_path: Path,
) -> None:
    """`gateway index` of a newer cache version run on the volume of a running server (a
    rolling upgrade: the next revision indexed ahead) leaves the server's index alone: its
    file_search keeps finding the passages (before, the newer version rebuilt the shared
    cache and the running server found nothing until it restarted); once the server is
    stopped, the next run of the newer version removes the old version's files."""
    manifests = _site(tmp_path / "site")
    cache = tmp_path / "var" / "knowledge"
    proc, url = serve(manifests, f"sqlite:///{tmp_path}/var/gateway.db", tmp_path)
    (script := tmp_path / "other_index.py").write_text(OTHER_VERSION_INDEX)
    newer = index_module._SCHEMA_VERSION + 1
    # The next revision, checked out beside the live one, indexed ahead by the new version.
    upcoming = _site(tmp_path / "next")
    (upcoming / "docs" / "faq.md").write_text(FAQ.replace("Lyon", "Grenoble"))
    make_pdf(upcoming / "docs" / "manual.pdf", ["Tyre pressure: inflate to 5 bar"])
    command = [sys.executable, str(script), str(newer), "index", "--manifests", str(upcoming)]

    def index_as_newer() -> str:
        done = subprocess.run(
            [*command, "--cache", str(cache)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    try:
        wait_ready(proc, url)
        assert _search(url, "refunds")[0]["source"] == "faq.md"
        printed = index_as_newer()
        hits = _search(url, "refunds")
        assert hits and hits[0]["source"] == "faq.md", "the newer version dropped its index"
        assert f"knowledge.v{newer}.sqlite3" in printed
        assert _search(url, "tyre pressure")[0]["source"] == "manual.pdf"
        ours = f"knowledge.v{index_module._SCHEMA_VERSION}.sqlite3"
        assert (cache / ours).exists()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
        index_as_newer()
        assert sorted(p.name for p in cache.iterdir() if p.name.startswith(ours[:-8])) == []
        assert (cache / f"knowledge.v{newer}.sqlite3").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
