"""PDF text extraction in a child process with limits: ``pdf_pages`` and ``PdfLimits``.

pypdf runs in the process that calls it and cannot be interrupted: a 27 KB
PDF whose page tree names one page (with a stream that inflates to megabytes
of text operators) a thousand times kept a thread busy for hours and grew
the server's memory by gigabytes. So the pages are read by ``_pdf_child.py``,
a fresh interpreter that caps its own address space and CPU time, is killed
at a wall-clock timeout, and refuses more pages or more text than allowed.
Each parse costs an interpreter start (a fraction of a second); it happens
once per content (the index keeps passages by content hash).

Imports msgspec and the standard library only.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import msgspec

__all__ = ["ParseLimitError", "PdfLimits", "pdf_pages"]

_CHILD = Path(__file__).with_name("_pdf_child.py")


class PdfLimits(NamedTuple):
    """What parsing one PDF may cost.

    Attributes:
        timeout: wall-clock seconds (also the child's CPU-seconds limit).
        memory_mb: address space of the child, on top of three times the file's size.
        max_pages: a PDF with more pages is refused.
        max_chars: a PDF with more characters of text is refused.
    """

    timeout: float = 120.0
    memory_mb: int = 1024
    max_pages: int = 10_000
    max_chars: int = 32_000_000


class ParseLimitError(ValueError):
    """A knowledge file is over a limit (size, pages, text, memory, time); says which.

    Attributes:
        over: the ``PdfLimits`` fields the PDF is known to need more of, with the
            values it failed within (``{"max_pages": 100}``): the same content
            fails again within the same or smaller values. Empty for a limit of
            pypdf's own, which no ``PdfLimits`` changes.
        transient: the parse was stopped by time or killed (a busy machine, the
            kernel's OOM killer), or its process could not be started (out of
            processes or descriptors), which says little about the next attempt;
            ``over`` then holds the limits it was tried with (``timeout``,
            ``memory_mb``) rather than limits the PDF is known to exceed.
    """

    def __init__(
        self, message: str, *, over: dict[str, float] | None = None, transient: bool = False
    ) -> None:
        super().__init__(message)
        self.over: dict[str, float] = over or {}
        self.transient = transient


class _Result(msgspec.Struct):
    pages: list[str] | None = None
    error: str | None = None
    limit: bool = False
    over: str | None = None  # which PdfLimits field, for a limit of ours


def pdf_pages(data: bytes, limits: PdfLimits) -> list[str]:
    """The text of each page of the PDF ``data``, extracted in a child process.

    Raises:
        ParseLimitError: the PDF is over ``limits`` (the message names the limit).
        ValueError: the PDF cannot be read (pypdf's error, as text).
    """
    memory = (limits.memory_mb << 20) + 3 * len(data)
    cpu = max(1, math.ceil(limits.timeout))
    command = [
        sys.executable,
        "-I",  # no PYTHON* variables, no user site, no script directory on sys.path
        str(_CHILD),
        str(memory),
        str(cpu),
        str(limits.max_pages),
        str(limits.max_chars),
    ]
    # No server variable but the loader's path: its secrets have no business in a PDF parser.
    env = {k: os.environ[k] for k in ("LD_LIBRARY_PATH",) if k in os.environ}
    try:
        child = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    except OSError as exc:  # out of processes, descriptors or memory: says nothing of the PDF
        raise ParseLimitError(
            f"the PDF parser could not be started: {exc.strerror or type(exc).__name__}",
            transient=True,
        ) from None
    # ``with``: its pipes are closed however this ends. A timeout can come before all
    # of ``data`` was written (communicate writes 512 bytes per turn): the second
    # communicate below does not close stdin, which was left open (a ResourceWarning).
    with child:
        try:
            out, _ = child.communicate(data, timeout=limits.timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise ParseLimitError(
                f"parsing the PDF took longer than the limit of {limits.timeout:g} s",
                over={"timeout": limits.timeout},
                transient=True,
            ) from None
        except BaseException:
            child.kill()
            raise
    try:
        result = msgspec.json.decode(out, type=_Result)
    except msgspec.DecodeError:
        # Killed by its CPU limit (SIGXCPU), or out of memory where even the error
        # could not be written: both are the PDF's cost, not a broken file.
        raise ParseLimitError(
            f"the PDF parser was stopped (status {child.returncode}): the PDF needs "
            f"more than {limits.timeout:g} s of CPU or {memory >> 20} MB of memory",
            over={"timeout": limits.timeout, "memory_mb": limits.memory_mb},
            transient=True,
        ) from None
    if result.error is None:
        return result.pages or []
    if not result.limit:
        raise ValueError(result.error)
    field = result.over if result.over in PdfLimits._fields else None
    over = {} if field is None else {field: float(getattr(limits, field))}
    raise ParseLimitError(result.error, over=over)
