"""Template renders of the http and sql kinds stop at their call's deadline, whatever loops."""

from __future__ import annotations

import tracemalloc

import pytest

from gateway.executors import _templates
from gateway.executors._common import ToolError
from gateway.executors.http import _repeats, _template
from gateway.executors.sql import render_sql

# Nested loops over the model's own list, with no output and no call inside: 9 million
# rounds (about a second) that only the loop itself can notice.
SILENT = (
    "{% for a in xs %}{% for b in xs %}{% if a < b and a > b %}x{% endif %}{% endfor %}{% endfor %}"
)
ITEMS = list(range(3000))


def test_sql_render_stops_in_a_loop_without_output() -> None:
    """A SQL template whose loops print nothing stopped only at a ``{{ }}``: it ran to the end."""
    with pytest.raises(ToolError) as caught:
        render_sql("SELECT 1 " + SILENT, {"xs": ITEMS}, style="qmark", timeout=0.05)
    assert caught.value.error_type == "timeout"
    assert "did not finish within 0.05s" in str(caught.value)


@pytest.mark.parametrize("url", [False, True])
def test_http_render_stops_in_a_loop_without_output(url: bool) -> None:
    """An http template (URL or not) renders under the deadline set around it."""
    with pytest.raises(ToolError) as caught, _templates.deadline(0.05):
        _template(SILENT, url=url).render(xs=ITEMS)
    assert caught.value.error_type == "timeout"


def test_calls_check_the_deadline() -> None:
    """A call made by the template (here a macro calling itself) checks the deadline too."""
    source = (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(depth) }}"
    )
    with pytest.raises(ToolError) as caught, _templates.deadline(0.05):
        _template(source, url=False).render(depth=40)
    assert caught.value.error_type == "timeout"


def test_an_earlier_deadline_wins() -> None:
    """The call's deadline, set first, holds inside a longer one set by a kind."""
    with _templates.deadline(0.01), pytest.raises(ToolError) as caught:
        render_sql("SELECT 1 " + SILENT, {"xs": ITEMS}, style="qmark", timeout=60)
    assert "within 0.01s" in str(caught.value)


def test_loops_render_as_before() -> None:
    """With or without a deadline, loops keep ``loop`` (length, last), filters, else, recursion."""
    source = (
        "{% for x in xs if x > 1 %}{{ x }}/{{ loop.length }}{% if loop.last %}!{% endif %} "
        "{% else %}none{% endfor %}|{% for k, v in d.items() %}{{ k }}={{ v }}{% endfor %}|"
        "{% for n in tree recursive %}{{ n.v }}{{ loop(n.kids) }}{% endfor %}"
    )
    args = {"xs": [1, 2, 3], "d": {"a": 1}, "tree": [{"v": 1, "kids": [{"v": 2, "kids": []}]}]}
    expected = "2/2 3/2! |a=1|12"
    assert _template(source, url=False).render(args) == expected
    with _templates.deadline(5):
        assert _template(source, url=False).render(args) == expected
        assert _template("{% for x in xs %}{% endfor %}none", url=False).render(xs=[]) == "none"


@pytest.mark.parametrize(
    ("texts", "repeats"),
    [
        (("https://x/{{ city }}", "{{ a | upper }}-{{ b.c ~ 'd' }}"), False),
        (("{% if a %}{{ a | join(',') }}{% endif %}",), False),
        (("ok", "{% for x in xs %}{{ x }}{% endfor %}"), True),
        (("{{ range(n) | list }}",), True),
        (("{{ s.ljust(9) }}",), True),
        (("{{ pad * width }}",), True),
        (("{{ 7 ** n }}",), True),
        (("{{ '%*s' % (w, x) }}",), True),
        (("{{ s | center(n) }}",), True),
        (("{{ x | urlencode }}", "{{ x | default('') }}"), False),
        (("{% if %}",), True),  # does not parse: the render raises, in the thread
    ],
)
def test_only_templates_with_loops_or_calls_render_in_a_thread(
    texts: tuple[str, ...], repeats: bool
) -> None:
    """An inline http call renders in a worker thread exactly when a template can repeat
    work (a loop or a call); the others cost their size, and a thread hop costs more."""
    assert _repeats(texts) is repeats


@pytest.mark.parametrize(
    ("source", "args", "size"),
    [
        ("{{ pad * width }}", {"pad": "ab", "width": 10**8}, 2 * 10**8),
        ("{{ width * pad }}", {"pad": ["x"], "width": 10**8}, 8 * 10**8),
        ("{{ 7 ** n }}", {"n": 10**8}, 3 * 10**8 // 8),
        ("{{ '%*s' % (w, 'x') }}", {"w": 10**8}, 10**8),
    ],
)
def test_a_step_an_arguments_value_makes_huge_is_refused(
    source: str, args: dict[str, int], size: int
) -> None:
    """One ``*``, ``**`` or ``%*`` step the deadline cannot interrupt is refused before it
    allocates (an inline render runs in the server, with no memory limit of its own).

    ``size``: bytes the step would allocate. tracemalloc counts every thread of the
    process (a thread an earlier test left finishing, under ``-n 2``), so the peak is
    held to a quarter of that, not to a few megabytes (a fixed 5 MB failed once).
    """
    tracemalloc.start()
    try:
        with pytest.raises(ToolError) as caught:
            _template(source, url=False).render(args)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.error_type == "invalid_template"
    assert peak < size // 4
    with pytest.raises(ToolError):
        render_sql("SELECT " + source, args, style="qmark", timeout=5)


def test_small_repetitions_powers_and_widths_render() -> None:
    """What templates use them for (rules, padding, small powers) renders as before."""
    source = "{{ '-' * 3 }}|{{ 3 * [0] }}|{{ 2 ** 10 }}|{{ '%*s' % (3, 'x') }}|{{ 7 % 4 }}"
    assert (
        _template(source, url=False).render() == "---|[0,0,0]|1024|  x|3"
    )  # a list as compact JSON
