"""The ``file_search`` index: SQLite FTS5 with BM25 ranking over an assistant's files.

Files are split into passages (``_split``) and stored by *content hash*, so a
file is parsed once per content: an unchanged file (same path, mtime and size)
is not even read again, and the same content under a new path (git-sync checks
out every revision into a new directory) is found by its hash and not
re-parsed. Searching first brings the named files up to date, so an edited
knowledge file is searched as it is now, without a reload.

The index lives in memory (``cache_dir=None``) or in
``cache_dir/knowledge.vN.sqlite3``, N its schema version (shared by restarts
and by ``gateway index``): gateways of other versions sharing the directory (a
rolling upgrade) keep their own file, and one no process uses is removed
(``_versions``).
One connection, guarded by a lock, makes it safe to call from worker threads
(the sandbox runner calls ``search`` through ``asyncio.to_thread``); parsing
happens outside the lock, once per content however many calls reach a new
file together. Several processes may share the cache file (the server and
``gateway index``): every write is a ``BEGIN IMMEDIATE`` transaction (a
file's path is recorded with its content, never one without the other), and
files that no longer exist (old git-sync revisions) are pruned, and a day
later (``keep_orphans``) the content only they held. Passages are stored by
*generation* (a new one each time content is parsed), written ``_BATCH`` a
transaction with a pause between (``_io.PAUSE``): a file of 20,000 passages
never holds the write lock for more than one batch, so another process's
search that must write (a file new to it) waits a batch, not the whole file.
Content points to its generation only once all of it is written (one
transaction, with the file's path); the generations nothing points to any
more (content re-parsed or orphaned, a writer that died) are listed in
``gens`` and deleted in batches too (``_collect``).

Files are read once, through one descriptor, and parsed from those bytes
(what is hashed is what is indexed). Every read is capped: a file over
``max_file_bytes``, or past ``max_total_bytes`` with the files before it in
the same call, is not read at all (logged ``knowledge_file_too_large``,
counted in ``too_large``, searched as missing): validation refuses such a set,
but the last good set keeps serving while the file on disk has grown. PDFs
are read in a child process with time, memory, page and text limits
(``_pdf``, given per call as ``pdf_limits``); at most two files are parsed at once.
A parse failure is kept with its content, and how it failed decides when it is
tried again (``_failures``): a broken PDF never (until its content changes), a
PDF over pages, text or memory when called with higher limits in that
respect, one stopped by time or killed after a back-off (10 minutes,
doubling to a day) or when called with a longer timeout or more memory. So a
PDF that timed out once on a busy machine is indexed later, and a real bomb
costs one timeout per back-off, not one per search. Only regular files are read (a named
pipe would block forever), and with ``within`` only files whose real path is
inside that directory: a knowledge file replaced after validation by a
symlink to ``/etc/shadow`` or ``/proc/self/environ`` is searched as missing, and so
is one swapped for a symlink loop (``gateway._files.resolved`` never raises).

User queries never reach FTS5 syntax: they are cut into word tokens, each
quoted, joined with OR, so no query string can raise a syntax error.

Imports: ``gateway._files``, ``gateway.knowledge._failures``, ``_io``, ``_query``, ``_split``
and ``_versions``,
msgspec, structlog and the standard library.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec
import structlog

from gateway._files import private_file, resolved
from gateway.knowledge._failures import (
    RETRY_AFTER,
    Failure,
    Parsed,
    columns,
    failure_after,
    failure_of,
)
from gateway.knowledge._io import PAUSE, enable_wal, read_regular, write_transaction
from gateway.knowledge._pdf import ParseLimitError, PdfLimits
from gateway.knowledge._query import build_query, labels
from gateway.knowledge._split import split_data
from gateway.knowledge._versions import SIDECARS, cache_file, hold, remove_unused

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_MAX_FILE_MB",
    "DEFAULT_MAX_TOTAL_MB",
    "IndexStats",
    "KnowledgeIndex",
    "Passage",
    "PdfLimits",
    "build_query",
    "cache_dir_for",
]

DEFAULT_MAX_FILE_MB = 32
"""Largest knowledge file read, in MiB (``file_search.max_file_size_mb`` defaults to it)."""
DEFAULT_MAX_TOTAL_MB = 256
"""Largest total of one call's files, in MiB (``file_search.max_total_size_mb``'s default)."""
_MB = 1 << 20
_PARSE_SLOTS = 2  # files parsed at once: each may hold its text (or a PDF child) in memory
_BATCH = 500  # passages written or deleted per transaction: the write lock is held briefly
_ABANDONED = 3600.0  # seconds after which passages still being written were left by a crash

DEFAULT_CACHE_DIR = Path("var/knowledge")
"""Where the index lives with the default thread store (``sqlite:///var/gateway.db``)."""


def cache_dir_for(database_url: str) -> Path | None:
    """The index directory for a thread-store URL: ``knowledge/`` next to an SQLite file.

    ``None`` (keep the index in memory) for other stores: replicas sharing
    PostgreSQL have no shared disk, and each indexes lazily on first search.
    """
    prefix = "sqlite:///"
    if not database_url.startswith(prefix):
        return None
    db = Path(database_url[len(prefix) :])
    return (db if db.is_absolute() else Path.cwd() / db).parent / "knowledge"


_SCHEMA_VERSION = 5  # 2: contents.orphaned; 3: contents.over, tried, retry_at, attempts;
# 4: passages by generation (contents.gen, table gens), written in batches;
# 5: a markdown heading without text is a passage (files cached by 4 lacked them)
# Each version has its own file (``_versions``): bump it for any change of the tables,
# and the file name in README's "Knowledge files (file_search)" with it.
log = structlog.get_logger("gateway.knowledge")


class Passage(msgspec.Struct, frozen=True, kw_only=True):
    """One search hit.

    Attributes:
        source: the file, relative to ``root`` when given to ``search`` (else its name).
        text: the passage text.
        score: BM25 relevance, higher is better.
        location: where in the file: heading trail, ``page N`` or ``lines A-B``.
    """

    source: str
    text: str
    score: float
    location: str


class IndexStats(msgspec.Struct, kw_only=True):
    """What ``index`` did: files seen, parsed, reused by hash, unchanged, missing, passages.

    Each file counts in one of ``parsed``, ``reused``, ``unchanged``, ``missing``,
    ``failed``, ``failed_earlier`` or ``too_large``. ``failed`` counts files parsed
    by this call that failed; ``failed_earlier`` files whose content failed to parse
    before and is not due to be parsed again (not read: searched as empty, like a
    failed one; ``KnowledgeIndex.failures`` says why). ``too_large`` counts files
    over a size cap (not read, searched as missing); ``size`` is the bytes of the
    files that were within the caps. ``unsearchable`` says why each file counted in
    ``missing`` or ``too_large`` is (by its resolved path): not found, outside the
    root, not a regular file, over a cap, or unreadable (``cannot be read:
    Permission denied``).
    """

    files: int = 0
    parsed: int = 0
    reused: int = 0
    unchanged: int = 0
    missing: int = 0
    failed: int = 0
    failed_earlier: int = 0
    too_large: int = 0
    passages: int = 0
    size: int = 0
    unsearchable: dict[str, str] = msgspec.field(default_factory=dict)


class KnowledgeIndex:
    """A full-text index over knowledge files, refreshed lazily by mtime, size and hash.

    Args:
        cache_dir: directory for ``knowledge.vN.sqlite3`` (N: the schema version);
            ``None`` keeps the index in memory, as does a directory that cannot be
            written (logged, and said in ``cache_error``). A cache file that is not
            an SQLite database or is malformed is deleted and built afresh: it holds
            only derived data. Other versions' files there that no process uses
            are removed, when opened and at each prune.
        keep_orphans: seconds content no existing file uses any more is kept before
            it is dropped (a day: an index built at another path is still reused).
        pdf_limits: what parsing one PDF may cost (time, memory, pages, text) when a
            call gives none; a PDF over them fails to parse, like a corrupt one,
            with the limit in its error.
        retry_after: seconds before a PDF stopped by time or killed is parsed
            again (doubling with each failure in a row, up to a day).
    """

    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        keep_orphans: float = 86400.0,
        pdf_limits: PdfLimits | None = None,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        self._keep_orphans = keep_orphans
        self._retry_after = retry_after
        self._pdf_limits = pdf_limits if pdf_limits is not None else PdfLimits()
        self._parse_slots = threading.BoundedSemaphore(_PARSE_SLOTS)
        self._lock = threading.Lock()
        self.cache_error: str | None = None
        """Why ``cache_dir`` is not used (the index is in memory), or None."""
        self.file: Path | None = None
        """The cache file the index is in (None: in memory)."""
        self._cache_dir: Path | None = None
        self._held: int | None = None  # the lock saying this process uses its version
        self._db = self._open(cache_dir)
        # path -> (mtime_ns, size, sha) as indexed; saves a query per file per search.
        self._seen: dict[str, tuple[int, int, str]] = {}
        # sha -> how it failed to parse, for the contents of files in ``_seen``.
        self._failures: dict[str, Failure] = {}
        # One parse per content at a time: calls reaching the same new file together
        # wait for the first one's passages instead of each parsing it (memory, CPU).
        self._parsing: dict[str, threading.Lock] = {}
        self._parsing_guard = threading.Lock()
        # Folders files were recorded from; a new one (a git-sync revision) prunes the cache.
        self._folders: set[str] = set()

    def _open(self, cache_dir: Path | None) -> sqlite3.Connection:
        if cache_dir is not None:
            try:
                db = self._open_file(cache_dir)
            except OSError as exc:  # a read-only image: still serve, from memory
                self._unusable(cache_dir, exc)
            else:
                if db is not None:
                    self.file, self._cache_dir = cache_file(cache_dir, _SCHEMA_VERSION), cache_dir
                    self._remove_unused()
                    return db
            if self._held is not None:
                os.close(self._held)
                self._held = None
        db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._setup(db)
        return db

    def _open_file(self, cache_dir: Path) -> sqlite3.Connection | None:
        """This version's cache file in ``cache_dir``, held (None: unusable, said)."""
        self._held = hold(cache_dir, _SCHEMA_VERSION)
        file = cache_file(cache_dir, _SCHEMA_VERSION)
        try:
            return self._connect(file)
        except sqlite3.DatabaseError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                self._unusable(cache_dir, exc)
            else:
                # Only derived data is lost: start the cache afresh rather than
                # index in memory at every start until someone deletes the file.
                log.warning("knowledge_cache_rebuilt", dir=str(cache_dir), error=str(exc))
                try:
                    for stale in (file, *(file.with_name(file.name + e) for e in SIDECARS)):
                        stale.unlink(missing_ok=True)
                    return self._connect(file)
                except (OSError, sqlite3.Error) as again:
                    self._unusable(cache_dir, again)
        return None

    def _remove_unused(self) -> None:
        """Remove the cache files of other schema versions no process uses (logged)."""
        if self._cache_dir is not None:
            for version in remove_unused(self._cache_dir, _SCHEMA_VERSION):
                log.info(
                    "knowledge_cache_removed",
                    file=str(cache_file(self._cache_dir, version)),
                    version=version,
                )

    def _unusable(self, cache_dir: Path, exc: BaseException) -> None:
        log.warning("knowledge_cache_unusable", dir=str(cache_dir), error=str(exc))
        self.cache_error = str(exc) or type(exc).__name__

    def _connect(self, file: Path) -> sqlite3.Connection:
        db = sqlite3.connect(private_file(file), check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            enable_wal(db)
            self._setup(db)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _setup(db: sqlite3.Connection) -> None:
        """Create the tables in a new cache (or recreate them, for another schema version:
        only this version uses its file, ``_versions``, so that is one copied by hand).

        In one write transaction: a process opening the same new cache waits for
        it, then sees the current version, and never drops tables another
        process is already indexing into.
        """
        with write_transaction(db):
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version == _SCHEMA_VERSION:
                return
            for table in ("files", "contents", "passages", "gens"):
                db.execute(f"DROP TABLE IF EXISTS {table}")
            db.execute(
                "CREATE TABLE files (path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, "
                "size INTEGER NOT NULL, sha TEXT NOT NULL)"
            )
            db.execute(
                "CREATE TABLE contents (sha TEXT PRIMARY KEY, gen TEXT, passages INTEGER NOT NULL, "
                "error TEXT, orphaned REAL, over TEXT, tried TEXT, retry_at REAL, "
                "attempts INTEGER NOT NULL DEFAULT 0)"
            )
            db.execute("CREATE INDEX contents_gen ON contents (gen)")
            # Generations of passages no content points to: being written (since the
            # write began) or to delete (since 0).
            db.execute("CREATE TABLE gens (gen TEXT PRIMARY KEY, since REAL NOT NULL)")
            db.execute(
                "CREATE VIRTUAL TABLE passages USING fts5(gen UNINDEXED, location UNINDEXED, "
                "heading, text, tokenize = 'porter unicode61 remove_diacritics 2')"
            )
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database connection (and say this process no longer uses its file)."""
        with self._lock:
            self._db.close()
            if self._held is not None:
                os.close(self._held)
                self._held = None

    # -- indexing -----------------------------------------------------------

    def index(
        self,
        files: Iterable[Path],
        *,
        within: Path | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_MB * _MB,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_MB * _MB,
        pdf_limits: PdfLimits | None = None,
    ) -> IndexStats:
        """Bring ``files`` up to date in the index (parse only new content).

        Missing or unreadable files (and, with ``within``, files whose real path
        is outside that directory) are counted as missing and searched as empty;
        files over ``max_file_bytes``, or past ``max_total_bytes`` with the files
        before them, are not read (counted in ``too_large``); a file that cannot be
        parsed is logged; nothing raises for a bad file. PDFs are parsed within
        ``pdf_limits`` (default: the index's).
        """
        stats = IndexStats()
        caps = (max_file_bytes, max_total_bytes)
        inside = resolved(within) if within is not None else None
        limits = pdf_limits if pdf_limits is not None else self._pdf_limits
        for file in files:
            stats.files += 1
            self._refresh(resolved(file), stats, inside, caps, limits)
        return stats

    def _refresh(
        self,
        path: Path,
        stats: IndexStats,
        within: Path | None = None,
        caps: tuple[int, int] = (DEFAULT_MAX_FILE_MB * _MB, DEFAULT_MAX_TOTAL_MB * _MB),
        limits: PdfLimits | None = None,
    ) -> str | None:
        """Make sure ``path`` is indexed as it is now; return its content hash (None: missing).

        ``path`` is resolved; ``within`` (resolved) confines it; ``caps`` is (bytes
        per file, bytes for all the files of this call: ``stats.size`` counts them).
        An unchanged file whose content failed to parse is read and parsed again
        when that failure is due (``Failure.due``) within ``limits``.
        """
        limits = limits if limits is not None else self._pdf_limits
        key = str(path)
        st = self._stat(path, stats, within)
        if st is None or self._too_large(key, st.st_size, stats, caps):
            return None
        seen = self._seen.get(key)
        if seen is None:
            with self._lock:
                row = self._db.execute(
                    "SELECT f.mtime_ns, f.size, f.sha, c.error, c.over, c.tried, c.retry_at, "
                    "c.attempts FROM files f LEFT JOIN contents c ON c.sha = f.sha "
                    "WHERE f.path = ?",
                    (key,),
                ).fetchone()
            if row is not None:
                seen = (row[0], row[1], row[2])
                self._seen[key] = seen
                self._remember(row[2], failure_of(row[3:]))
        if seen is not None and seen[0] == st.st_mtime_ns and seen[1] == st.st_size:
            failure = self._failures.get(seen[2])
            if failure is None or not failure.due(limits, time.time()):
                self._count_kept(seen[2], stats, "unchanged")
                stats.size += st.st_size
                return seen[2]
        try:
            data = read_regular(path, caps[0])
        except OSError as exc:  # unreadable: said, else it would be searched as empty unseen
            why = exc.strerror or type(exc).__name__
            log.warning("knowledge_file_unreadable", file=key, error=why)
            stats.missing += 1
            stats.unsearchable[key] = f"cannot be read: {why}"
            return None
        if self._too_large(key, len(data), stats, caps):  # grew since the stat
            return None
        sha = hashlib.sha256(data).hexdigest()
        replaced = seen[2] if seen is not None and seen[2] != sha else None
        parsed: Parsed | None = None
        with self._parsing_guard:
            parsing = self._parsing.setdefault(sha, threading.Lock())
        with parsing:
            while True:
                gen = self._write_passages(parsed) if parsed is not None else None
                with self._lock:
                    if self._record(key, st, sha, parsed, gen, replaced, limits):
                        break
                # New content, or a failure due again: parse outside the lock.
                parsed = self._parse(path, data, stats, limits)
        self._collect()
        with self._parsing_guard:
            if not parsing.locked():  # a waiter keeps its own reference
                self._parsing.pop(sha, None)
        if parsed is None:  # the content was there: passages, or a failure kept
            self._count_kept(sha, stats, "reused")
        stats.size += st.st_size
        self._seen[key] = (st.st_mtime_ns, st.st_size, sha)
        if str(path.parent) not in self._folders:
            self._folders.add(str(path.parent))
            self._prune()
        return sha

    def _count_kept(self, sha: str, stats: IndexStats, counter: str) -> None:
        """Count a file whose stored content ``sha`` was kept, not parsed: in ``counter``
        (``unchanged``, ``reused``), or in ``failed_earlier`` when that content failed to
        parse (still unsearchable: never reported as if it were indexed)."""
        if sha in self._failures:
            stats.failed_earlier += 1
        else:
            setattr(stats, counter, getattr(stats, counter) + 1)

    @staticmethod
    def _stat(path: Path, stats: IndexStats, within: Path | None) -> os.stat_result | None:
        """The ``stat`` of a regular file inside ``within``, else None (counted as missing)."""
        if within is not None and not path.is_relative_to(within):
            log.warning("knowledge_file_outside_root", file=str(path), root=str(within))
            stats.missing += 1
            stats.unsearchable[str(path)] = f"its real path is outside {within}"
            return None
        try:
            st = path.stat()
        except OSError as exc:
            stats.missing += 1
            stats.unsearchable[str(path)] = exc.strerror or "not found"
            return None
        if not stat.S_ISREG(st.st_mode):
            log.warning("knowledge_file_not_regular", file=str(path))
            stats.missing += 1
            stats.unsearchable[str(path)] = "not a regular file (a FIFO, device or directory)"
            return None
        return st

    @staticmethod
    def _too_large(key: str, size: int, stats: IndexStats, caps: tuple[int, int]) -> bool:
        """Whether a file of ``size`` bytes is over a cap (then logged and counted)."""
        max_file, max_total = caps
        if size > max_file:
            log.warning("knowledge_file_too_large", file=key, size=size, limit=max_file)
            stats.unsearchable[key] = f"{size} bytes, over the limit of {max_file} bytes"
        elif stats.size + size > max_total:
            log.warning(
                "knowledge_file_too_large", file=key, total=stats.size + size, limit=max_total
            )
            stats.unsearchable[key] = (
                f"the files before it and it add up to {stats.size + size} bytes, "
                f"over the limit of {max_total} bytes"
            )
        else:
            return False
        stats.too_large += 1
        return True

    def _prune(self) -> None:
        """Forget files that no longer exist, and content only they held, after a while.

        git-sync checks every revision out under a new path and deletes the old
        one: without this the cache keeps every revision's paths and every
        version of every edited file. Content left without a file is kept for
        ``keep_orphans`` seconds (an index built at another path, in a container
        build, is reused file by file as each is first searched) and dropped by
        a later prune. Runs when files come from a folder not seen before (so
        about once per revision), stat-ing outside the lock; then removes the
        cache files of other schema versions no process uses any more.
        """
        with self._lock:
            paths = [path for (path,) in self._db.execute("SELECT path FROM files")]
        gone = [path for path in paths if not os.path.lexists(path)]
        now = time.time()
        with self._lock, write_transaction(self._db):
            gone = [path for path in gone if not os.path.lexists(path)]  # back meanwhile?
            self._db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in gone])
            self._db.execute(
                "UPDATE contents SET orphaned = ? WHERE orphaned IS NULL "
                "AND sha NOT IN (SELECT sha FROM files)",
                (now,),
            )
            self._drop_orphans(before=now - self._keep_orphans)
        self._collect()
        for path in gone:
            self._seen.pop(path, None)
        self._remove_unused()  # a rolling upgrade over since this process opened the cache

    def _parse(self, path: Path, data: bytes, stats: IndexStats, limits: PdfLimits) -> Parsed:
        """The passages of ``data`` and the parse error (logged and counted), if any.

        A file over a parse limit is recorded like a corrupt one (no passages, the
        error kept with its content, with the limit: ``Failure`` says when the same
        content is parsed again).
        """
        try:
            with self._parse_slots:
                chunks = split_data(path.name, data, pdf=limits)
        except ParseLimitError as exc:  # our own message: which limit, never file content
            log.warning(
                "knowledge_parse_limit", file=str(path), error=str(exc), transient=exc.transient
            )
            stats.failed += 1
            return Parsed([], f"{type(exc).__name__}: {exc}", exc)
        except Exception as exc:  # a corrupt PDF must not break search for the other files
            log.warning("knowledge_parse_failed", file=str(path), error=f"{type(exc).__name__}")
            stats.failed += 1
            return Parsed([], f"{type(exc).__name__}: {exc}", None)
        stats.parsed += 1
        stats.passages += len(chunks)
        return Parsed(chunks, None, None)

    def _remember(self, sha: str, failure: Failure | None) -> None:
        if failure is None:
            self._failures.pop(sha, None)
        else:
            self._failures[sha] = failure

    def _write_passages(self, parsed: Parsed) -> str | None:
        """Store ``parsed``'s passages under a new generation, ``_BATCH`` a transaction.

        Returns the generation (None: no passages), which nothing searches until
        ``_record`` points content at it: a long file never holds the write lock (or
        this index's lock) for long, so searches of other processes and threads go
        on meanwhile. Listed in ``gens`` while written: a process that dies
        midway leaves passages ``_collect`` removes later.
        """
        if not parsed.chunks:
            return None
        gen = uuid.uuid4().hex
        for start in range(0, len(parsed.chunks), _BATCH):
            batch = parsed.chunks[start : start + _BATCH]
            if start:
                time.sleep(PAUSE)  # the others' turn (searches, gateway index)
            with self._lock, write_transaction(self._db):
                if start == 0:
                    self._db.execute(
                        "INSERT INTO gens (gen, since) VALUES (?, ?)", (gen, time.time())
                    )
                self._db.executemany(
                    "INSERT INTO passages (gen, location, heading, text) VALUES (?, ?, ?, ?)",
                    [(gen, c.location, c.heading, c.text) for c in batch],
                )
        return gen

    def _collect(self) -> None:
        """Delete the passages no content points to (``gens``: replaced, orphaned, or
        left by a writer that died), ``_BATCH`` a transaction."""
        with self._lock:
            due = self._db.execute(
                "SELECT gen FROM gens WHERE since < ?", (time.time() - _ABANDONED,)
            ).fetchall()
        for (gen,) in due:
            with self._lock:
                rowids = [
                    r
                    for (r,) in self._db.execute("SELECT rowid FROM passages WHERE gen = ?", (gen,))
                ]
            for start in range(0, len(rowids), _BATCH):
                if start:
                    time.sleep(PAUSE)
                with self._lock, write_transaction(self._db):
                    # gen checked again: another collector may have deleted these rows
                    # meanwhile, and FTS5 gives a new row the rowid after the largest left.
                    self._db.execute(
                        "DELETE FROM passages WHERE rowid IN (SELECT value FROM json_each(?)) "
                        "AND gen = ?",
                        (json.dumps(rowids[start : start + _BATCH]), gen),
                    )
            with self._lock, write_transaction(self._db):
                self._db.execute("DELETE FROM gens WHERE gen = ?", (gen,))

    def _record(
        self,
        key: str,
        st: os.stat_result,
        sha: str,
        parsed: Parsed | None,
        gen: str | None,
        replaced: str | None,
        limits: PdfLimits,
    ) -> bool:
        """Point ``key`` at content ``sha`` in one transaction (caller holds the lock).

        ``parsed`` is stored as that content first (its passages already written as
        generation ``gen``; the content's earlier ones are collected); without it the content must
        already be there, else nothing is written and this returns False (the
        caller parses). One transaction, so another thread or process dropping
        orphans never sees the content without its file, and the file is never
        recorded without its content. ``replaced``, the file's previous content,
        is dropped when no file points to it any more. Stored content that failed
        to parse and is due again within ``limits`` counts as absent (False); a
        new limit failure is merged into the content's earlier one.
        """
        now = time.time()
        with write_transaction(self._db):
            row = self._db.execute(
                "SELECT c.error, c.over, c.tried, c.retry_at, c.attempts, c.gen FROM contents c "
                "WHERE c.sha = ?",
                (sha,),
            ).fetchone()
            before = failure_of(row[:5]) if row is not None else None
            if parsed is not None:
                failure = failure_after(parsed, before, now, self._retry_after)
                self._retire(row[5] if row is not None else None)
                if gen is not None:
                    self._db.execute("DELETE FROM gens WHERE gen = ?", (gen,))
                self._db.execute(
                    "INSERT OR REPLACE INTO contents (sha, gen, passages, error, over, tried, "
                    "retry_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (sha, gen, len(parsed.chunks), parsed.error, *columns(failure)),
                )
            elif row is None or (before is not None and before.due(limits, now)):
                return False
            else:
                failure = before
                self._db.execute("UPDATE contents SET orphaned = NULL WHERE sha = ?", (sha,))
            self._db.execute(
                "INSERT OR REPLACE INTO files (path, mtime_ns, size, sha) VALUES (?, ?, ?, ?)",
                (key, st.st_mtime_ns, st.st_size, sha),
            )
            if replaced is not None:
                self._drop_orphans(only=replaced)
        self._remember(sha, failure)
        return True

    def _drop_orphans(self, *, before: float | None = None, only: str | None = None) -> None:
        """Forget content no file points to any more (caller holds the lock).

        With ``before``, only content found orphaned (by ``_prune``) before that
        time; with ``only``, only that content (a file's previous one, after an edit).
        """
        orphans = self._db.execute(
            "SELECT sha, gen FROM contents WHERE sha NOT IN (SELECT sha FROM files) "
            "AND (?1 IS NULL OR orphaned < ?1) AND (?2 IS NULL OR sha = ?2)",
            (before, only),
        ).fetchall()
        for sha, gen in orphans:
            self._retire(gen)
            self._db.execute("DELETE FROM contents WHERE sha = ?", (sha,))

    def _retire(self, gen: str | None) -> None:
        """Mark generation ``gen``'s passages for ``_collect`` (caller's transaction):
        deleting them here would hold the write lock as long as writing them did."""
        if gen is not None:
            self._db.execute("INSERT OR REPLACE INTO gens (gen, since) VALUES (?, 0)", (gen,))

    def passages(self, files: Iterable[Path]) -> int:
        """How many passages the current content of ``files`` has in the index (no refresh)."""
        total = 0
        with self._lock:
            for file in files:
                row = self._db.execute(
                    "SELECT c.passages FROM files f JOIN contents c ON c.sha = f.sha "
                    "WHERE f.path = ?",
                    (str(resolved(file)),),
                ).fetchone()
                total += row[0] if row else 0
        return total

    def failures(self, files: Iterable[Path]) -> dict[Path, str]:
        """Why the current content of each of ``files`` that failed to parse has no passages.

        What was recorded when it failed (``"PdfReadError: EOF marker not found"``,
        or the limit it went over), for the files the index holds with failed
        content (no refresh); files that parsed, or that it does not hold, are left out.
        """
        found: dict[Path, str] = {}
        with self._lock:
            for file in files:
                row = self._db.execute(
                    "SELECT c.error FROM files f JOIN contents c ON c.sha = f.sha "
                    "WHERE f.path = ? AND c.error IS NOT NULL",
                    (str(resolved(file)),),
                ).fetchone()
                if row is not None:
                    found[file] = str(row[0])
        return found

    # -- searching ----------------------------------------------------------

    def search(
        self,
        files: Sequence[Path],
        query: str,
        max_results: int,
        *,
        root: Path | None = None,
        within: Path | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_MB * _MB,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_MB * _MB,
        pdf_limits: PdfLimits | None = None,
    ) -> list[Passage]:
        """The best passages for ``query`` among ``files``, best first.

        Args:
            files: the files to search (absolute, or relative to the working directory).
            query: free text from the model or a user; any string is safe.
            max_results: at most this many passages.
            root: name sources relative to this directory (the manifests root);
                without it a source is the file name, with as many parent
                directories as needed to tell the given files apart.
            within: search only files whose real path (symlinks resolved) is
                inside this directory; the others are searched as missing.
            max_file_bytes: files larger than this are not read (searched as missing).
            max_total_bytes: once the files so far add up to this, the next ones
                are not read either.
            pdf_limits: what parsing one PDF may cost (default: the index's).

        Returns:
            Passages ranked by BM25 (an empty list when nothing matches).
        """
        match = build_query(query)
        if not match or max_results <= 0:
            return []
        names: dict[str, str] = {}
        stats = IndexStats()
        named = labels(files, root)
        inside = resolved(within) if within is not None else None
        caps = (max_file_bytes, max_total_bytes)
        limits = pdf_limits if pdf_limits is not None else self._pdf_limits
        for file in files:
            sha = self._refresh(resolved(file), stats, inside, caps, limits)
            if sha is not None and sha not in names:
                names[sha] = named[file]
        if not names:
            return []
        # One statement, one snapshot: content re-pointed to a new generation meanwhile
        # is seen either before or after.
        sql = (
            "SELECT (SELECT sha FROM contents WHERE gen = passages.gen), location, text, "
            "bm25(passages, 0.0, 0.0, 2.0, 1.0) AS score FROM passages WHERE passages MATCH ? "
            "AND gen IN (SELECT gen FROM contents WHERE sha IN (SELECT value FROM json_each(?))) "
            "ORDER BY score LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, (match, json.dumps(list(names)), max_results)).fetchall()
        return [
            Passage(source=names[sha], text=text, score=round(-rank, 4), location=location)
            for sha, location, text, rank in rows
        ]
