"""Whom calls run as: the decision between a uid per call and uid 0 without capabilities."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sandbox import _call_user


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Root with CAP_SETUID and CAP_SETGID, whoever runs the tests."""
    monkeypatch.setattr(_call_user.os, "geteuid", lambda: 0)
    monkeypatch.setattr(_call_user, "_can_switch_uid", lambda: True)


def _kernel(monkeypatch: pytest.MonkeyPatch, abi: int) -> None:
    def landlock_abi() -> int:
        if abi == 0:
            raise OSError(38, "Function not implemented")
        return abi

    monkeypatch.setattr(_call_user, "landlock_abi", landlock_abi)


def test_not_root_runs_calls_as_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_call_user.os, "geteuid", lambda: 1000)
    assert _call_user.choose_call_user("root", Path("/"))[0] == "same"


@pytest.mark.usefixtures("as_root")
def test_auto_prefers_own_uids_when_the_deployment_is_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _kernel(monkeypatch, 7)
    monkeypatch.setattr(_call_user, "deployment_blocker", lambda root: None)
    assert _call_user.choose_call_user("auto", tmp_path)[0] == "own"


@pytest.mark.usefixtures("as_root")
def test_auto_falls_back_to_capless_root_and_names_the_blocker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _kernel(monkeypatch, 6)
    monkeypatch.setattr(_call_user, "deployment_blocker", lambda root: Path("/root"))
    mode, why = _call_user.choose_call_user("auto", tmp_path)
    assert mode == "root"
    assert "/root" in why


@pytest.mark.usefixtures("as_root")
def test_auto_keeps_own_uids_without_signal_scoping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _kernel(monkeypatch, 5)
    monkeypatch.setattr(_call_user, "deployment_blocker", lambda root: Path("/root"))
    mode, why = _call_user.choose_call_user("auto", tmp_path)
    assert mode == "own"
    assert "ABI 5" in why


@pytest.mark.usefixtures("as_root")
@pytest.mark.parametrize("abi", [0, 5])
def test_forced_root_refuses_a_kernel_without_signal_scoping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abi: int
) -> None:
    _kernel(monkeypatch, abi)
    with pytest.raises(RuntimeError, match="GATEWAY_SANDBOX_USER=root"):
        _call_user.choose_call_user("root", tmp_path)


@pytest.mark.usefixtures("as_root")
def test_root_without_setuid_cannot_use_own_uids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container's root without CAP_SETUID falls back to capless root, or refuses 'own'."""
    monkeypatch.setattr(_call_user, "_can_switch_uid", lambda: False)
    monkeypatch.setattr(_call_user, "deployment_blocker", lambda root: None)
    _kernel(monkeypatch, 7)
    assert _call_user.choose_call_user("auto", tmp_path) == ("root", "no CAP_SETUID")
    with pytest.raises(RuntimeError, match="CAP_SETUID"):
        _call_user.choose_call_user("own", tmp_path)
    _kernel(monkeypatch, 3)
    assert _call_user.choose_call_user("auto", tmp_path)[0] == "same"
