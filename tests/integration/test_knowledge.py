"""file_search against the real server: the offline model calls it, passages come back cited."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.unit.knowledge.test_knowledge_index import FAQ, make_pdf

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


def _search(server: GatewayServer, about: str) -> list[dict[str, Any]]:
    response = httpx.post(
        server.url + "/chat",
        json={"assistant": "librarian", "message": f"search the knowledge files about {about}"},
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
