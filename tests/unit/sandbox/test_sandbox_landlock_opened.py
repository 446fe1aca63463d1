"""``OpenedRules``: the zygote opens the allow-list's paths once; a spare builds from the fds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gateway
from gateway.sandbox import _linux

PROBE = """
import json, os, sys
from gateway.sandbox import _linux

allowed, denied, own, missing = sys.argv[1:5]
rules = _linux.LandlockRules(
    _linux.landlock_handled(_linux.landlock_abi()),
    ((allowed, _linux.FS_READ), (missing, _linux.FS_READ)),
)
opened = _linux.OpenedRules(rules, 200)
fds = list(opened.fds)
ruleset = opened.ruleset(((own, _linux.FS_ALL),))
opened.close()
still_open = sorted(set(fds) & {int(fd) for fd in os.listdir("/proc/self/fd")})
_linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
_linux.landlock_enforce(ruleset)


def can(act):
    try:
        act()
    except OSError:
        return False
    return True


def write(path):
    with open(path, "w") as fh:
        fh.write("x")


print(json.dumps({
    "fds": fds,
    "still_open": still_open,
    "read_allowed": can(lambda: open(os.path.join(allowed, "f")).read()),
    "write_allowed": can(lambda: write(os.path.join(allowed, "g"))),
    "read_denied": can(lambda: open(os.path.join(denied, "f")).read()),
    "write_own": can(lambda: write(os.path.join(own, "h"))),
}))
"""


def _landlock_abi() -> int:
    try:
        return _linux.landlock_abi()
    except OSError:
        return 0


@pytest.mark.skipif(_landlock_abi() < 1, reason="the kernel has no Landlock")
def test_a_ruleset_from_opened_paths_allows_them_and_the_extra_only(tmp_path: Path) -> None:
    dirs = {name: tmp_path / name for name in ("allowed", "denied", "own")}
    for path in dirs.values():
        path.mkdir()
        (path / "f").write_text("secret")
    root = str(Path(gateway.__file__).resolve().parent.parent)
    args = [*(str(p) for p in dirs.values()), str(tmp_path / "missing")]
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {root!r})\n{PROBE}", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    seen = json.loads(out)
    assert len(seen["fds"]) == 1  # the missing path got no fd and no rule
    assert min(seen["fds"]) >= 200
    assert seen["still_open"] == []
    assert seen["read_allowed"] is True
    assert seen["write_allowed"] is False
    assert seen["read_denied"] is False
    assert seen["write_own"] is True
