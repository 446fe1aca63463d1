"""Argument validation before anything runs, and the runner's failure mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.api.logs import configure_logging
from gateway.errors import InvalidArguments
from gateway.executors.base import ToolResult
from gateway.executors.examples import check_expect
from gateway.executors.python import PythonConfig
from gateway.executors.runner import SandboxRunner, validate_arguments
from gateway.knowledge import PdfLimits
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import (
    Action,
    Assistant,
    CallContext,
    CheckContext,
    Expect,
    FileSearch,
    PdfParse,
)
from gateway.settings import Settings

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
        "days": {"type": "integer", "minimum": 1},
        "opts": {"type": "object", "properties": {"lang": {"type": "string", "default": "en"}}},
    },
    "required": ["city"],
    "additionalProperties": False,
}
ACTION = Action(
    name="weather",
    description="d",
    parameters=SCHEMA,
    kind_key="python",
    config=PythonConfig(function="m:f"),
)


def test_defaults_are_applied() -> None:
    """Missing properties with a default get it, also in nested objects."""
    assert validate_arguments(ACTION, '{"city": "Paris", "opts": {}}') == {
        "city": "Paris",
        "unit": "c",
        "opts": {"lang": "en"},
    }


def test_strict_mode_nulls_mean_absent() -> None:
    """null for an optional property (OpenAI strict mode) is treated as not given."""
    assert validate_arguments(ACTION, {"city": "Oslo", "unit": None, "days": None}) == {
        "city": "Oslo",
        "unit": "c",
    }


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ("{}", "city"),
        ('{"city": 3}', "city"),
        ('{"city": "x", "unit": "k"}', "unit"),
        ('{"city": "x", "days": 0}', "days"),
        ('{"city": "x", "extra": 1}', "extra"),
        ('{"city": "x", "opts": {"lang": 5}}', "opts.lang"),
    ],
)
def test_invalid_arguments_name_the_argument(arguments: str, argument: str) -> None:
    """Each schema violation is reported with the argument it concerns."""
    with pytest.raises(InvalidArguments) as info:
        validate_arguments(ACTION, arguments)
    assert info.value.argument == argument
    assert argument.split(".")[-1] in info.value.message


@pytest.mark.parametrize(
    "arguments",
    [
        {"city": "x", "unit": "k" * 200_000},  # the bad value itself
        {"city": "x", "k" * 200_000: 1},  # an unexpected argument's name
        {"city": ["x"] * 50_000},  # a value of the wrong type
    ],
)
def test_an_invalid_call_is_reported_in_bounded_size(arguments: dict[str, Any]) -> None:
    """The error the model reads quotes a huge bad value or name only in part, keeping the
    start and the end (what was wrong), never all of it."""
    with pytest.raises(InvalidArguments) as info:
        validate_arguments(ACTION, arguments)
    assert len(info.value.message) <= 600
    assert len(info.value.argument or "") <= 200
    assert "…" in info.value.message
    assert info.value.message.startswith("invalid argument ")


@pytest.mark.parametrize("arguments", ["{nope", "[1, 2]", '"text"'])
def test_arguments_must_be_a_json_object(arguments: str) -> None:
    """Invalid JSON or a non-object is an InvalidArguments error."""
    with pytest.raises(InvalidArguments):
        validate_arguments(ACTION, arguments)


async def test_too_deeply_nested_arguments_are_invalid_arguments(tmp_path: Path) -> None:
    """Arguments nested past the decoder's depth limit are the model's error; nothing runs."""
    arguments = '{"city": "x", "opts": ' + "[" * 5000 + "]" * 5000 + "}"
    with pytest.raises(InvalidArguments, match="nested too deeply"):
        validate_arguments(ACTION, arguments)
    runner = SandboxRunner(_NoSupervisor(), environ={})  # type: ignore[arg-type]
    result = await runner.run(_catalog(tmp_path), "weather", arguments)
    assert result.error_type == "invalid_arguments"


def _nested(depth: int) -> dict[str, Any]:
    """``{"city": "x", "opts": [[...]]}`` with ``depth`` levels in all."""
    value: Any = []
    for _ in range(depth - 2):
        value = [value]
    return {"city": "x", "opts": value}


@pytest.mark.parametrize("as_text", [True, False], ids=["text", "dict"])
def test_arguments_nested_past_the_limit_are_invalid_at_any_depth(as_text: bool) -> None:
    """Arguments nested more than 100 levels (text from a model, a dict from the invoke route)
    are invalid_arguments naming the limit: a 500-level dict overflowed ``deepcopy``."""
    for depth in (101, 500):
        arguments = _nested(depth)
        with pytest.raises(InvalidArguments, match=r"nested too deeply \(more than 100 levels\)"):
            validate_arguments(ACTION, json.dumps(arguments) if as_text else arguments)
    within = _nested(100)
    with pytest.raises(InvalidArguments) as schema_error:  # 'opts' is not in the schema
        validate_arguments(ACTION, json.dumps(within) if as_text else within)
    assert "nested" not in str(schema_error.value) and "opts" in str(schema_error.value)


def test_python_function_format_checked() -> None:
    """python.function must be module:callable (checked at load time, no import)."""
    ctx = CheckContext(root=Path(), databases=frozenset())
    assert PythonConfig(function="actions.weather:get").check(ACTION, ctx) == []
    assert PythonConfig(function="actions.weather").check(ACTION, ctx)


def test_python_run_calls_with_keywords() -> None:
    """The python kind imports module:callable and passes arguments as keywords."""
    config = PythonConfig(function="textwrap:shorten")
    call = CallContext(action="s", arguments={"text": "hello big world", "width": 12})
    assert config.run(call) == "hello [...]"
    assert config.sandbox_imports() == ["textwrap"]


class _NoSupervisor:
    """Fails the test if the runner tries to run anything."""

    async def call(self, *args: Any, **kwargs: Any) -> ToolResult:
        raise AssertionError("the sandbox must not be called")


def _catalog(tmp_path: Path, **kw: Any) -> Catalog:
    return Catalog(
        version="t",
        root=tmp_path,
        gateway_root=tmp_path,
        loaded_at=0,
        actions={"weather": ACTION},
        **kw,
    )


async def test_runner_maps_failures_without_running(tmp_path: Path) -> None:
    """Unknown tools, bad arguments and missing secrets are tool errors; nothing runs."""
    runner = SandboxRunner(_NoSupervisor(), environ={})  # type: ignore[arg-type]
    catalog = _catalog(tmp_path)
    unknown = await runner.run(catalog, "nope", {})
    assert unknown.error_type == "not_found"
    bad = await runner.run(catalog, "weather", '{"city": 1}')
    assert bad.status == "failed"
    assert json.loads(bad.output)["error"]["argument"] == "city"
    secret_action = Action(
        name="s",
        description="d",
        secrets=["MISSING_KEY"],
        kind_key="python",
        config=PythonConfig(function="m:f"),
    )
    cat2 = Catalog(
        version="t", root=tmp_path, gateway_root=tmp_path, loaded_at=0, actions={"s": secret_action}
    )
    missing = await runner.run(cat2, "s", {})
    assert missing.error_type == "configuration_error"
    assert "MISSING_KEY" in missing.output


class _Knowledge:
    def __init__(self) -> None:
        self.calls: list[tuple[list[Path], str, int, Path | None]] = []
        self.caps: list[tuple[int, int]] = []
        self.pdf_limits: list[PdfLimits | None] = []

    def search(
        self,
        files: list[Path],
        query: str,
        max_results: int,
        *,
        root: Path | None = None,
        within: Path | None = None,
        max_file_bytes: int,
        max_total_bytes: int,
        pdf_limits: PdfLimits | None = None,
    ) -> list[dict[str, str]]:
        self.calls.append((files, query, max_results, within))
        self.caps.append((max_file_bytes, max_total_bytes))
        self.pdf_limits.append(pdf_limits)
        return [{"source": files[0].name, "text": f"about {query}"}]


async def test_file_search_delegates_to_knowledge(tmp_path: Path) -> None:
    """file_search asks the knowledge index with the assistant's files and size caps (MiB
    to bytes: a file grown past them since validation is not read); absent index = error."""
    config = FileSearch(files=["faq.md"], max_results=3, max_file_size_mb=2, max_total_size_mb=5)
    assistant = Assistant(name="a", file_search=config)
    catalog = _catalog(tmp_path, assistants={"a": assistant})
    knowledge = _Knowledge()
    runner = SandboxRunner(_NoSupervisor(), knowledge)  # type: ignore[arg-type]
    result = await runner.run(catalog, "file_search", {"query": "refunds"}, assistant="a")
    assert json.loads(result.output) == [{"source": "faq.md", "text": "about refunds"}]
    assert knowledge.calls == [([(tmp_path / "faq.md").resolve()], "refunds", 3, catalog.root)]
    assert knowledge.caps == [(2 << 20, 5 << 20)]
    assert knowledge.pdf_limits == [PdfLimits()]
    without = SandboxRunner(_NoSupervisor())  # type: ignore[arg-type]
    assert (await without.run(catalog, "file_search", {"query": "x"})).status == "failed"


async def test_file_search_without_an_assistant_searches_nothing(tmp_path: Path) -> None:
    """file_search with no calling assistant is a tool error; no assistant's files are read."""
    shared = FileSearch(files=["faq.md"])
    catalog = _catalog(
        tmp_path,
        assistants={
            "a": Assistant(name="a", file_search=shared),
            "b": Assistant(name="b", file_search=FileSearch(files=["private.md"])),
            "c": Assistant(name="c"),
        },
    )
    knowledge = _Knowledge()
    runner = SandboxRunner(_NoSupervisor(), knowledge)  # type: ignore[arg-type]
    result = await runner.run(catalog, "file_search", {"query": "salaries"})
    assert result.status == "failed"
    assert result.error_type == "invalid_call"
    assert "assistant" in json.loads(result.output)["error"]["message"]
    for name in ("c", "nobody"):
        other = await runner.run(catalog, "file_search", {"query": "salaries"}, assistant=name)
        assert other.status == "failed"
        assert other.error_type == "unavailable"
    assert knowledge.calls == []
    scoped = await runner.run(catalog, "file_search", {"query": "salaries"}, assistant="b")
    assert scoped.status == "succeeded"
    assert knowledge.calls == [([(tmp_path / "private.md").resolve()], "salaries", 5, catalog.root)]


@pytest.mark.parametrize(
    ("expect", "output", "status", "ok"),
    [
        (Expect(contains="Paris"), "in Paris", "succeeded", True),
        (Expect(contains="Paris"), "in Rome", "succeeded", False),
        (Expect(equals=84), "84", "succeeded", True),
        (Expect(equals={"a": 1}), '{"a":1}', "succeeded", True),
        (Expect(equals="x"), "y", "succeeded", False),
        (Expect(status="failed"), "{}", "failed", True),
        (Expect(), "{}", "failed", False),
        # JSON's true is not 1 (Python's True == 1 let `gateway test` pass either for the other)
        (Expect(equals=True), "1", "succeeded", False),
        (Expect(equals=1), "true", "succeeded", False),
        (Expect(equals={"ok": True}), '{"ok":1}', "succeeded", False),
        (Expect(equals=[0, False]), "[false,0]", "succeeded", False),
        (Expect(equals={"ok": True}), '{"ok":true}', "succeeded", True),
        (Expect(equals=2), "2.0", "succeeded", True),
        # An output nested past msgspec's depth guard is compared as text (it raised
        # RecursionError and `gateway test` stopped with a traceback)
        (Expect(equals=[]), "[" * 5000 + "]" * 5000, "succeeded", False),
        (Expect(equals="[" * 5000 + "]" * 5000), "[" * 5000 + "]" * 5000, "succeeded", True),
        # Compared by type: a text result "True" is not JSON true, nor 1 the string "1" ...
        (Expect(equals=True), "True", "succeeded", False),
        (Expect(equals=True), "true", "succeeded", True),
        (Expect(equals="True"), "true", "succeeded", False),
        (Expect(equals="True"), "True", "succeeded", True),  # a string result is its text
        (Expect(equals="True"), '"True"', "succeeded", True),  # ... or JSON
        (Expect(equals=84), '"84"', "succeeded", False),
        (Expect(equals=[1, "a"]), "[1, 'a']", "succeeded", False),
        (Expect(equals={"a": None}), '{"a":"None"}', "succeeded", False),
        # ... and null is a value to expect (it meant "no condition")
        (Expect(equals=None), "null", "succeeded", True),
        (Expect(equals=None), "None", "succeeded", False),
        (Expect(equals=None), "", "succeeded", False),
        (Expect(equals=None), "0", "succeeded", False),
        (Expect(equals={"a": None}), '{"a":null}', "succeeded", True),
        (Expect(), "anything", "succeeded", True),
    ],
)
def test_check_expect(expect: Expect, output: str, status: str, ok: bool) -> None:
    """`gateway test` expectations: contains, equals (JSON-aware) and status."""
    result = ToolResult(status=status, output=output, duration_ms=1.0)  # type: ignore[arg-type]
    assert (check_expect(expect, result) == []) is ok


async def test_file_search_with_the_real_index(tmp_path: Path) -> None:
    """file_search over the real knowledge index returns passages with their source."""
    from gateway.knowledge.index import KnowledgeIndex

    (tmp_path / "faq.md").write_text("# Refunds\n\nRefunds take five business days.\n")
    assistant = Assistant(name="a", file_search=FileSearch(files=["faq.md"]))
    catalog = _catalog(tmp_path, assistants={"a": assistant})
    index = KnowledgeIndex()
    try:
        runner = SandboxRunner(_NoSupervisor(), index)  # type: ignore[arg-type]
        result = await runner.run(catalog, "file_search", '{"query": "refunds"}', assistant="a")
    finally:
        index.close()
    passages = json.loads(result.output)
    assert result.status == "succeeded"
    assert passages[0]["source"] == "faq.md"
    assert "five business days" in passages[0]["text"]


async def test_file_search_parses_pdfs_within_the_assistants_pdf_limits(tmp_path: Path) -> None:
    """An assistant's file_search.pdf limits are the ones its PDFs are parsed within: a
    two-page manual is over max_pages 1 for one assistant and found by the other."""
    from gateway.knowledge.index import KnowledgeIndex
    from tests.unit.knowledge.test_knowledge_index import make_pdf

    make_pdf(tmp_path / "manual.pdf", ["Tyre pressure: 4 bar", "Oil: every 10000 km"])
    strict = FileSearch(files=["manual.pdf"], pdf=PdfParse(max_pages=1))
    assistants = {
        "strict": Assistant(name="strict", file_search=strict),
        "lenient": Assistant(name="lenient", file_search=FileSearch(files=["manual.pdf"])),
    }
    catalog = _catalog(tmp_path, assistants=assistants)
    index = KnowledgeIndex()
    try:
        runner = SandboxRunner(_NoSupervisor(), index)  # type: ignore[arg-type]
        query = '{"query": "tyre pressure"}'
        refused = await runner.run(catalog, "file_search", query, assistant="strict")
        found = await runner.run(catalog, "file_search", query, assistant="lenient")
    finally:
        index.close()
    assert json.loads(refused.output) == []
    assert json.loads(found.output)[0]["location"] == "page 1"


class _BrokenSupervisor:
    """A supervisor with a bug: every call raises."""

    async def call(self, *args: Any, **kwargs: Any) -> ToolResult:
        raise RuntimeError("supervisor bug")


async def test_a_crash_logged_as_json_carries_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """LOG_FORMAT=json tracebacks leave out frame locals, where the call's secrets live."""
    configure_logging(msgspec.structs.replace(Settings(), log_format="json"))
    action = Action(
        name="w",
        description="d",
        secrets=["WEATHER_KEY"],
        kind_key="python",
        config=PythonConfig(function="m:f"),
    )
    catalog = Catalog(
        version="t", root=tmp_path, gateway_root=tmp_path, loaded_at=0, actions={"w": action}
    )
    env = {"WEATHER_KEY": "s3cret-weather-value", "OPENAI_API_KEY": "sk-server-key-123456"}
    runner = SandboxRunner(_BrokenSupervisor(), environ=env)  # type: ignore[arg-type]
    result = await runner.run(catalog, "w", "{}")
    assert result.error_type == "internal_error"
    err = capsys.readouterr().err
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line["event"] == "executors.run_error" and "exception" in line for line in logged)
    assert "supervisor bug" in err  # the traceback itself is still there
    assert "s3cret-weather-value" not in err and "sk-server-key-123456" not in err
