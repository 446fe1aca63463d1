"""What a zygote without Landlock covers with mounts (``_masks.masked_paths``)."""

from __future__ import annotations

from pathlib import Path

from gateway.sandbox._masks import masked_paths
from gateway.sandbox.protocol import FsPolicy


def test_the_paths_landlock_keeps_out_are_masked_and_code_and_databases_are_not(
    tmp_path: Path,
) -> None:
    """Below the gateway root every entry holding nothing calls read is masked (``.env``,
    a private folder), code, manifests, a sql action's database folder and the calls'
    directories are not, except the thread store in that folder; a store outside the root
    is masked with the SQLite siblings it has; a symbolic link is not (its target would
    be); nothing missing is listed."""
    root, outside = tmp_path / "gw", tmp_path / "store"
    for folder in ("actions/sub", "manifests", "data", "private", "tmp/gateway-sandbox-x"):
        (root / folder).mkdir(parents=True)
    outside.mkdir()
    for file in (".env", "private/notes.txt", "top.py", "data/shop.db", "data/threads.db"):
        (root / file).write_text("x")
    for file in ("threads.db", "threads.db-wal"):
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
    masked = masked_paths(policy, str(root / "tmp" / "gateway-sandbox-x"), None)
    assert masked == [
        str(root / ".env"),
        str(root / "data" / "threads.db"),
        str(root / "private"),
        str(outside / "threads.db"),
        str(outside / "threads.db-wal"),
    ]


def test_a_database_folder_holding_the_gateway_root_leaves_its_entries_unmasked(
    tmp_path: Path,
) -> None:
    """A sql action whose database sits in the gateway root's own folder reads that
    folder: only the protected files in it (``.env``) are masked, not its other entries."""
    (tmp_path / "shop.db").write_text("x")
    (tmp_path / ".env").write_text("x")
    (tmp_path / "other").mkdir()
    policy = FsPolicy(
        list_only=[str(tmp_path)],
        protected=[str(tmp_path), str(tmp_path / ".env")],
        databases=[str(tmp_path)],
    )
    assert masked_paths(policy, "/nonexistent-tmp", None) == [str(tmp_path / ".env")]
