"""YAML documents with the line and column of every node, and ``${VAR}`` interpolation.

Private to ``gateway.manifests``. PyYAML composes each document into a node
tree (with the C parser when available); we walk the tree once to build plain
Python values and, at the same time, a ``Locator`` that maps every JSON path
(``("actions", 2)``) to the 1-based position of its value and, for mapping
entries, of its key. Interpolation happens in the same walk, on string scalars
only, and records which paths came from which variables so that an error about
such a value never prints it back. After a syntax error, reading resumes at the
next ``---`` line, so the documents after a broken one are still read.

Hostile input is bounded before it can hurt the process: nesting deeper than
``MAX_DEPTH`` is an error (PyYAML's C composer recurses on the C stack and a
few hundred kilobytes of ``[[[[`` would crash the whole server with a
segmentation fault, so text that could nest that deep is checked on the event
stream before it is composed), and aliases may expand to at most
``MAX_ALIAS_NODES`` nodes and ``MAX_ALIAS_CHARS`` characters of scalars (and
keys) per file (a "billion laughs" file of ten lines, or a 100 KB string used
through a thousand aliases, would otherwise take the loader's memory and time
once the values are copied or encoded).

Imports only PyYAML and the standard library.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import re
from collections.abc import Mapping
from typing import Any

import yaml

__all__ = [
    "Locator",
    "Path_",
    "RawDocument",
    "YamlError",
    "format_path",
    "parse_path",
    "read_documents",
    "redact",
]

Path_ = tuple[str | int, ...]
"""A JSON path inside one document: mapping keys and list indexes."""

_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{([A-Za-z0-9_]*)(.?)")
"""``${NAME}``; ``$${`` (a literal ``${``); or a ``${`` that starts neither (groups 2
and 3: the name-like text after it and the character that ends it). Any other ``$``
is kept as written."""
_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
MAX_DEPTH = 100
"""Deepest nesting of collections in a document (real manifests need a few dozen)."""
MAX_ALIAS_NODES = 200_000
"""Nodes that aliases (and ``<<`` merges) may add to one file once expanded."""
MAX_ALIAS_CHARS = 4_000_000
"""Characters of scalars and keys that aliases (and ``<<`` merges) may add to one file."""
# A scalar this long or longer is charged when an alias reuses it: a shorter one (an alias
# takes 3 characters at least, `*a,`) adds at most 5 times the file's size.
_SHARED_SCALAR = 16
_MIN_REDACTED = 4  # shortest variable value ``Locator.redact`` hides
_C_SAFE_DEPTH = 2_000  # far below where the C composer overflows an 8 MB stack (~20,000)


class YamlError(Exception):
    """The file is not well-formed YAML; carries a 1-based position.

    ``documents`` holds the documents of the file read anyway (before the error,
    and after it: see ``read_documents``), so one broken document does not hide
    the names its neighbours declare, nor their own problems; ``more``, the
    file's later errors. ``resumable`` is false for an error that refuses the
    rest of the file (the alias budget, nesting too deep).
    """

    def __init__(self, message: str, line: int, col: int, *, resumable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.col = col
        self.resumable = resumable
        self.documents: list[RawDocument] = []
        self.more: list[YamlError] = []


class Locator:
    """Positions of the nodes of one document, by JSON path.

    Attributes:
        start: position of the document's first node.
        values: path -> (line, col) of the value node at that path.
        keys: path -> (line, col) of the mapping key naming that path.
        interpolated: path -> names of the variables substituted into it.
        missing: (path, variable) for every ``${VAR}`` whose variable is unset.
        plain: path -> the text written for a scalar YAML read as something other
            than a string (``NO`` read as false, ``1.10`` as 1.1), so that an error
            can quote what was written.
        malformed: (path, line in the value, what follows ``${`` up to the character
            that ends a name, that character) for every ``${`` that is neither
            ``${NAME}`` nor ``$${`` (``${PASS:-x}``, ``${ KEY }``): kept as written.
        blocks: path -> (line, col) of the first content line of a literal ``|``
            block scalar, so "line 3 of this SQL" can become a file line.
        substituted: the values variables put into this document, so that
            ``redact`` can keep them out of any message about it.
        short: variable -> its value, for values of 1 to ``_MIN_REDACTED`` - 1
            characters: too short to mask (``redact`` and every masking leave them
            alone), so the loader warns where they go (never printed).
    """

    __slots__ = (
        "blocks",
        "interpolated",
        "keys",
        "malformed",
        "missing",
        "plain",
        "short",
        "start",
        "substituted",
        "values",
    )

    def __init__(self, start: tuple[int, int]) -> None:
        self.start = start
        self.values: dict[Path_, tuple[int, int]] = {}
        self.blocks: dict[Path_, tuple[int, int]] = {}
        self.keys: dict[Path_, tuple[int, int]] = {}
        self.interpolated: dict[Path_, tuple[str, ...]] = {}
        self.missing: list[tuple[Path_, str]] = []
        self.malformed: list[tuple[Path_, int, str, str]] = []
        self.plain: dict[Path_, str] = {}
        self.substituted: set[str] = set()
        self.short: dict[str, str] = {}

    def value(self, path: Path_) -> tuple[int, int]:
        """Position of the value at ``path``, or of its nearest located ancestor."""
        for i in range(len(path), 0, -1):
            pos = self.values.get(path[:i])
            if pos is not None:
                return pos
        return self.start

    def key(self, path: Path_) -> tuple[int, int]:
        """Position of the key naming ``path`` (falls back to the value position)."""
        pos = self.keys.get(path)
        return pos if pos is not None else self.value(path)

    def inner(self, path: Path_, line: int) -> tuple[int, int]:
        """Position of ``line`` (1-based) inside the string at ``path``.

        Exact for literal block scalars (``|`` keeps one source line per text
        line); any other string gives the position of the value itself.
        """
        block = self.blocks.get(path)
        if block is None or line < 1:
            return self.value(path)
        return (block[0] + line - 1, block[1])

    def redact(self, message: str) -> str:
        """``message`` with every value a variable put into this document replaced by ``***``.

        A safety net under the checks that quote what they found (an unknown
        kind, action, database...): whichever quotes an interpolated value,
        the value is never printed back. Values shorter than ``_MIN_REDACTED``
        are left alone (replacing every "1" would garble messages, and such
        a value is no secret).
        """
        return redact(message, self.substituted)

    def secret(self, path: Path_) -> bool:
        """Whether the value at ``path`` (or anything under it) came from a variable."""
        n = len(path)
        return any(p[:n] == path for p in self.interpolated)


class RawDocument:
    """One YAML document before decoding: its data, where it is, and its node positions."""

    __slots__ = ("data", "file", "index", "locator")

    def __init__(self, file: str, index: int, data: Any, locator: Locator) -> None:
        self.file = file
        self.index = index
        self.data = data
        self.locator = locator


MAX_SYNTAX_ERRORS = 20
"""Syntax errors read past in one file; after the last, the rest of the file is not read."""

_DOCUMENT_START = re.compile(r"\n---(?=[ \t\n\r\x85\u2028\u2029]|\Z)")
"""``---`` at the start of a line (after a ``\\n``, a literal the regex finds fast): YAML
forbids it inside any value, so it starts a document. One after a lone ``\\r``, NEL or
U+2028/9 is not resumed at."""


def read_documents(text: str, file: str, environ: Mapping[str, str]) -> list[RawDocument]:
    """Parse every document of ``text`` (empty documents are skipped).

    After a syntax error, reading resumes at the next line starting a document
    (``---``), so the documents after a broken one are read too, at their own
    lines: their names count and their problems are reported in the same run.
    Each part read is checked for nesting depth before it is composed, and the
    alias budget is the whole file's.

    A byte order mark starting a line after the first is an error at its line
    (``_line_boms``).

    Raises:
        YamlError: on a syntax error, with its position, the documents read
            anyway and the file's later errors (``more``).
    """
    if _LINE_BOM.search(text) is not None:
        raise _line_boms(text, file, environ)
    lines = text.splitlines()
    deep = _may_nest_deep(text, lines)  # a bound for every part too: each is a suffix
    walker = _Walker(None, environ, lines)
    docs: list[RawDocument] = []
    errors: list[YamlError] = []
    start, index = 0, 0  # where the part read begins (a line start), its first document
    while True:
        # Blank lines before the part keep PyYAML's line numbers those of the file.
        part = text if not start else "\n" * _breaks(text, 0, start) + text[start:]
        index, error = _read_part(part, file, walker, docs, index, deep=deep)
        if error is None:
            break
        errors.append(error)
        resume = _resume_at(text, error.line, start)
        if not error.resumable or resume is None or len(errors) >= MAX_SYNTAX_ERRORS:
            break
        start = resume
    if errors:
        first = errors[0]
        first.documents, first.more = docs, errors[1:]
        raise first
    return docs


_LINE_BOM = re.compile("[\n\r\x85\u2028\u2029]\ufeff")
"""A byte order mark at the start of any line but the first (files joined with ``cat``)."""


def _line_boms(text: str, file: str, environ: Mapping[str, str]) -> YamlError:
    """The error for the byte order marks starting lines of ``text`` after the first.

    The documents are read without them, so the ones around still count (their
    names, their own problems); each mark is an error at its line (the first
    ``MAX_SYNTAX_ERRORS``), sorted with the syntax errors of what is read.
    """
    errors = [
        YamlError(
            "a byte order mark (U+FEFF, invisible) starts this line: remove it (joining "
            "files saved with one puts it there); YAML allows one only at the file's start",
            *_offset_pos(text, found.start() + 1, chars=True),
        )
        for found in itertools.islice(_LINE_BOM.finditer(text), MAX_SYNTAX_ERRORS)
    ]
    try:
        docs = read_documents(_LINE_BOM.sub(lambda m: m.group(0)[:-1], text), file, environ)
    except YamlError as exc:
        errors += [exc, *exc.more]
        docs = exc.documents
    errors.sort(key=lambda e: (e.line, e.col))
    first = errors[0]
    first.documents, first.more = docs, errors[1:]
    return first


def _resume_at(text: str, line: int, after: int) -> int | None:
    """Where the first document starting on or after ``line`` (1-based) and past the
    offset ``after`` (a line start) begins, if one does."""
    pos, seen = after, 1 + _breaks(text, 0, after)  # the line at pos
    while (found := _DOCUMENT_START.search(text, pos)) is not None:
        start = found.start() + 1
        seen += _breaks(text, pos, start)
        if start > after and seen >= line:
            return start
        pos = start
    return None


def _breaks(text: str, start: int, end: int) -> int:
    """The line breaks in ``text[start:end]`` as PyYAML counts them (``\\r\\n`` once)."""
    count = text.count
    return (
        count("\n", start, end)
        + count("\r", start, end)
        - count("\r\n", start, end)
        + count("\x85", start, end)
        + count("\u2028", start, end)
        + count("\u2029", start, end)
    )


def _read_part(
    part: str, file: str, walker: _Walker, docs: list[RawDocument], index: int, *, deep: bool
) -> tuple[int, YamlError | None]:
    """Append the documents of ``part`` to ``docs`` up to its first error.

    ``deep``: the part may nest too deep for the composer (``_may_nest_deep``).
    Returns the index of the next document and that error, if any.
    """
    try:
        if deep:
            _check_depth(part)
    except YamlError as exc:
        exc.resumable = False  # a part nested this deep is hostile: read no further
        return index, exc
    loader = _Loader(part)
    walker.loader = loader
    walker.part = part
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node guards it
                break
            locator = Locator(_pos(node))
            data = walker.document(node, locator)
            if data is not None:
                docs.append(RawDocument(file, index, data, locator))
            index += 1
    except YamlError as exc:
        return index, exc
    except yaml.reader.ReaderError as exc:
        # A control character: PyYAML's text has no mark, an offset and a second line.
        return index, YamlError(
            f"invalid YAML: unacceptable character #x{exc.character:04x}: {exc.reason}",
            *_offset_pos(part, exc.position),
        )
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        return index, YamlError(f"invalid YAML: {problem}", line, col)
    except yaml.YAMLError as exc:
        return index, YamlError(f"invalid YAML: {' '.join(str(exc).split())}", 1, 1)  # one line
    finally:
        loader.dispose()
    return index, None


def _alias_at(text: str, anchored: tuple[int, int], use: int) -> tuple[str, tuple[int, int]] | None:
    """The name and position of the ``use``-th alias (the last if fewer) of the value
    anchored at ``anchored`` in ``text``, if that value has an anchor.

    Walks the events (no recursion, no composing); only called once a budget is past.
    """
    loader = _Loader(text)
    name: str | None = None
    aliases: list[tuple[int, int]] = []
    try:
        while loader.check_event():
            event = loader.get_event()
            anchor = getattr(event, "anchor", None)
            if anchor is None:
                continue
            if isinstance(event, yaml.AliasEvent):
                if anchor == name:
                    aliases.append(_pos(event))
                    if len(aliases) >= use:
                        break
            elif _pos(event) == anchored:
                name, aliases = anchor, []
            elif anchor == name:
                break  # redefined: later aliases name another value
    except yaml.YAMLError:
        pass
    finally:
        loader.dispose()
    if name is None or not aliases:
        return None
    return name, aliases[min(use, len(aliases)) - 1]


def _pos(node: yaml.Node | yaml.Event) -> tuple[int, int]:
    mark = node.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _offset_pos(text: str, offset: int, *, chars: bool = False) -> tuple[int, int]:
    """1-based line and column of a reader error's offset (bytes of UTF-8 for the C
    reader) or, with ``chars``, of a character offset."""
    if _Loader is not yaml.SafeLoader and not chars:
        offset = len(text.encode("utf-8")[:offset].decode("utf-8", errors="ignore"))
    start = text.rfind("\n", 0, offset) + 1
    return (text.count("\n", 0, offset) + 1, offset - start + 1)


def _too_deep(where: yaml.Node | yaml.Event) -> YamlError:
    return YamlError(f"collections nested deeper than {MAX_DEPTH} levels", *_pos(where))


def _may_nest_deep(text: str, lines: list[str]) -> bool:
    """Whether ``text`` (or any part of it) could nest deep enough to need ``_check_depth``.

    Block nesting needs indentation (at most two levels per column) and flow
    nesting an opening bracket each, so this cheap bound clears almost every
    real file.
    """
    widest = max(map(len, lines), default=0)
    return 2 * (widest + 2) + text.count("[") + text.count("{") > _C_SAFE_DEPTH


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` before the C composer recurses into it.

    The text is walked as events (which the parser produces without
    recursion) up to its first syntax error, which is where the composer
    stops too; the error is left for the real parse to report.

    Raises:
        YamlError: at the first collection nested too deep.
    """
    loader = _Loader(text)
    depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _too_deep(event)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return
    finally:
        loader.dispose()


class _Walker:
    """Builds plain values from a node tree, recording positions as it goes.

    One walker reads every document of a file, so the alias budget is the file's.
    """

    def __init__(self, loader: Any, environ: Mapping[str, str], lines: list[str]) -> None:
        self.loader = loader
        self.locator = Locator((1, 1))
        self.environ = environ
        self.lines = lines
        self.active: set[int] = set()
        self.built: set[int] = set()  # collections of this document already walked once
        self.explicit: dict[int, set[int]] = {}  # mapping -> ids of the keys written in it
        self.scalars: set[int] = set()  # long scalars of this document already walked once
        self.uses: dict[int, int] = {}  # anchored node -> times an alias has reused it
        self.expanding = 0  # > 0 while walking a collection a second time (an alias)
        self.alias_nodes = 0
        self.alias_chars = 0
        self.alias_root: yaml.Node | None = None  # the anchored value being expanded
        self.part = ""  # the text being read (the file, or what follows a syntax error)

    def document(self, node: yaml.Node, locator: Locator) -> Any:
        """The plain value of one document's root node (positions go to ``locator``)."""
        self.locator = locator
        self.built.clear()
        self.scalars.clear()
        self.uses.clear()
        self.explicit.clear()
        return self.build(node, ())

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.locator.values[path] = _pos(node)
        if self.expanding:
            self.charge(1, len(node.value) if isinstance(node, yaml.ScalarNode) else 0)
        elif isinstance(node, yaml.ScalarNode) and len(node.value) >= _SHARED_SCALAR:
            # An alias of a scalar adds no node but can add its whole text, every time.
            if id(node) in self.scalars:
                self.alias_root = node
                self.uses[id(node)] = self.uses.get(id(node), 0) + 1
                self.charge(0, len(node.value))
            self.scalars.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            raise YamlError("recursive YAML alias", *_pos(node))
        if len(self.active) >= MAX_DEPTH:
            raise _too_deep(node)
        again = id(node) in self.built
        self.built.add(id(node))
        if again and not self.expanding:
            self.alias_root = node
            self.uses[id(node)] = self.uses.get(id(node), 0) + 1
        self.expanding += again
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
        finally:
            self.active.discard(id(node))
            self.expanding -= again
        raise YamlError(f"unsupported YAML node {node.tag}", *_pos(node))  # pragma: no cover

    def mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        explicit = self.explicit.get(id(node))
        if explicit is None:
            # Flatten once: it rewrites the node in place, so walking it again
            # (an alias) must still know which keys were written and which merged.
            explicit = {id(k) for k, _ in node.value}
            self.explicit[id(node)] = explicit
            self.loader.flatten_mapping(node)  # resolves `<<` merge keys in place
            # Merged entries are copies an alias brought in: a chain of merges grows
            # quadratically, so they count against the alias budget too.
            merged_keys = [k for k, _ in node.value if id(k) not in explicit]
            self.charge(len(merged_keys), sum(len(str(k.value)) for k in merged_keys), node)
        result: dict[str, Any] = {}
        merged: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlError("mapping keys must be plain strings", *_pos(key_node))
            if key_node.tag != _STR:
                self.construct(key_node)  # an unknown or unfitting tag is still an error
            # JSON keys are strings: keep the text written, so `on:` or `null:` (a
            # bool and a null to YAML 1.1) stay "on" and "null", not "True" and "None".
            key = key_node.value
            if id(key_node) not in explicit:
                merged.add(key)
            elif key in result and key not in merged:
                raise YamlError(f"duplicate key {key!r}", *_pos(key_node))
            if self.expanding:
                self.charge(0, len(key))
            child = (*path, key)
            self.locator.keys[child] = _pos(key_node)
            result[key] = self.build(value_node, child)
        return result

    def charge(self, nodes: int, chars: int, merging: yaml.Node | None = None) -> None:
        """Count ``nodes`` and ``chars`` that aliases added to the value being expanded
        (``alias_root``), or the ``<<`` merges of ``merging`` added; past either budget,
        refuse the file at the alias (or the merging mapping)."""
        self.alias_nodes += nodes
        self.alias_chars += chars
        if self.alias_nodes > MAX_ALIAS_NODES:
            over = f"{MAX_ALIAS_NODES} nodes"
        elif self.alias_chars > MAX_ALIAS_CHARS:
            over = f"{MAX_ALIAS_CHARS} characters"
        else:
            return
        root = merging or self.alias_root
        where = _pos(root) if root is not None else (1, 1)
        found = None
        if root is not None and merging is None:
            found = _alias_at(self.part, where, self.uses.get(id(root), 1))
        if merging is not None:
            what = "the `<<` merges of this mapping"
        elif found is None:
            what = f"the value at line {where[0]}, used through its aliases or `<<` merges"
        else:
            what = f"the alias *{found[0]} of the value anchored at line {where[0]}"
            where = found[1]
        raise YamlError(
            f"aliases expand to more than {over} in this file ({what}); "
            "write the value out or use it fewer times",
            *where,
            resumable=False,
        )

    def construct(self, node: yaml.ScalarNode) -> Any:
        """PyYAML's value for a tagged or resolved scalar; a misfit tag is a located error.

        ``!!int method`` or ``!!bool maybe`` make the constructors raise plain
        ValueError/KeyError rather than a YAML error.
        """
        try:
            return self.loader.construct_object(node)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise YamlError(
                f"invalid YAML: {node.value!r} is not a valid {tag} value ({type(exc).__name__})",
                *_pos(node),
            ) from None

    def block(self, node: yaml.ScalarNode, path: Path_) -> None:
        first = node.start_mark.line + 1  # 0-based: content starts after the indicator line
        filled = first
        while filled < len(self.lines) and not self.lines[filled].strip():
            filled += 1  # leading blank lines belong to the text; take the indent further down
        if filled < len(self.lines):
            text = self.lines[filled]
            self.locator.blocks[path] = (first + 1, len(text) - len(text.lstrip()) + 1)

    def scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        if node.style == "|":
            self.block(node, path)
        # Strings are most scalars: skip the constructor's bookkeeping for them.
        value = node.value if node.tag == _STR else self.construct(node)
        if isinstance(value, str):
            return self.interpolate(value, path) if "$" in value else value
        if isinstance(value, _dt.date | bytes):
            # JSON has no dates or bytes: keep the text, the schema says if it fits.
            return node.value
        self.locator.plain[path] = node.value
        return value

    def interpolate(self, value: str, path: Path_) -> str:
        used: list[str] = []

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if match.group(2) is not None:
                line = value.count("\n", 0, match.start()) + 1
                self.locator.malformed.append((path, line, match.group(2), match.group(3)))
                return match.group(0)
            if name is None:
                return "${"
            used.append(name)
            found = self.environ.get(name)
            if found is None:
                self.locator.missing.append((path, name))
                return ""
            if len(found) >= _MIN_REDACTED:
                self.locator.substituted.add(found)
            elif found:
                self.locator.short[name] = found
            return found

        result = _VAR.sub(sub, value)
        if used:
            self.locator.interpolated[path] = tuple(used)
        return result


def redact(message: str, values: set[str]) -> str:
    """``message`` with each of ``values`` (as written or as ``repr`` shows it) as ``***``."""
    for value in sorted(values, key=len, reverse=True):
        message = message.replace(value, "***")
        quoted = repr(value)[1:-1]  # as `{value!r}` shows it (escaped quotes, newlines)
        if quoted != value:
            message = message.replace(quoted, "***")
    return message


def format_path(path: Path_) -> str:
    """``("a", 2, "b")`` -> ``a[2].b`` (the form ``Problem.path`` uses)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


_SEGMENT = re.compile(
    r"\.([^.\[\]]+)|\[(\d+)\]|\[(?:'([^']*)'|\"([^\"]*)\")\]|\[\.\.\.\]|^([^.\[\]]+)"
)


def parse_path(text: str) -> Path_:
    """Parse ``a.b[2]``, ``$.a.b[2]`` or ``$["a b"]`` into a path; ``[...]`` stops it."""
    text = text.removeprefix("$")
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        match = _SEGMENT.match(text, pos)
        if match is None or match.group(0) == "[...]":
            break
        name, index, single, double, first = match.groups()
        if index is not None:
            parts.append(int(index))
        elif name is not None and name.isdigit():
            parts.append(int(name))  # `json.items.0`: a list index written dotted
        else:
            parts.append(next(p for p in (name, single, double, first) if p is not None))
        pos = match.end()
    return tuple(parts)
