"""``stop`` sequences on the OpenAI-compatible endpoint: a streamed answer is cut exactly
where the whole one is, however the model split it into deltas.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from gateway.api.openai_compat import _cut, _StopCut


def test_a_stop_sequence_split_across_deltas_is_still_found() -> None:
    cutter = _StopCut(("END",))
    out = [cutter.feed(piece) for piece in ("the answer E", "N", "D and more", " after")]
    assert "".join(out) + cutter.flush() == "the answer "
    assert cutter.hit


def test_without_a_match_everything_comes_out() -> None:
    cutter = _StopCut(("\n\nObservation:",))
    out = [cutter.feed(piece) for piece in ("a\n", "\nObs", "erved")]
    assert "".join(out) + cutter.flush() == "a\n\nObserved"


@given(
    text=st.text(alphabet="ab\n", max_size=40),
    stops=st.lists(st.text(alphabet="ab\n", min_size=1, max_size=4), max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_streamed_equals_whole(text: str, stops: list[str], cuts: list[int]) -> None:
    bounds = sorted({0, len(text), *(min(c, len(text)) for c in cuts)})
    cutter = _StopCut(tuple(stops))
    streamed = "".join(cutter.feed(text[a:b]) for a, b in itertools.pairwise(bounds))
    streamed += cutter.flush()
    firsts = [text.find(s) for s in stops if s in text]
    expected = text[: min(firsts)] if firsts else text
    assert streamed == _cut(text, tuple(stops)) == expected
