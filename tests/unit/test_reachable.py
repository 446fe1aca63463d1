"""``gateway._reachable``: whether the sandbox's other uid can enter a checkout."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from gateway._reachable import first_unreachable, main


def test_a_closed_folder_on_the_way_is_named() -> None:
    """The first folder others cannot enter is reported; opening it clears the path."""
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # /tmp itself is enterable by anyone
    try:
        inner = base / "outer" / "inner"
        inner.mkdir(parents=True)
        for folder in (base, base / "outer", inner):
            folder.chmod(0o755)
        assert first_unreachable(inner) is None
        (base / "outer").chmod(0o700)
        assert first_unreachable(inner) == base / "outer"
        assert main([str(inner)]) == 1
    finally:
        shutil.rmtree(base)


def test_an_unreadable_file_is_unreachable(tmp_path: Path) -> None:
    """A file others cannot read is itself the blocker; the command exits 1."""
    secret = tmp_path / "db.sqlite3"
    secret.write_text("x")
    secret.chmod(0o600)
    assert first_unreachable(secret) is not None
    assert main([str(secret)]) == 1
    assert main(["/"]) == 0
