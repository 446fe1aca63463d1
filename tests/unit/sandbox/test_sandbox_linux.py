"""The seccomp deny-list: names match the numbers, and the container profile is generated."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from gateway.sandbox import _linux

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
HEADERS = {
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    "aarch64": Path("/usr/include/asm-generic/unistd.h"),  # aarch64 uses the generic table
}
REGENERATE = (
    "uv run --frozen python -c 'import json; from gateway.sandbox._linux import "
    "container_seccomp_profile as p; print(json.dumps(p(), indent=2))' > deploy/seccomp.json"
)


def test_committed_profile_is_the_generated_one() -> None:
    """deploy/seccomp.json is exactly what container_seccomp_profile() generates."""
    committed = json.loads((DEPLOY / "seccomp.json").read_text())
    assert committed == _linux.container_seccomp_profile(), f"regenerate: {REGENERATE}"


@pytest.mark.parametrize("machine", sorted(HEADERS))
def test_deny_names_name_the_denied_numbers(machine: str) -> None:
    """Each name of the deny-list is the syscall its number means on that architecture."""
    header = HEADERS[machine]
    if not header.exists():
        pytest.skip(f"{header} is not installed (linux-libc-dev)")
    numbers = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"#define __NR_(\w+)\s+(\d+)\b", header.read_text())
    }
    _, deny, clone, clone3 = _linux._DENY[machine]
    assert [numbers[name] for name in _linux._DENY_NAMES] == deny
    assert (numbers["clone"], numbers["clone3"]) == (clone, clone3)


def test_container_profile_allows_namespaces_only_through_unshare() -> None:
    """The profile denies the action deny-list but unshare and mount (the zygote's private
    view), and clone with any namespace flag."""
    profile = _linux.container_seccomp_profile()
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    rules = profile["syscalls"]
    assert isinstance(rules, list)
    denied = {n for rule in rules if "args" not in rule for n in rule["names"]}
    assert denied == (set(_linux._DENY_NAMES) - {"unshare", "mount"}) | {"clone3"}
    clone_flags = {
        arg["value"]
        for rule in rules
        if rule["names"] == ["clone"]
        for arg in rule["args"]
        if arg["op"] == "SCMP_CMP_MASKED_EQ" and arg["value"] == arg["valueTwo"]
    }
    assert sum(clone_flags) == _linux._NAMESPACE_FLAGS
    assert {_linux.CLONE_NEWUSER, _linux.CLONE_NEWNET} <= clone_flags


def test_compose_uses_the_shipped_profile() -> None:
    """docker-compose.yml runs the gateway with deploy/seccomp.json (relative to itself)."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    options = compose["services"]["gateway"]["security_opt"]
    profiles = [o.split("=", 1)[1] for o in options if o.startswith("seccomp=")]
    assert profiles == ["seccomp.json"]
    assert (DEPLOY / profiles[0]).is_file()
