"""YAML reading: positions of every node, multi-document files, and ${VAR} interpolation."""

from __future__ import annotations

import pytest

from gateway.manifests._yaml import YamlError, format_path, parse_path, read_documents

TEXT = """\
# comment line
kind: action
name: demo
nested:
  list:
    - first
    - key: value
      other: [1, 2]
flow: {a: 1, b: "two"}
"""


def test_every_key_and_value_has_its_line_and_column() -> None:
    """Values and keys at any depth, block or flow style, map to their exact 1-based position."""
    [doc] = read_documents(TEXT, "f.yaml", {})
    loc = doc.locator
    assert loc.start == (2, 1)
    assert loc.values[("kind",)] == (2, 7)
    assert loc.keys[("name",)] == (3, 1)
    assert loc.values[("nested", "list", 0)] == (6, 7)
    assert loc.values[("nested", "list", 1, "key")] == (7, 12)
    assert loc.keys[("nested", "list", 1, "other")] == (8, 7)
    assert loc.values[("nested", "list", 1, "other", 1)] == (8, 18)
    assert loc.values[("flow", "b")] == (9, 17)


def test_unknown_paths_fall_back_to_the_nearest_located_ancestor() -> None:
    """A path below a scalar or a missing key locates at its closest existing parent."""
    [doc] = read_documents(TEXT, "f.yaml", {})
    assert doc.locator.value(("nested", "list", 1, "missing")) == (7, 7)
    assert doc.locator.key(("nested", "absent")) == (5, 3)
    assert doc.locator.value(("nothing",)) == (2, 1)


def test_multi_document_files_skip_empty_documents() -> None:
    """Documents separated by --- come back in order; empty ones are skipped, indexes kept."""
    text = "kind: a\n---\n---\n# only a comment\n---\nkind: b\n"
    docs = read_documents(text, "f.yaml", {})
    assert [(d.index, d.data, d.locator.start) for d in docs] == [
        (0, {"kind": "a"}, (1, 1)),
        (3, {"kind": "b"}, (6, 1)),
    ]


def test_plain_scalars_keep_their_yaml_types_and_dates_stay_text() -> None:
    """Integers, floats, booleans and null resolve as YAML says; dates stay the text written."""
    [doc] = read_documents("i: 3\nf: 1.5\nb: true\nn: null\nd: 2026-01-02\ns: '7'\n", "f", {})
    assert doc.data == {"i": 3, "f": 1.5, "b": True, "n": None, "d": "2026-01-02", "s": "7"}


def test_mapping_keys_are_the_text_written() -> None:
    """Keys such as `on`, `no`, `null` or `0x10` stay as written, not "True", "None" or "16".

    JSON keys are strings: a `parameters` property or an HTTP query key named
    `on` must reach the model and the request as `on`.
    """
    text = "on: 1\nno: 2\nnull: 3\n~: 4\n0x10: 5\n1: 6\n'yes': 7\n"
    [doc] = read_documents(text, "f", {})
    assert doc.data == {"on": 1, "no": 2, "null": 3, "~": 4, "0x10": 5, "1": 6, "yes": 7}
    assert doc.locator.keys[("on",)] == (1, 1)


def test_duplicate_keys_are_found_by_the_text_written() -> None:
    """`on` and `yes` are different keys; the same text twice is still a duplicate."""
    [doc] = read_documents("on: 1\nyes: 2\n", "f", {})
    assert doc.data == {"on": 1, "yes": 2}
    with pytest.raises(YamlError, match="duplicate key 'on'"):
        read_documents("on: 1\non: 2\n", "f", {})


def test_merge_keys_are_resolved() -> None:
    """`<<: *anchor` merges the anchored mapping, with explicit keys winning."""
    [doc] = read_documents("base: &b {x: 1, y: 2}\nitem:\n  <<: *b\n  y: 3\n", "f", {})
    assert doc.data["item"] == {"x": 1, "y": 3}


@pytest.mark.parametrize(
    ("text", "line", "col", "message"),
    [
        ("a: [1,\nb: 2\n", 3, 1, "invalid YAML"),
        ("a: 1\nb: 2\na: 3\n", 3, 1, "duplicate key 'a'"),
        ("a: !custom x\n", 1, 4, "invalid YAML"),
        ("? [1, 2]\n: x\n", 1, 3, "mapping keys must be plain strings"),
        ("a: *missing\n", 1, 4, "invalid YAML"),
    ],
)
def test_syntax_errors_are_located(text: str, line: int, col: int, message: str) -> None:
    """Malformed YAML raises YamlError at the offending position, never a PyYAML traceback."""
    with pytest.raises(YamlError) as info:
        read_documents(text, "f.yaml", {})
    assert (info.value.line, info.value.col) == (line, col)
    assert message in info.value.message


def test_interpolation_replaces_variables_in_strings_only() -> None:
    """${VAR} is replaced in string values, $${ writes ${, keys and numbers are untouched."""
    text = 'url: "http://${HOST}:${PORT}/v1"\nlit: "$${HOST} costs $5"\nport: 8080\n${HOST}: x\n'
    [doc] = read_documents(text, "f", {"HOST": "db.internal", "PORT": "5432"})
    assert doc.data == {
        "url": "http://db.internal:5432/v1",
        "lit": "${HOST} costs $5",
        "port": 8080,
        "${HOST}": "x",
    }
    assert doc.locator.interpolated == {("url",): ("HOST", "PORT")}
    assert doc.locator.missing == []


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("Prices in US$$, e.g. $$5.", "Prices in US$$, e.g. $$5."),
        ("SELECT $$a$$ || $tag$b$tag$ AS v", "SELECT $$a$$ || $tag$b$tag$ AS v"),
        ("^[A-Z]+$$", "^[A-Z]+$$"),
        ("$${HOST} and $$${HOST}", "${HOST} and $${HOST}"),
    ],
)
def test_only_a_doubled_dollar_before_a_brace_is_an_escape(written: str, read: str) -> None:
    """Every `$$` became `$` (README documents only `$${`): "US$$" lost a dollar and SQL's
    dollar quoting (`$$a$$`) broke; only `$${` writes a literal `${`."""
    [doc] = read_documents(f"v: {written!r}\n", "f", {"HOST": "h"})
    assert doc.data == {"v": read}
    assert doc.locator.interpolated == {}


def test_missing_variables_are_recorded_at_their_node() -> None:
    """An unset variable becomes empty text and is recorded with the path of its node."""
    [doc] = read_documents("items:\n  - key: ${NOPE}\n", "f", {})
    assert doc.data == {"items": [{"key": ""}]}
    assert doc.locator.missing == [(("items", 0, "key"), "NOPE")]
    assert doc.locator.secret(("items",)) is True
    assert doc.locator.secret(("other",)) is False


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("a.b[2].c", ("a", "b", 2, "c")),
        ("$.sql.query", ("sql", "query")),
        ("$", ()),
        ("headers.X-Token", ("headers", "X-Token")),
        ("json.items.0.name", ("json", "items", 0, "name")),
        ("$.default_headers[...]", ("default_headers",)),
        ("$['a b'][1]", ("a b", 1)),
    ],
)
def test_parse_path_reads_json_paths(text: str, path: tuple[object, ...]) -> None:
    """msgspec, jsonschema and kind-check paths all parse into the same tuple form."""
    assert parse_path(text) == path


def test_format_path_is_readable() -> None:
    """Problem paths print as a.b[0] with odd keys quoted."""
    assert format_path(("actions", 2)) == "actions[2]"
    assert format_path(("a b", "c")) == "['a b'].c"
    assert format_path(()) == ""


def test_lines_inside_literal_blocks_map_to_file_lines() -> None:
    """Line N of a `|` block (a SQL template) is located at its own file line and indent."""
    text = "sql:\n  query: |\n\n    SELECT 1\n      FROM t\nother: >\n  folded\n"
    [doc] = read_documents(text, "f", {})
    assert doc.data["sql"]["query"] == "\nSELECT 1\n  FROM t\n"
    assert doc.locator.inner(("sql", "query"), 2) == (4, 5)
    assert doc.locator.inner(("sql", "query"), 3) == (5, 5)
    assert doc.locator.inner(("other",), 1) == doc.locator.value(("other",)) == (6, 8)


def test_documents_before_a_syntax_error_are_kept() -> None:
    """A syntax error in the third document keeps the first two for cross-document checks."""
    with pytest.raises(YamlError) as info:
        read_documents("kind: a\n---\nkind: b\n---\nkind: [c\n", "f.yaml", {})
    assert [d.data for d in info.value.documents] == [{"kind": "a"}, {"kind": "b"}]
    assert info.value.line == 6


def test_reading_resumes_at_the_next_document_after_a_syntax_error() -> None:
    """The documents after a broken one are read too, at their own lines; every syntax error
    is raised, the first with the others in ``more``."""
    text = "kind: a\n---\nkind: [b\n---\nkind: c\n---\nkind: {d\n---\r\nkind: e\n"
    with pytest.raises(YamlError) as info:
        read_documents(text, "f.yaml", {})
    assert [(d.data, d.locator.start) for d in info.value.documents] == [
        ({"kind": "a"}, (1, 1)),
        ({"kind": "c"}, (5, 1)),
        ({"kind": "e"}, (9, 1)),
    ]
    assert (info.value.line, [(e.line, "invalid YAML" in e.message) for e in info.value.more]) == (
        4,
        [(8, True)],
    )


def test_a_broken_document_marker_line_is_not_read_twice() -> None:
    """A syntax error on a `---` line resumes at the next marker, not on itself again."""
    with pytest.raises(YamlError) as info:
        read_documents("kind: a\n--- [b\n---\nkind: c\n", "f.yaml", {})
    assert [d.data for d in info.value.documents] == [{"kind": "a"}, {"kind": "c"}]
    assert (info.value.line, info.value.more) == (3, [])


def test_nesting_after_a_syntax_error_is_refused_not_composed() -> None:
    """Past a syntax error the depth check (which stops there) runs again on what is read
    next: 200,000 brackets are a located error, not a crash of the C composer."""
    depth = 200_000
    text = "kind: [a\n---\nkind: b\nx: " + "[" * depth + "]" * depth + "\n---\nkind: c\n"
    with pytest.raises(YamlError) as info:
        read_documents(text, "f.yaml", {})
    assert [e.message for e in info.value.more] == ["collections nested deeper than 100 levels"]
    assert info.value.more[0].line == 4


def test_the_alias_budget_is_the_files_across_syntax_errors() -> None:
    """Reading resumed after a syntax error goes on with the file's alias budget: two
    anchored values each under it but together over it are refused, and past that the
    rest of the file is not read."""
    half = _alias_bomb(5)  # about 111,000 nodes once expanded: under the budget alone
    text = half + "---\nkind: [a\n---\n" + half + "---\nkind: c\n"
    with pytest.raises(YamlError) as info:
        read_documents(text, "f.yaml", {})
    assert len(info.value.documents) == 1
    assert [e.message.split(" (")[0] for e in info.value.more] == [
        "aliases expand to more than 200000 nodes in this file"
    ]


def _alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_quickly_at_the_alias() -> None:
    """Aliases that would expand to billions of nodes are a located error, not a hang."""
    text = _alias_bomb(9)  # 10**9 scalars once expanded
    with pytest.raises(YamlError) as info:
        read_documents(text, "f.yaml", {})
    assert "alias" in info.value.message
    assert info.value.line > 1


def test_aliases_reused_a_reasonable_number_of_times_still_load() -> None:
    """Anchors shared by many documents' worth of values are not mistaken for a bomb."""
    [doc] = read_documents(_alias_bomb(4), "f.yaml", {})
    assert len(doc.data["a3"]) == 10 and doc.data["a3"][9][9][9] == ["x"] * 10


def test_deep_nesting_is_a_located_error() -> None:
    """A document nested deeper than any manifest needs is refused with its position."""
    text = "kind: action\nd: " + "[" * 600 + "]" * 600 + "\n"
    with pytest.raises(YamlError) as info:
        read_documents(text, "f.yaml", {})
    assert "nested" in info.value.message
    assert info.value.line == 2


def test_a_chain_of_aliases_nesting_deeply_is_a_located_error() -> None:
    """Each alias adding one level (a0 in a1 in a2...) cannot exhaust Python's stack."""
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 2000)]
    with pytest.raises(YamlError) as info:
        read_documents("\n".join(lines) + "\n", "f.yaml", {})
    assert "nested" in info.value.message


def test_reasonably_deep_documents_still_load() -> None:
    """Nesting as deep as real JSON Schemas go (dozens of levels) is fine."""
    text = "d: " + "[" * 40 + "]" * 40 + "\n"
    [doc] = read_documents(text, "f.yaml", {})
    depth, node = 0, doc.data["d"]
    while node:
        depth, node = depth + 1, node[0]
    assert depth == 39


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b"])
def test_a_control_character_is_located_on_one_line(char: str) -> None:
    """A stray control character is reported at its line and column, in a one-line message.

    PyYAML's reader error carried a character offset and a second line
    ('in "<unicode string>", position 41'), which split the one-problem-a-line
    output and pointed at 1:1.
    """
    text = f"kind: assistant\nname: a\n\n\ninstructions: ab{char}c\n"
    with pytest.raises(YamlError) as info:
        read_documents(text, "f.yaml", {})
    assert (info.value.line, info.value.col) == (5, 17)
    assert "\n" not in info.value.message
    assert f"#x{ord(char):04x}" in info.value.message


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("a: !!int method\n", "!!int"),
        ("a: !!float abc\n", "!!float"),
        ("a: !!bool maybe\n", "!!bool"),
        ("a: !!timestamp later\n", "!!timestamp"),
        ("!!int key: 1\n", "!!int"),
    ],
)
def test_an_explicit_tag_that_does_not_fit_its_value_is_located(text: str, tag: str) -> None:
    """`!!int method` is a YamlError at the value, not a ValueError out of PyYAML's constructor."""
    with pytest.raises(YamlError) as info:
        read_documents(text, "f.yaml", {})
    assert (info.value.line, info.value.col) == (1, 1 if text.startswith("!!") else 4)
    assert tag in info.value.message


def test_an_alias_of_a_mapping_with_a_merge_and_an_override_loads() -> None:
    """`item: &i {<<: *b, y: 3}` then `*i`: the override is not taken for a duplicate key."""
    text = "base: &b {x: 1, y: 2}\nitem: &i {<<: *b, y: 3}\nother: *i\n"
    [doc] = read_documents(text, "f.yaml", {})
    assert doc.data["item"] == doc.data["other"] == {"x": 1, "y": 3}


def test_a_chain_of_merge_keys_is_counted_against_the_alias_budget() -> None:
    """Each mapping merging the previous one grows quadratically: refused quickly, located.

    Merged scalars escaped the alias budget: 6,000 such lines (200 KB) took a
    minute, and a few hundred KB more would take the loader's memory and hours.
    The 2,000 lines here merge about 2 million entries, 10 times the budget:
    they loaded (slowly) before, and are refused now.
    """
    lines = ["a0: &a0 {x: 1}"] + [f"a{i}: &a{i} {{<<: *a{i - 1}, y{i}: 1}}" for i in range(1, 2000)]
    with pytest.raises(YamlError) as info:
        read_documents("\n".join(lines) + "\n", "f.yaml", {})
    assert "aliases expand" in info.value.message and info.value.line > 1


def test_a_long_string_used_through_many_aliases_is_refused_at_the_alias() -> None:
    """A 50 KB string used through 100 aliases (5 MB once expanded, from a 50 KB file)
    passed the alias budget, which counted nodes (a scalar alias added none): validating
    such a file of 300 KB took 1.2 GB. Characters count now, and the error names the
    alias that went past the budget, the anchor and the budget."""
    text = f'a: &big "{"x" * 50_000}"\nb: [' + ", ".join(["*big"] * 100) + "]\n"
    with pytest.raises(YamlError) as info:
        read_documents(text, "f.yaml", {})
    error = info.value
    assert error.message.startswith(
        "aliases expand to more than 4000000 characters in this file "
        "(the alias *big of the value anchored at line 1)"
    ), error.message
    assert (error.line, error.col) == (2, 5 + 6 * 80)  # the 81st alias passes 4 MB
    assert not error.resumable


def test_a_collection_of_long_strings_used_through_aliases_counts_its_characters() -> None:
    """An anchored list of long strings is charged their text each time an alias reuses it."""
    text = "a: &l [" + ", ".join([f'"{"y" * 10_000}"'] * 10) + "]\n"
    text += "b:\n" + "".join("  - *l\n" for _ in range(50))
    with pytest.raises(YamlError) as info:
        read_documents(text, "f.yaml", {})
    assert "4000000 characters" in info.value.message
    assert "the alias *l of the value anchored at line 1" in info.value.message
    assert info.value.line == 3 + 40  # the 41st use of 100 KB passes 4 MB (the first: line 3)


def test_a_short_string_used_through_very_many_aliases_is_refused() -> None:
    """A 40-character string through 110,000 aliases (330 KB written, 4.4 MB once
    expanded) is refused too: only strings under 16 characters go uncounted."""
    text = f'a: &s "{"y" * 40}"\nb: [' + ",".join(["*s"] * 110_000) + "]\n"
    with pytest.raises(YamlError) as info:
        read_documents(text, "f.yaml", {})
    assert "4000000 characters" in info.value.message
    assert info.value.line == 2


def test_a_long_string_used_through_a_few_aliases_still_loads() -> None:
    """A long shared description reused a few times is not mistaken for a bomb."""
    text = f'a: &d "{"z" * 100_000}"\nb: [*d, *d, *d]\nc: *d\n'
    [doc] = read_documents(text, "f.yaml", {})
    assert doc.data["b"] == [doc.data["a"]] * 3 and doc.data["c"] == doc.data["a"]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_byte_order_mark_starting_a_later_line_is_named(newline: str) -> None:
    """Two files joined with `cat`, the second saved with a BOM: the invisible U+FEFF
    after `---` gave "missing required field 'name', 'url'" or "did not find expected
    key". It is named at its line, and the documents around it are still read."""
    text = newline.join(
        ["\ufeffkind: database", "name: db", "---", "\ufeffkind: database", "name: db2", ""]
    )
    with pytest.raises(YamlError) as info:
        read_documents(text, "f.yaml", {})
    error = info.value
    assert (error.line, error.col) == (4, 1)
    assert error.message.startswith("a byte order mark (U+FEFF, invisible) starts this line")
    assert error.more == []
    assert [d.data for d in error.documents] == [
        {"kind": "database", "name": "db"},
        {"kind": "database", "name": "db2"},
    ]
