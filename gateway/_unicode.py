"""Text made encodable as UTF-8 (``valid_text``) and shown on one line (``printable``).

A Python ``str`` may hold surrogate code points (U+D800..U+DFFF) that UTF-8,
and so JSON, the run's log, the stores and SSE/WebSocket frames, cannot carry:
``json`` (which the openai SDK decodes streams with) turns a lone ``\\ud83d``
escape into one, and a file name that is not UTF-8 (``os.listdir``,
``os.fsdecode``) holds one. ``valid_text`` is the one repair, used by the
engine (model text, tool calls, tool output, provider errors) and by the
sandbox (a call's result frame). ``fs_text`` shows a file name that is not
UTF-8 with its stray bytes escaped (``ok\\xff.yaml``), where the repair would
hide which file it is. ``printable`` escapes what a terminal or a
line-oriented reader would obey: the CLI's messages and every human-format
log line (``gateway.api.logs``) go through it. Imports nothing of the
gateway, so the sandbox worker stays light to import.
"""

from __future__ import annotations

__all__ = ["fs_text", "printable", "valid_text"]


def valid_text(text: str) -> str:
    """``text`` with surrogate pairs joined and each lone surrogate replaced by U+FFFD.

    Two adjacent surrogates that form a pair (an emoji split into UTF-16 units)
    become the one character they stand for; any other surrogate becomes U+FFFD.
    Text that is already valid comes back as the same object, at the cost of one
    UTF-8 encode.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # "utf-16" (BOM and all), not "utf-16-le": CPython codes "utf-16" itself, while
        # "utf-16-le" imports ``encodings.utf_16_le`` on first use, which a sandboxed
        # child (another uid, Landlock) may not be able to read: the call would fail.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def fs_text(name: str) -> str:
    """A path from the OS as valid text: each byte that is not UTF-8 shown as ``\\xff``.

    ``os.listdir`` and ``os.walk`` decode such bytes to lone surrogates (Python's
    ``surrogateescape``), which no UTF-8 output (a terminal, JSON, the log) can
    carry. Valid names come back as the same object.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no OS byte decodes to
            return valid_text(name)
        return raw.decode("utf-8", "backslashreplace")
    return name


def printable(text: str, limit: int | None = None) -> str:
    """``text`` on one line a terminal or a CI log cannot obey, cut to ``limit``.

    File names, parse errors and anything a client sent may hold a newline and a
    GitHub workflow command (``::error``, a mask), or terminal escapes: every
    character ``str.isprintable`` refuses (C0 and C1 controls, DEL, U+2028 and
    U+2029, bidirectional overrides, lone surrogates...) is shown escaped
    (``\\n``, ``\\x1b``, ``\\u2028``), as ``repr`` would. Text that needs nothing
    comes back as the same object.
    """
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"
