"""``valid_text``: the one surrogate repair the engine and the sandbox share; ``printable``:
the one escaping of the CLI's messages and the keyvalue log lines."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gateway._unicode import fs_text, printable, valid_text


def test_pairs_are_joined_and_lone_surrogates_replaced() -> None:
    """A split pair becomes its character, any other surrogate U+FFFD; NUL and BOMs stay."""
    assert (
        valid_text("smile \ud83d\ude00 and \udc00 \ud800") == "smile \U0001f600 and \ufffd \ufffd"
    )
    assert valid_text("\ufeff\x00\ud800") == "\ufeff\x00\ufffd"
    clean = "already \U0001f600 fine"
    assert valid_text(clean) is clean


def test_the_repair_imports_no_codec_module() -> None:
    """The repair imports nothing when first used: a sandboxed child (another uid, Landlock)
    may not read the standard library, and a lazily imported codec failed its call."""
    probe = (
        "import sys; from gateway._unicode import valid_text; before = set(sys.modules); "
        "valid_text('\\ud800 \\ud83d\\ude00'); print(sorted(set(sys.modules) - before))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[31mred\x00", "\\x1b[31mred\\x00"),  # C0
        ("a\r\nb\tc", "a\\r\\nb\\tc"),
        ("del\x7f nel\x85 csi\x9b", "del\\x7f nel\\x85 csi\\x9b"),  # DEL, C1
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),  # what JavaScript breaks at
        ("rtl\u202eoverride", "rtl\\u202eoverride"),  # text shown reversed
        ("lone \ud800", "lone \\ud800"),
    ],
)
def test_printable_escapes_what_a_terminal_or_a_line_reader_obeys(text: str, shown: str) -> None:
    """C0 and C1 controls, DEL, the Unicode line and paragraph separators, bidirectional
    overrides and lone surrogates are shown escaped, as ``repr`` shows them."""
    assert printable(text) == shown


def test_printable_keeps_text_and_cuts_to_the_limit() -> None:
    """Non-ASCII letters, emoji and backslashes stay as they are (the same object when
    nothing needs escaping); ``limit`` cuts the escaped text, ending it with an ellipsis."""
    clean = 'Zürich 東京 \U0001f600 "quoted" back\\slash'
    assert printable(clean) is clean
    assert printable("\x1b" * 10, limit=9) == "\\x1b\\x1b…"


def test_fs_text_escapes_the_bytes_of_a_name_that_are_not_utf8() -> None:
    """A name from the OS that is not UTF-8 shows its stray bytes as ``\\xff``, keeps its
    valid characters, and a valid name comes back as the same object."""
    name = "café.yaml"
    assert fs_text(name) is name
    assert fs_text(os.fsdecode(b"caf\xc3\xa9-\xff.yaml")) == "café-\\xff.yaml"
    assert fs_text("\ud83d") == "\ufffd"  # a surrogate no byte decodes to: replaced
