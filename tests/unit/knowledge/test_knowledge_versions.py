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


def _transactions(statements: list[str]) -> list[list[str]]:
    """The statements of each write transaction, in order."""
    found: list[list[str]] = []
    for statement in statements:
        if statement == "BEGIN IMMEDIATE":
            found.append([])
        elif found and statement not in ("COMMIT", "ROLLBACK"):
            found[-1].append(statement)
    return found


def test_a_long_file_is_written_and_deleted_in_bounded_transactions(tmp_path: Path) -> None:
    """Indexing a file of thousands of passages (gateway index next to a running server)
    holds the cache's write lock for at most a batch of passages at a time, not for the
    whole file (the server's searches waited on it past their 5 s busy timeout and
    failed); so does deleting them after an edit."""
    big = tmp_path / "big.md"
    big.write_text("\n\n".join(f"## Part {n}\n\n" + f"word{n} text " * 50 for n in range(1600)))
    index = KnowledgeIndex(tmp_path / "cache")
    statements: list[str] = []
    index._db.set_trace_callback(statements.append)
    assert index.index([big]).passages == 1600
    inserts = [
        sum(s.startswith("INSERT INTO passages") for s in t) for t in _transactions(statements)
    ]
    assert sum(inserts) == 1600 and max(inserts) <= index_module._BATCH, inserts
    statements.clear()
    big.write_text("# Short now\n\nword7 only.\n")
    assert index.search([big], "word7", 3)[0].location == "Short now"
    deletes = [t for t in _transactions(statements) if any("DELETE FROM passages" in s for s in t)]
    assert len(deletes) >= 1600 // index_module._BATCH, statements
    (left,) = index._db.execute("SELECT count(*) FROM passages").fetchone()
    assert left == 1
    index.close()


def test_searches_needing_a_write_succeed_while_gateway_index_writes_a_long_file(
    tmp_path: Path,
) -> None:
    """A server's searches that must write (files new to it) while `gateway index` writes
    thousands of passages into the same cache each get the write lock within a small
    busy timeout (before, the index's one transaction held it until the whole file was
    in, past the server's 5 s on a large file: its searches failed meanwhile). The
    file takes about 4.5 s to index on a quiet 2-core machine, so the old transaction
    held the lock past this test's 1.5 s; one batch holds it for 50 ms there (500 ms
    seen under a loaded suite, which failed the 0.5 s this test used to give)."""
    root = tmp_path / "manifests"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "big.md").write_text(  # distinct words: each passage costs FTS5 work
        "\n\n".join(
            f"## Part {n}\n\n" + " ".join(f"w{n}x{i}" for i in range(80)) for n in range(40_000)
        )
    )
    (root / "a.yaml").write_text(
        "kind: assistant\nname: big\nfile_search:\n  files: [docs/big.md]\n"
    )
    cache = tmp_path / "cache"
    server = KnowledgeIndex(cache)
    server._db.execute("PRAGMA busy_timeout = 1500")
    command = [sys.executable, "-c", "from gateway.cli import main; main()", "index"]
    writer = subprocess.Popen(
        [*command, "--manifests", str(root), "--cache", str(cache)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        searched = 0
        while writer.poll() is None:  # a new file each time: each search writes
            (mine := tmp_path / f"mine{searched}.md").write_text(f"# Mine\n\nzebra{searched}\n")
            assert server.search([mine], f"zebra{searched}", 1)[0].location == "Mine"
            searched += 1
        assert writer.returncode == 0
        assert server.search([root / "docs" / "big.md"], "w39999x5", 1)
    finally:
        server.close()
        if writer.poll() is None:
            writer.kill()
            writer.wait()


def test_collecting_passages_twice_at_once_never_deletes_newer_ones(tmp_path: Path) -> None:
    """Two processes deleting the same dropped passages at once: the slower one's list of
    rows, read before the other deleted them and new passages took their row ids, does
    not delete those new passages."""
    cache = tmp_path / "cache"
    one = KnowledgeIndex(cache, keep_orphans=0)
    other = KnowledgeIndex(cache)
    for n in range(1, 4):
        (tmp_path / f"rev{n}").mkdir()
    (old := tmp_path / "rev1" / "old.md").write_text("# Old\n\nancient words.\n")
    one.index([old])
    old.unlink()
    (tmp_path / "rev2" / "empty.md").write_text("")
    one.index([tmp_path / "rev2" / "empty.md"])  # old.md's content: orphaned
    (new := tmp_path / "new.md").write_text("# New\n\nfresh words.\n")
    statements: list[str] = []

    def meanwhile(statement: str) -> None:
        if not statement.startswith(("--", "PRAGMA busy_timeout")):  # FTS5's own, polling
            statements.append(statement)
        elif statement == "PRAGMA busy_timeout = 0" and statements[-1].startswith(
            "SELECT rowid FROM passages"
        ):  # `one` holds the rows to delete and is about to take the write lock
            other._collect()
            assert other.index([new]).passages == 1

    one._db.set_trace_callback(meanwhile)
    (tmp_path / "rev3" / "empty.md").write_text("")
    one.index([tmp_path / "rev3" / "empty.md"])  # drops old.md's content and its passages
    assert any(s.startswith("SELECT rowid FROM passages") for s in statements)
    one._db.set_trace_callback(None)
    hits = other.search([new], "fresh", 1)
    assert hits and hits[0].location == "New", "the stale deletion took the new passages"
    one.close()
    other.close()
