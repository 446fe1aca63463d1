"""What a zygote without Landlock covers with mounts (``_masks.plan``)."""

from __future__ import annotations

from pathlib import Path

from gateway.sandbox._masks import plan
from gateway.sandbox.protocol import FsPolicy


def _below(paths: list[str], top: Path) -> list[str]:
    return [p for p in paths if p.startswith(f"{top}/")]


def test_folders_holding_protected_paths_keep_only_what_calls_may_read(
    tmp_path: Path,
) -> None:
    """The gateway root keeps only the entries leading to code, manifests, a sql action's
    database folder and the calls' directories (and its symbolic links: their targets are
    judged as themselves), one level down where a kept path is deeper; the thread store's
    folder keeps only what leads there too (none of it here: its knowledge index and
    backups, which it kept before, go with the store); a store in a sql action's
    database folder is covered on its own path."""
    root, outside = tmp_path / "gw", tmp_path / "store"
    for folder in ("actions/sub", "actions/other", "manifests", "data", "private", "tmp/x"):
        (root / folder).mkdir(parents=True)
    outside.mkdir()
    for file in (".env", "private/notes.txt", "top.py", "data/shop.db", "data/threads.db"):
        (root / file).write_text("x")
    for file in ("threads.db", "threads.db-wal", "README"):
        (outside / file).write_text("x")
    (root / "link").symlink_to("/etc")
    policy = FsPolicy(
        read=[str(root / "actions" / "sub"), str(root / "manifests"), str(root / "top.py")],
        list_only=[str(root)],
        protected=[
            str(root),
            str(root / ".env"),
            str(root / "data" / "threads.db"),
            str(outside / "threads.db"),
        ],
        databases=[str(root / "data")],
    )
    cover = plan(policy, str(root / "tmp" / "x"), None)
    assert cover.allowed == {
        str(root): ["actions", "data", "link", "manifests", "tmp", "top.py"],
        str(root / "actions"): ["sub"],
        str(root / "tmp"): ["x"],
        str(outside): [],
    }
    # A store in a sql action's folder: SQLite creates its journal there, so no allow-list.
    assert _below(cover.denied, tmp_path) == [str(root / "data" / "threads.db")]
    assert _below(cover.by_path, tmp_path) == [str(root / "data" / "threads.db")]


def test_a_database_folder_holding_the_gateway_root_covers_its_protected_files_alone(
    tmp_path: Path,
) -> None:
    """A sql action whose database sits in the gateway root's own folder uses that folder
    whole (SQLite makes its journal there, which a read-only allow-list would refuse):
    only the protected files in it (``.env``) are covered, each on its own path."""
    (tmp_path / "shop.db").write_text("x")
    (tmp_path / ".env").write_text("x")
    (tmp_path / "other").mkdir()
    policy = FsPolicy(
        list_only=[str(tmp_path)],
        protected=[str(tmp_path), str(tmp_path / ".env")],
        databases=[str(tmp_path)],
    )
    cover = plan(policy, "/nonexistent-tmp", None)
    assert cover.allowed == {}
    assert _below(cover.denied, tmp_path) == [str(tmp_path / ".env")]
    assert _below(cover.by_path, tmp_path) == [str(tmp_path / ".env")]


def test_a_kept_path_past_the_depth_bound_is_denied_not_left_readable(tmp_path: Path) -> None:
    """Past 16 levels the allow-lists stop: that folder is covered whole (its kept path
    with it), where the old walk gave up and left every sibling on the way readable."""
    deep = tmp_path.joinpath(*(f"d{i}" for i in range(20)))
    deep.mkdir(parents=True)
    (tmp_path / "d0" / "d1" / "secret").write_text("x")
    (deep.parents[2] / "secret").write_text("x")  # 18 levels down
    policy = FsPolicy(read=[str(deep)], list_only=[str(tmp_path)], protected=[str(tmp_path)])
    cover = plan(policy, "/nonexistent-tmp", None)
    denied = _below(cover.denied, tmp_path)
    assert len(denied) == 1
    assert str(deep).startswith(denied[0] + "/")
    assert cover.allowed[str(tmp_path / "d0")] == ["d1"]
    assert cover.allowed[str(tmp_path / "d0" / "d1")] == ["d2"]  # not "secret"
    assert all(not p.startswith(denied[0] + "/") for p in cover.allowed)
    assert str(deep.parents[2] / "secret").startswith(denied[0] + "/")


def test_a_crowded_store_folder_is_covered_whole_without_a_mount_per_entry(
    tmp_path: Path,
) -> None:
    """A store folder of many entries (backups) is covered by one empty tmpfs: nothing in
    it leads to what calls read, so no entry is bound back (a mount each, per zygote)."""
    store = tmp_path / "threads.db"
    for file in (store, tmp_path / "threads.db-wal"):
        file.write_text("x")
    for i in range(2000):
        (tmp_path / f"backup-{i}").write_text("x")
    policy = FsPolicy(protected=[str(store)])
    cover = plan(policy, "/nonexistent-tmp", None)
    assert cover.allowed[str(tmp_path)] == []
    assert _below(cover.by_path, tmp_path) == []


def test_a_protected_file_in_a_system_folder_is_covered_on_its_own_path(tmp_path: Path) -> None:
    """``.env`` linked into /etc (or a store there) gave /etc an allow-list, pinning
    ``resolv.conf`` and ``hosts`` to their content at the start: a system folder's
    protected files are covered one by one."""
    policy = FsPolicy(protected=["/etc/hostname"])
    cover = plan(policy, "/nonexistent-tmp", None)
    assert "/etc" not in cover.allowed
    assert "/etc/hostname" in cover.by_path


def test_the_folders_of_links_to_the_gateway_root_keep_only_the_live_revision(
    tmp_path: Path,
) -> None:
    """git-sync's layout: the gateway root is ``current -> revs/r1``. Its masks went on
    ``revs/r1`` alone, so a switch of ``current`` to a new revision showed that revision
    (its ``.env``) and the repository beside it to a running zygote's calls. The link's
    folder keeps only the link (a copy, pointing where it did) and the live revision."""
    base = tmp_path / "sync"
    r1 = base / "revs" / "r1"
    (r1 / "actions").mkdir(parents=True)
    (r1 / ".env").write_text("x")
    (base / "revs" / "r0").mkdir()
    (base / ".git").mkdir()
    (base / "current").symlink_to("revs/r1")
    policy = FsPolicy(
        read=[str(r1 / "actions")],
        list_only=[str(r1)],
        protected=[str(r1), str(r1 / ".env")],
        links=[str(base / "current")],
    )
    cover = plan(policy, "/nonexistent-tmp", None)
    assert cover.allowed[str(base)] == ["current", "revs"]
    assert cover.allowed[str(base / "revs")] == ["r1"]
    assert cover.allowed[str(r1)] == ["actions"]
