"""``valid_text``: the one surrogate repair the engine and the sandbox share."""

from __future__ import annotations

import subprocess
import sys

from gateway._unicode import valid_text


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
