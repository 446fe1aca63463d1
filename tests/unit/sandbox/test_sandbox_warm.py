"""The zygote does once what every child would redo: types, templates, first requests."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

import gateway
from gateway.executors.http import HttpConfig
from gateway.executors.sql import SqlConfig

PROBE = """
import json, sys
import msgspec
import gateway.executors
from gateway.executors.builtins import CodeInterpreterConfig
from gateway.executors.http import HttpConfig
from gateway.executors.python import PythonConfig
from gateway.executors.sql import SqlConfig
from gateway.sandbox import worker
from gateway.sandbox.protocol import HEADER, CallRequest, CallResult, frame

if sys.argv[1] == "warm":
    worker.warm_zygote(None)
compiled = []
sys.addaudithook(lambda event, args: compiled.append(str(args[0])) if event == "compile" else None)
# What a child decodes, converts and encodes for a call.
msgspec.json.decode(worker._WARM_REQUEST[HEADER.size :], type=CallRequest)
for kind in (PythonConfig, HttpConfig, SqlConfig, CodeInterpreterConfig):
    try:
        msgspec.convert({}, kind)
    except msgspec.ValidationError:
        pass
frame(CallResult(ok=True, output="x"))
print(json.dumps(compiled))
"""


def _compiled_after(mode: str) -> list[str]:
    root = str(Path(gateway.__file__).resolve().parent.parent)
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-B",
            "-c",
            f"import sys; sys.path.insert(0, {root!r})\n{PROBE}",
            mode,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    compiled: list[str] = json.loads(out)
    return compiled


@pytest.mark.parametrize("mode", ["warm", "cold"])
def test_warm_zygote_leaves_nothing_to_parse_in_a_child(mode: str) -> None:
    compiled = _compiled_after(mode)
    if mode == "warm":
        assert compiled == []
    else:  # the probe sees the work warm_types saves (else the test proves nothing)
        assert any("ClassVar" in source for source in compiled), compiled


def test_http_sandbox_warm_compiles_every_template_a_call_renders() -> None:
    """After ``sandbox_warm`` (in the zygote), building a request compiles nothing more."""
    from gateway.executors import http
    from gateway.executors.http import HttpConfig
    from gateway.manifests.model import CallContext

    config = HttpConfig(
        url="https://api.example.com/items/{{ id }}",
        headers={"Authorization": "Bearer {{ secrets.TOKEN }}"},
        query={"q": "{{ text }}"},
        json={"id": "{{ id }}", "note": "for {{ text }}", "tags": ["{{ tag }}"]},
    )
    http._template.cache_clear()
    http._expression.cache_clear()
    config.sandbox_warm()
    compiled = http._template.cache_info().misses + http._expression.cache_info().misses
    assert compiled == 6  # url, header, query, the note; the two whole leaves as expressions
    call = CallContext(action="a", arguments={"id": 7, "text": "x", "tag": "t"})
    config._build(call)
    assert http._template.cache_info().misses + http._expression.cache_info().misses == compiled


def test_sql_sandbox_warm_compiles_the_query() -> None:
    from gateway.executors import sql
    from gateway.executors.sql import SqlConfig, render_sql

    config = SqlConfig(database="d", query="SELECT * FROM t WHERE id = {{ id }}")
    sql._compiled.cache_clear()
    config.sandbox_warm()
    assert sql._compiled.cache_info().misses == 1
    render_sql(config.query, {"id": 1}, style="qmark")
    assert sql._compiled.cache_info().misses == 1


def test_the_http_rehearsal_runs_a_real_request_and_leaves_no_process() -> None:
    """``http.warm`` in a fresh interpreter: one request answered, its responder reaped."""
    root = str(Path(gateway.__file__).resolve().parent.parent)
    probe = (
        f"import sys, os; sys.path.insert(0, {root!r})\n"
        "from gateway.executors import http\n"
        "http._rehearse_request()\n"  # raises if the request failed
        "try:\n"
        "    os.waitpid(-1, os.WNOHANG)\n"
        "    print('a child is left')\n"
        "except ChildProcessError:\n"
        "    print('clean')\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-B", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.strip() == "clean"


def test_the_rehearsed_call_succeeds() -> None:
    """The rehearsal (zygote and spares) runs the real python kind to its end, not an error."""
    import msgspec

    from gateway.sandbox import worker
    from gateway.sandbox.protocol import HEADER, CallRequest, Limits

    request = msgspec.json.decode(worker._WARM_REQUEST[HEADER.size :], type=CallRequest)
    result = worker._execute(request, Limits())
    assert result.ok, result
    assert msgspec.json.decode(result.output) == {"a": 1, "b": "x"}


HUGE = '("a" * 50000000) | length'
"""A constant expression Jinja's optimizer would evaluate (50 MB) while compiling."""


@pytest.mark.parametrize(
    "compile_it",
    [
        lambda: SqlConfig(
            database="sqlite:///x.db", query=f"SELECT {{{{ {HUGE} }}}}"
        ).sandbox_warm(),
        lambda: HttpConfig(
            url="http://127.0.0.1/{{ " + HUGE + " }}",
            headers={"X": "{{ " + HUGE + " }}"},
            json={"whole": "{{ " + HUGE + " }}", "part": "n={{ " + HUGE + " }}"},
        ).sandbox_warm(),
    ],
    ids=["sql", "http"],
)
def test_compiling_a_template_evaluates_nothing(compile_it: Callable[[], None]) -> None:
    """Compiling (in the zygote, or the server for inline) runs none of a template's
    expressions: their cost belongs to a call, under its limits."""
    tracemalloc.start()
    try:
        compile_it()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, f"compiling allocated {peak / 1e6:.0f} MB"
