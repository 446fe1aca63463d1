"""The memory cgroup files a zygote's bound writes and reads, by cgroup version.

This machine runs cgroup v1, where ``tests/integration/test_sandbox_memory.py``
exercises the kernel's own files; v2's names (``memory.max``,
``memory.swap.max``, ``memory.events``) are checked here on a plain directory
laid out as the kernel lays out a v2 cgroup, since no v2 memory controller can
be had on this host.
"""

from __future__ import annotations

from pathlib import Path

from gateway.sandbox._cgroup import SandboxCgroups

EVENTS = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n"


def _v2(tmp_path: Path, *, swap: bool = True) -> tuple[SandboxCgroups, Path]:
    zygote = tmp_path / "z42"
    zygote.mkdir()
    for name in ("memory.max", "memory.events", *(("memory.swap.max",) if swap else ())):
        (zygote / name).write_text("max\n" if name != "memory.events" else EVENTS)
    cgroups = SandboxCgroups({"pids": tmp_path, "memory": tmp_path}, {"pids": 2, "memory": 2})
    return cgroups, zygote


def test_a_v2_bound_writes_memory_max_and_no_swap(tmp_path: Path) -> None:
    """On v2 the bound is memory.max, and memory.swap.max 0 keeps the calls' memory
    files out of swap (else they could take the whole swap besides the bound)."""
    cgroups, zygote = _v2(tmp_path)
    assert cgroups.limit_memory(42, 180 << 20) == "no swap (memory.swap.max 0)"
    assert (zygote / "memory.max").read_text() == str(180 << 20)
    assert (zygote / "memory.swap.max").read_text() == "0"


def test_a_v2_bound_without_swap_accounting_says_so(tmp_path: Path) -> None:
    """Without swap accounting (no memory.swap.max) the bound is set and the reason why
    swap is not bounded is given back (for the log)."""
    cgroups, zygote = _v2(tmp_path, swap=False)
    assert "swap is not bounded" in cgroups.limit_memory(42, 1 << 30)
    assert (zygote / "memory.max").read_text() == str(1 << 30)


def test_oom_kills_are_read_from_memory_events_on_v2(tmp_path: Path) -> None:
    """The OOM kill count (what tells a call killed for memory from one killed otherwise)
    is memory.events' oom_kill on v2, not its oom (times the cgroup hit OOM)."""
    cgroups, _ = _v2(tmp_path)
    assert cgroups.oom_kills(42) == 2
    assert cgroups.oom_kills(43) is None  # no such zygote's cgroup


def test_oom_kills_are_read_from_oom_control_on_v1(tmp_path: Path) -> None:
    """On v1 the count is memory.oom_control's oom_kill line."""
    (tmp_path / "z7").mkdir()
    (tmp_path / "z7" / "memory.oom_control").write_text(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n"
    )
    assert SandboxCgroups({"memory": tmp_path}).oom_kills(7) == 5


def test_a_v2_bound_of_all_zygotes_is_written_to_the_servers_directory(tmp_path: Path) -> None:
    """The bound of all zygotes together goes to the server's own directory (the parent
    of every zygote's cgroup), swap excluded as for one zygote, and is written again
    when it changes (a reload)."""
    cgroups, zygote = _v2(tmp_path)
    for name in ("memory.max", "memory.swap.max"):
        (tmp_path / name).write_text("max\n")
    assert cgroups.limit_all_memory(700 << 20) == "no swap (memory.swap.max 0)"
    assert (tmp_path / "memory.max").read_text() == str(700 << 20)
    assert (tmp_path / "memory.swap.max").read_text() == "0"
    cgroups.limit_all_memory(900 << 20)
    assert (tmp_path / "memory.max").read_text() == str(900 << 20)
    assert (zygote / "memory.max").read_text() == "max\n"  # each zygote's is its own
