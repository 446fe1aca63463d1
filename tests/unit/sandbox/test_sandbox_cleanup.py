"""Opening up a call's locked folders for removal: every folder below, never through a link."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from gateway.sandbox._cleanup import _open_up, remove_tree


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_locked_folders_at_any_depth_get_their_owners_bits(tmp_path: Path) -> None:
    """Folders a call locked (``chmod 0``, no write bit) get ``u+rwx`` back, the rest kept."""
    call = tmp_path / "call"
    deep = call / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    for folder, mode in ((deep, 0o000), (call / "a" / "b", 0o055), (call / "a", 0o500)):
        folder.chmod(mode)
    _open_up(str(call))
    assert [_mode(p) for p in (call / "a", call / "a" / "b", deep)] == [0o700, 0o755, 0o700]
    remove_tree(str(call))
    assert not call.exists()


def test_a_link_to_a_folder_outside_is_left_alone(tmp_path: Path) -> None:
    """A symbolic link in the call's folder to a folder outside it is never chmod-ed through."""
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o055)
    call = tmp_path / "call"
    call.mkdir()
    (call / "link").symlink_to(outside)
    _open_up(str(call))
    assert _mode(outside) == 0o055


RACE = """
import os, stat, sys
from gateway.sandbox._cleanup import _open_up

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
_open_up(call)
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
