"""Gateways of two knowledge-cache schema versions sharing one cache directory (a rolling
upgrade): neither destroys the other's index, and a version no process uses any more goes."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.knowledge import KnowledgeIndex
from gateway.knowledge import index as index_module
from gateway.knowledge._versions import hold, remove_unused
from tests.unit.knowledge.test_knowledge_index import FAQ

# Another gateway version: this one's index with its schema version patched before use.
OTHER_VERSION = """
import sys
from pathlib import Path

import gateway.knowledge.index as index_module

index_module._SCHEMA_VERSION = int(sys.argv[1])
index = index_module.KnowledgeIndex(Path(sys.argv[2]))
files = [Path(sys.argv[3])]
for line in sys.stdin:
    hits = index.search(files, line.strip(), 3)
    print("hits", len(hits), flush=True)  # its log may write lines to stdout too
"""


class Other:
    """A gateway process of another schema version searching one file, query by query."""

    def __init__(self, script: Path, version: int, cache: Path, file: Path) -> None:
        command = [sys.executable, str(script), str(version), str(cache), str(file)]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def hits(self, query: str) -> int:
        """How many passages its search finds for ``query``."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(query + "\n")
        self.proc.stdin.flush()
        while not (line := self.proc.stdout.readline()).startswith("hits "):
            assert line, f"the other version's process died (exit {self.proc.wait()})"
        return int(line.split()[1])

    def stop(self) -> None:
        """Let it end as a stopped gateway does (its index closed at exit)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture
def other(tmp_path: Path) -> Iterator[Other]:
    """A running process of schema version ours + 1 on ``tmp_path / 'cache'``."""
    (script := tmp_path / "other_version.py").write_text(OTHER_VERSION)
    (tmp_path / "theirs.md").write_text(FAQ.replace("Shop", "Their shop"))
    started = Other(
        script, index_module._SCHEMA_VERSION + 1, tmp_path / "cache", tmp_path / "theirs.md"
    )
    yield started
    if started.proc.poll() is None:
        started.proc.kill()
        started.proc.wait()
    for pipe in (started.proc.stdin, started.proc.stdout):
        if pipe is not None:
            pipe.close()


def test_two_schema_versions_sharing_a_cache_keep_each_others_index(
    tmp_path: Path, other: Other
) -> None:
    """An older and a newer gateway opening one cache directory in turn (a rolling upgrade)
    both keep finding their passages: neither drops the index the other is using."""
    ours = tmp_path / "ours.md"
    ours.write_text(FAQ)
    first = KnowledgeIndex(tmp_path / "cache")
    assert first.search([ours], "warranty", 3)
    assert other.hits("warranty") > 0  # the newer one opens the cache while ours runs
    assert first.search([ours], "warranty", 3), "the newer version dropped our index"
    again = KnowledgeIndex(tmp_path / "cache")  # an older replica (re)starting
    assert again.search([ours], "refunds", 3)
    assert other.hits("refunds") > 0, "the older version dropped the newer one's index"
    first.close()
    again.close()


def test_a_version_no_process_uses_any_more_is_removed_and_one_in_use_never(
    tmp_path: Path, other: Other
) -> None:
    """Another version's cache stays while a process of that version runs (it keeps finding
    its passages) and goes once none does; a cache of a gateway from before versioned
    files (no lock says whether one still runs) is left alone."""
    cache = tmp_path / "cache"
    assert other.hits("warranty") > 0
    theirs = sorted(p.name for p in cache.iterdir())
    (cache / "knowledge.sqlite3").write_bytes(b"an older gateway's cache")
    for _ in range(3):  # our replicas starting, gateway index runs
        KnowledgeIndex(cache).close()
    assert set(theirs) <= {p.name for p in cache.iterdir()}
    assert other.hits("warranty") > 0
    other.stop()
    ours = KnowledgeIndex(cache)
    assert ours.file is not None
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        ["knowledge.sqlite3", ours.file.name, ours.file.with_suffix(".lock").name]
        + [ours.file.name + s for s in ("-wal", "-shm")]
    )
    ours.close()


def test_a_version_removed_while_it_is_being_opened_is_started_afresh(tmp_path: Path) -> None:
    """Removing an unused version cannot take the files of a process opening it at that
    moment: one holding the version keeps it, and one that was waiting for the lock of
    the file being removed locks a new one."""
    cache = tmp_path / "cache"
    held = hold(cache, 7)
    assert remove_unused(cache, 8) == []  # in use (flock: per open file, so also here)
    os.close(held)
    lock = cache / "knowledge.v7.lock"
    removing = os.open(lock, os.O_RDWR)
    fcntl.flock(removing, fcntl.LOCK_EX)  # remove_unused at work
    got: list[int] = []
    opener = threading.Thread(target=lambda: got.append(hold(cache, 7)))
    opener.start()
    deadline = time.monotonic() + 10
    while "->" not in Path("/proc/locks").read_text():  # the opener waits for the lock
        assert time.monotonic() < deadline, "hold never waited"
        time.sleep(0.01)
    lock.unlink()
    os.close(removing)
    opener.join(timeout=10)
    (fd,) = got
    assert os.fstat(fd).st_nlink == 1, "it holds the removed lock file"
    assert lock.exists() and os.fstat(fd).st_ino == lock.stat().st_ino
    os.close(fd)
