"""open_regular: user files are read only if regular, and opening one never blocks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway._files import NotRegularFile, open_regular


def test_a_fifo_with_no_writer_is_refused_at_once(tmp_path: Path) -> None:
    """A FIFO no one writes to is refused (a plain open would wait for a writer forever)."""
    os.mkfifo(fifo := tmp_path / "k.md")
    with pytest.raises(NotRegularFile, match="not a regular file"):
        open_regular(fifo)


@pytest.mark.parametrize("target", ["/dev/zero", "."])
def test_a_symlink_to_a_device_or_a_directory_is_refused(tmp_path: Path, target: str) -> None:
    """A symlink to /dev/zero (endless bytes) or to a directory is not read."""
    (link := tmp_path / "k.md").symlink_to(tmp_path if target == "." else Path(target))
    with pytest.raises(NotRegularFile):
        open_regular(link)


def test_a_regular_file_is_read_and_a_missing_one_is_an_os_error(tmp_path: Path) -> None:
    """A regular file (through a symlink too) reads as usual; a missing one raises OSError."""
    (real := tmp_path / "real.md").write_bytes(b"# K\n")
    (tmp_path / "link.md").symlink_to(real)
    with open_regular(tmp_path / "link.md") as fh:
        assert fh.read() == b"# K\n"
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "missing.md")
