"""The zygote's Landlock allow-list: protected paths are never covered, rights match the ABI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.sandbox import _linux, zygote
from gateway.sandbox._fs_policy import catalog_fs_policy
from gateway.sandbox.protocol import FsPolicy


def _covered(rules: tuple[tuple[str, int], ...], path: str, right: int) -> bool:
    """Whether some rule on ``path`` or an ancestor grants ``right``."""
    return any(
        (path == p or path.startswith(p.rstrip("/") + "/")) and access & right
        for p, access in rules
    )


def test_handled_rights_follow_the_abi() -> None:
    """Each ABI handles exactly the rights it knows (REFER from 2, TRUNCATE 3, IOCTL_DEV 5)."""
    assert _linux.landlock_handled(1) == (1 << 13) - 1
    assert _linux.landlock_handled(2) & _linux.FS_REFER
    assert not _linux.landlock_handled(2) & _linux.FS_TRUNCATE
    assert _linux.landlock_handled(4) & _linux.FS_TRUNCATE
    assert not _linux.landlock_handled(4) & _linux.FS_IOCTL_DEV
    assert _linux.landlock_handled(7) == _linux.FS_ALL


def test_protected_paths_are_carved_out_of_system_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A protected file under /etc is left out while the rest of /etc stays readable."""
    monkeypatch.setattr(_linux, "landlock_abi", lambda: 7)
    monkeypatch.setattr(sys, "path", ["", "/", "/etc", *sys.path])
    policy = FsPolicy(read=[], list_only=["/nonexistent-root"], protected=["/etc/hosts"])
    rules = zygote._landlock_rules(policy, "/tmp/gateway-sandbox-test")
    assert rules is not None
    assert not _covered(rules.rules, "/etc/hosts", _linux.FS_READ_FILE)
    assert _covered(rules.rules, "/etc/passwd", _linux.FS_READ_FILE)
    assert _covered(rules.rules, "/usr/bin/env", _linux.FS_EXECUTE)
    assert not _covered(rules.rules, "/root/.bashrc", _linux.FS_READ_FILE)  # "" and "/" dropped
    assert not _covered(rules.rules, "/proc/self/status", _linux.FS_EXECUTE)
    assert not _covered(rules.rules, "/run/secrets/token", _linux.FS_READ_FILE)
    assert ("/nonexistent-root", _linux.FS_READ_DIR) in rules.rules


def test_no_landlock_means_no_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Landlock (or without a policy) the zygote computes no allow-list."""

    def missing() -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(_linux, "landlock_abi", missing)
    assert zygote._landlock_rules(FsPolicy(), "/tmp/x") is None
    assert zygote._landlock_rules(None, "/tmp/x") is None


def test_pruned_merges_and_drops_covered_rules() -> None:
    """Rules under an ancestor granting the same rights go; narrower ancestors keep them."""
    rules = zygote._pruned(
        [
            ("/usr", _linux.FS_READ),
            ("/usr/lib", _linux.FS_READ),
            ("/dev", _linux.FS_READ_FILE),
            ("/dev/null", _linux.FS_WRITE_FILE),
            ("/dev/null", _linux.FS_READ_FILE),
        ]
    )
    assert rules == (
        ("/usr", _linux.FS_READ),
        ("/dev", _linux.FS_READ_FILE),
        ("/dev/null", _linux.FS_WRITE_FILE | _linux.FS_READ_FILE),
    )


def test_a_working_directory_deleted_under_the_server_does_not_stop_the_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server started in git-sync's revision (``WorkingDirectory=.../current``) has its
    working directory deleted at the next switch: ``Path.cwd()`` raised, and every later
    zygote's policy (every reload, every restart) with it. The store's absolute path is
    still protected; there is no ``./.env`` to protect."""
    gone = tmp_path / "rev1"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    policy = catalog_fs_policy([], None, tmp_path, f"sqlite:///{tmp_path}/var/g.db")
    assert policy.protected == [str(tmp_path.resolve()), str(tmp_path.resolve() / "var" / "g.db")]
