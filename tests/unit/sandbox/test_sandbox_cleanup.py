"""Opening up a call's locked folders for removal: every folder below, never through a link."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sandbox._cleanup import remove_tree


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_locked_folders_at_any_depth_are_removed(tmp_path: Path) -> None:
    """Folders a call locked (``chmod 0``, no write bit) are removed with what they hold."""
    call = tmp_path / "call"
    deep = call / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    for folder, mode in ((deep, 0o000), (call / "a" / "b", 0o055), (call / "a", 0o500)):
        folder.chmod(mode)
    remove_tree(str(call))
    assert not call.exists()


def test_a_link_to_a_folder_outside_is_left_alone(tmp_path: Path) -> None:
    """A symbolic link in the call's folder to a folder outside it is never chmod-ed or
    emptied through."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept").write_text("x")
    outside.chmod(0o555)
    call = tmp_path / "call"
    call.mkdir()
    (call / "link").symlink_to(outside)
    remove_tree(str(call))
    assert not call.exists()
    assert _mode(outside) == 0o555
    assert (outside / "kept").exists()


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on tmpfs where there is one (removing a folder costs milliseconds on a
    busy disk, microseconds there), else ``tmp_path``."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(dir=shm, prefix="gw-cleanup-test-"))
    try:
        yield folder
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_a_tree_thousands_of_folders_deep_is_removed(fast_dir: Path) -> None:
    """A call nesting 3,000 folders (``mkdir a; cd a`` in a loop, locked at the bottom)
    made ``shutil.rmtree`` raise RecursionError, which ended the zygote and left the
    tree on disk; it is removed, with a bounded number of descriptors."""
    call = fast_dir / "call"
    call.mkdir()
    fd = os.open(call, os.O_RDONLY)
    try:
        for _ in range(3000):
            os.mkdir("a", dir_fd=fd)
            os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
            child = os.open("a", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.chmod(fd, 0)  # noqa: PTH101 - a descriptor, not a path
    finally:
        os.close(fd)
    remove_tree(str(call))
    assert not call.exists()


RACE = """
import os, stat, sys
from gateway.sandbox._cleanup import remove_tree

call, outside = sys.argv[1], sys.argv[2]
victim = os.path.join(call, "locked")
swapped = []

def swap(event, args):
    # At the very moment of the chmod, the folder becomes a link to one outside.
    if event == "os.chmod" and not swapped:
        swapped.append(args[0])
        os.rename(victim, victim + ".moved")
        os.symlink(outside, victim)

sys.addaudithook(swap)
remove_tree(call)
mode = lambda path: oct(stat.S_IMODE(os.lstat(path).st_mode))
print(mode(outside), mode(victim + ".moved"), bool(swapped))
"""


def test_a_folder_swapped_for_a_link_at_the_chmod_is_not_followed(tmp_path: Path) -> None:
    """A folder another call (same uid) swaps for a link to a folder outside, between its
    inspection and its chmod, is opened up by inode: the folder outside keeps its mode (by
    name, it got the locked folder's mode plus ``u+rwx``: 0o777)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o700)
    call = tmp_path / "call"
    (call / "locked").mkdir(parents=True)
    (call / "locked" / "f").write_text("x")  # not empty: it is entered, not just removed
    (call / "locked").chmod(0o077)
    # In a child process: an audit hook cannot be removed from this one.
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RACE), str(call), str(outside)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.stdout.split() == ["0o700", "0o777", "True"], done


def test_a_budget_stops_early_and_the_rest_is_removed_later(tmp_path: Path) -> None:
    """With a budget, a tree with more entries is left (False) for a remover to finish;
    one within it is removed whole (True), as is the rest without one."""
    small = tmp_path / "small"
    (small / "a").mkdir(parents=True)
    (small / "a" / "f").write_text("x")
    assert remove_tree(str(small), budget=8)
    assert not small.exists()
    large = tmp_path / "large"
    for folder in range(4):
        (large / str(folder)).mkdir(parents=True)
        for name in range(10):
            (large / str(folder) / str(name)).write_text("x")
    assert not remove_tree(str(large), budget=20)
    assert large.exists()
    assert remove_tree(str(large))
    assert not large.exists()
