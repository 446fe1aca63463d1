"""Python action introspection: type hints and docstrings to JSON Schema, out of process."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypedDict

import msgspec
import pytest

from gateway.manifests import _pyfunc
from gateway.manifests._introspect import infer_parameters, parse_docstring, type_schema
from gateway.manifests._pyfunc import inspect_functions


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(TypedDict):
    x: float
    y: float


@pytest.mark.parametrize(
    ("hint", "schema", "optional"),
    [
        (str, {"type": "string"}, False),
        (int, {"type": "integer"}, False),
        (float, {"type": "number"}, False),
        (bool, {"type": "boolean"}, False),
        (Any, {}, False),
        (int | None, {"type": "integer"}, True),
        (Optional[str], {"type": "string"}, True),  # noqa: UP045 - the old spelling must work too
        (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}, False),
        (Literal[1, 2, None], {"type": "integer", "enum": [1, 2]}, True),
        (Literal["a", 1], {"enum": ["a", 1]}, False),
        (Color, {"type": "string", "enum": ["red", "blue"]}, False),
        (list[int], {"type": "array", "items": {"type": "integer"}}, False),
        (list, {"type": "array"}, False),
        (tuple[str, ...], {"type": "array", "items": {"type": "string"}}, False),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}, False),
        (datetime.date, {"type": "string", "format": "date"}, False),
        (Annotated[int, "How many"], {"type": "integer", "description": "How many"}, False),
        (int | str, {"anyOf": [{"type": "integer"}, {"type": "string"}]}, False),
        (
            Point,
            {
                "type": "object",
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x", "y"],
            },
            False,
        ),
    ],
)
def test_type_hints_map_to_json_schema(hint: Any, schema: dict[str, Any], optional: bool) -> None:
    """Each supported hint becomes its JSON Schema; None in a union makes it optional."""
    assert type_schema(hint) == (schema, optional)


def test_google_docstrings_give_summary_and_argument_descriptions() -> None:
    """Args: sections, with types in parentheses and continuation lines, are parsed."""
    doc = textwrap.dedent(
        """\
        Find things.
        Quickly.

        Args:
            query (str): What to look for,
                across lines.
            *args: ignored.
            limit: How many.

        Returns:
            Things.
        """
    )
    summary, args = parse_docstring(doc)
    assert summary == "Find things. Quickly."
    assert args == {
        "query": "What to look for, across lines.",
        "args": "ignored.",
        "limit": "How many.",
    }


def test_numpy_docstrings_give_argument_descriptions() -> None:
    """Parameters sections with dashed underlines are parsed up to the next section."""
    doc = textwrap.dedent(
        """\
        Find things.

        Parameters
        ----------
        query : str
            What to look for.
        limit : int, optional
            How many,
            at most.

        Returns
        -------
        list
        """
    )
    assert parse_docstring(doc) == (
        "Find things.",
        {"query": "What to look for.", "limit": "How many, at most."},
    )


def test_infer_parameters_from_a_function() -> None:
    """Required arguments have no default; defaults are kept unless None; *args are skipped."""

    def f(a: int, b: str = "x", c: float | None = None, *rest: int, **kw: str) -> None:
        """Do f.

        Args:
            a: The a.
        """

    schema, summary = infer_parameters(f)
    assert summary == "Do f."
    assert schema == {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "description": "The a."},
            "b": {"type": "string", "default": "x"},
            "c": {"type": "number"},
        },
        "required": ["a"],
    }


def write_module(root: Path, name: str, body: str) -> None:
    (root / f"{name}.py").write_text(textwrap.dedent(body), encoding="utf-8")


def test_introspection_runs_out_of_process(tmp_path: Path) -> None:
    """User modules are imported in a child: the server process never imports them."""
    write_module(tmp_path, "introspect_mod_a", "def go(x: int) -> int:\n    return x\n")
    found = inspect_functions(["introspect_mod_a:go"], tmp_path)
    info = found.functions["introspect_mod_a:go"]
    assert info.error is None
    assert info.parameters == {
        "type": "object",
        "properties": {"x": {"type": "integer"}},
        "required": ["x"],
        "additionalProperties": False,
    }
    assert "introspect_mod_a" not in sys.modules
    assert found.files == [str((tmp_path / "introspect_mod_a.py").resolve())]


def test_bad_modules_are_reported_per_reference(tmp_path: Path) -> None:
    """Import errors, missing or non-callable attributes, prints and exits are all reported."""
    write_module(tmp_path, "noisy", "print('hello from import')\nVALUE = 3\ndef ok():\n    pass\n")
    write_module(tmp_path, "broken", "raise RuntimeError('boom at import')\n")
    write_module(tmp_path, "exits", "import sys\nsys.exit(3)\n")
    write_module(tmp_path, "asyncmod", "async def run(q: str) -> str:\n    return q\n")
    refs = ["noisy:ok", "noisy:VALUE", "noisy:missing", "broken:f", "exits:f", "asyncmod:run"]
    found = inspect_functions(refs, tmp_path).functions
    assert found["noisy:ok"].error is None
    assert "not callable" in (found["noisy:VALUE"].error or "")
    assert "has no attribute 'missing'" in (found["noisy:missing"].error or "")
    assert "RuntimeError: boom at import" in (found["broken:f"].error or "")
    assert "SystemExit" in (found["exits:f"].error or "")
    assert found["asyncmod:run"].is_async is True


def test_a_module_ending_the_interpreter_is_named_and_the_others_still_described(
    tmp_path: Path,
) -> None:
    """A module that exits or crashes the child at import is reported at its own reference
    (exit status or signal, its last words); every other reference is described by a new
    child, its own problem included (each reference once failed alike, none named)."""
    write_module(tmp_path, "killer", "import os, sys\nsys.stderr.write('bye\\n')\nos._exit(9)\n")
    write_module(tmp_path, "segv", "import ctypes\nctypes.string_at(0)\n")
    write_module(tmp_path, "fine", "def ok(x: int) -> int:\n    return x\n")
    refs = ["fine:ok", "fine:missing", "killer:f", "segv:f", "json:dumps"]
    found = inspect_functions(refs, tmp_path).functions
    assert found["killer:f"].error == (
        "cannot import module 'killer': importing it ended the process (exit status 9); "
        "its last output: bye"
    )
    assert (found["segv:f"].error or "").startswith(
        "cannot import module 'segv': importing it killed the process (SIGSEGV)"
    )
    assert found["fine:ok"].error is None and found["fine:ok"].parameters is not None
    assert found["fine:missing"].error == "module 'fine' has no attribute 'missing'"
    assert found["json:dumps"].error is None


def test_a_module_hanging_at_import_is_named_when_the_time_runs_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference still importing when the time runs out says so; the others say they
    were not checked (not that they failed to import)."""
    monkeypatch.setattr(_pyfunc, "TIMEOUT_S", 3.0)
    write_module(tmp_path, "hangs", "import time\ntime.sleep(60)\n")
    found = inspect_functions(["hangs:f", "json:dumps"], tmp_path).functions
    assert found["hangs:f"].error == (
        "cannot import module 'hangs': it was still importing when the 3s for importing "
        "the action modules ran out"
    )
    assert found["json:dumps"].error == (
        "not checked: the 3s for importing the action modules ran out while 'hangs' was importing"
    )


def test_a_child_failing_after_every_reference_blames_none_of_them(tmp_path: Path) -> None:
    """A child that ends badly once every reference was described (an ``atexit`` hook of
    user code) fails each reference with its last words, naming none as the cause."""
    write_module(
        tmp_path, "late", "import atexit, os\natexit.register(os._exit, 4)\ndef f(): ...\n"
    )
    found = inspect_functions(["late:f", "json:dumps"], tmp_path).functions
    assert all(
        (info.error or "").startswith("importing the action modules failed")
        for info in found.values()
    )


def test_the_child_gets_a_minimal_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Server secrets in the environment are not visible to user code at import time."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-server-only")
    write_module(
        tmp_path,
        "envcheck",
        "import os\nif 'OPENAI_API_KEY' in os.environ:\n    raise RuntimeError('leaked')\n"
        "def f():\n    pass\n",
    )
    assert inspect_functions(["envcheck:f"], tmp_path).functions["envcheck:f"].error is None


def test_no_references_means_no_child() -> None:
    """With no Python actions nothing is started and the result is empty."""
    found = inspect_functions([], Path("/nonexistent"))
    assert (found.functions, found.files) == ({}, [])


def test_stale_bytecode_is_never_used_or_written(tmp_path: Path) -> None:
    """An edit keeping size and mtime (a fast checkout) is seen; no __pycache__ is written."""
    import os
    import py_compile

    path = tmp_path / "samesize.py"
    path.write_text("def f(a: int) -> int:\n    return a\n", encoding="utf-8")
    stat = path.stat()
    py_compile.compile(str(path))  # a cache as an earlier, writing import would leave
    path.write_text("def f(b: int) -> int:\n    return b\n", encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    info = inspect_functions(["samesize:f"], tmp_path).functions["samesize:f"]
    assert info.parameters is not None and list(info.parameters["properties"]) == ["b"]
    write_module(tmp_path, "fresh", "def g() -> None:\n    pass\n")
    inspect_functions(["fresh:g"], tmp_path)
    assert not any((tmp_path / "__pycache__").glob("fresh*.pyc"))


class Address(msgspec.Struct):
    city: str
    zip: str = ""


class Customer(msgspec.Struct):
    name: str
    address: Address


def test_msgspec_struct_arguments_describe_themselves() -> None:
    """A msgspec Struct argument becomes its own JSON Schema, with nested refs inlined."""
    schema, optional = type_schema(Customer)
    assert optional is False
    assert schema["properties"]["address"]["properties"]["city"] == {"type": "string"}
    assert schema["required"] == ["name", "address"]
    assert "$ref" not in str(schema)


@dataclasses.dataclass
class Window:
    start: datetime.date
    days: int = 1


def test_dataclass_arguments_become_objects() -> None:
    """A dataclass argument is an object whose fields without defaults are required."""
    assert type_schema(Window) == (
        {
            "type": "object",
            "properties": {
                "start": {"type": "string", "format": "date"},
                "days": {"type": "integer"},
            },
            "required": ["start"],
        },
        False,
    )


def test_only_a_function_taking_kwargs_accepts_unknown_arguments(tmp_path: Path) -> None:
    """Inferred schemas refuse extra arguments unless the function has ``**kwargs``."""
    write_module(
        tmp_path,
        "introspect_mod_kw",
        "def closed(x: int) -> int:\n    return x\n\n"
        "def open_(x: int, **rest: int) -> int:\n    return x\n",
    )
    found = inspect_functions(["introspect_mod_kw:closed", "introspect_mod_kw:open_"], tmp_path)
    assert found.functions["introspect_mod_kw:closed"].parameters["additionalProperties"] is False
    assert "additionalProperties" not in found.functions["introspect_mod_kw:open_"].parameters


def test_positional_only_parameters_are_reported_or_left_out(tmp_path: Path) -> None:
    """Calls pass arguments by name: a required positional-only parameter is a load error,
    an optional one is left out of the schema.

    `math:sqrt` (signature `(x, /)`) used to validate, infer `{x: ...}`, and
    then fail every call with "takes no keyword arguments".
    """
    write_module(
        tmp_path,
        "posonly_mod",
        "def scaled(value: float, /, *, unit: str = 'm') -> str:\n"
        "    return f'{value}{unit}'\n"
        "def opt(factor: float = 2.0, /, unit: str = 'm') -> str:\n"
        "    return f'{factor}{unit}'\n",
    )
    found = inspect_functions(["math:sqrt", "posonly_mod:scaled", "posonly_mod:opt"], tmp_path)
    sqrt = found.functions["math:sqrt"]
    assert sqrt.error is not None and "positional-only" in sqrt.error and "'x'" in sqrt.error
    assert "'value'" in (found.functions["posonly_mod:scaled"].error or "")
    opt = found.functions["posonly_mod:opt"]
    assert opt.error is None
    assert opt.parameters == {
        "type": "object",
        "properties": {"unit": {"type": "string", "default": "m"}},
        "additionalProperties": False,
    }


def test_bytes_that_are_not_utf8_on_the_child_output_are_tolerated(tmp_path: Path) -> None:
    """A module writing raw bytes to stdout/stderr at import is described, not a crash.

    The child's output was decoded strictly: `os.write(1, b"\\xff")` in an
    action module made `gateway validate` end in a UnicodeDecodeError traceback.
    """
    write_module(
        tmp_path,
        "rawbytes_mod",
        "import os\nos.write(1, b'\\xff\\xfe')\nos.write(2, b'\\xff')\n"
        "def go(x: int) -> int:\n    return x\n",
    )
    info = inspect_functions(["rawbytes_mod:go"], tmp_path).functions["rawbytes_mod:go"]
    assert info.error is None
    assert info.parameters is not None and "x" in info.parameters["properties"]
    write_module(tmp_path, "rawfail_mod", "import os\nos.write(2, b'\\xff bad')\nos._exit(3)\n")
    failed = inspect_functions(["rawfail_mod:go"], tmp_path).functions["rawfail_mod:go"]
    assert failed.error is not None and "bad" in failed.error


def test_a_non_finite_default_is_left_out_not_a_crash(tmp_path: Path) -> None:
    """`max_price: float = float("inf")` loads; JSON has no Infinity, so the default is omitted.

    The child wrote `Infinity` into its JSON answer and the parent's decoder
    raised, so one such default crashed every load of the set.
    """
    write_module(
        tmp_path,
        "inf_mod",
        "def shop(max_price: float = float('inf'), limit: float = 1.5) -> str:\n    return ''\n",
    )
    info = inspect_functions(["inf_mod:shop"], tmp_path).functions["inf_mod:shop"]
    assert info.error is None
    assert info.parameters == {
        "type": "object",
        "properties": {
            "max_price": {"type": "number"},
            "limit": {"type": "number", "default": 1.5},
        },
        "additionalProperties": False,
    }
