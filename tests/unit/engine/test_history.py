"""Repairing and trimming the history sent to the model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.engine.history import INTERRUPTED_OUTPUT, repair, trim_history
from gateway.providers.base import ChatMessage, ToolCall


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def asks(*ids: str) -> ChatMessage:
    return ChatMessage(
        role="assistant", tool_calls=[ToolCall(id=i, name="lookup", arguments="{}") for i in ids]
    )


def result(call_id: str, text: str = "ok") -> ChatMessage:
    return ChatMessage(role="tool", content=text, tool_call_id=call_id, name="lookup")


def answer(text: str) -> ChatMessage:
    return ChatMessage(role="assistant", content=text)


def test_repair_keeps_a_valid_history_unchanged() -> None:
    """A history whose calls all have results, in their order, is returned as is."""
    history = [user("q"), asks("a", "b"), result("a"), result("b"), answer("done")]
    assert repair(history) == history


def test_repair_puts_results_in_the_order_of_their_calls() -> None:
    """Results stored as the calls finished are sent in the order the model made the calls."""
    history = [user("q"), asks("a", "b", "c"), result("c"), result("a"), answer("done")]
    repaired = repair(history)
    assert [m.tool_call_id for m in repaired[2:5]] == ["a", "b", "c"]
    assert repaired[3].content == INTERRUPTED_OUTPUT


def test_repair_answers_interrupted_calls_and_drops_orphans() -> None:
    """Calls without results get an 'interrupted' result; results without calls are dropped."""
    history = [result("zz"), user("q"), asks("a", "b"), result("a"), user("next"), asks("c")]
    repaired = repair(history)
    assert [(m.role, m.tool_call_id) for m in repaired] == [
        ("user", None),
        ("assistant", None),
        ("tool", "a"),
        ("tool", "b"),
        ("user", None),
        ("assistant", None),
        ("tool", "c"),
    ]
    assert repaired[3].content == INTERRUPTED_OUTPUT


def test_repair_drops_duplicate_results() -> None:
    """A second result for the same call (a retried write) is dropped."""
    history = [asks("a"), result("a", "first"), result("a", "second")]
    assert [m.content for m in repair(history)[1:]] == ["first"]


def test_trim_by_message_count_never_splits_a_call_from_its_results() -> None:
    """Trimming by count drops whole turns: a tool call goes with all its results."""
    history = [user("old"), asks("a", "b"), result("a"), result("b"), answer("x"), user("new")]
    trimmed = trim_history(history, max_messages=4, max_chars=10**6)
    assert trimmed == [answer("x"), user("new")]  # the 3-message call unit did not fit
    trimmed = trim_history(history, max_messages=5, max_chars=10**6)
    assert trimmed == history[1:]
    assert trimmed[0].tool_calls and trimmed[1].role == "tool"


def test_trim_by_size_keeps_the_newest_turn_even_when_too_big() -> None:
    """The char budget drops old turns; the newest message is always kept."""
    history = [user("a" * 500), answer("b" * 500), user("c" * 2000)]
    assert trim_history(history, max_messages=100, max_chars=600) == [history[2]]
    assert trim_history(history, max_messages=100, max_chars=3100) == history


def test_trim_starting_inside_a_tool_group_drops_the_orphaned_results() -> None:
    """A window that starts after a call (as stored history with a limit can) drops its results."""
    history = [result("a"), result("b"), answer("x"), user("y")]
    assert trim_history(history, max_messages=10, max_chars=10**6) == [answer("x"), user("y")]


def _valid(messages: list[ChatMessage]) -> bool:
    """Every tool call is directly followed by one result each; no result stands alone."""
    pending: set[str] = set()
    for message in messages:
        if message.role == "tool":
            if message.tool_call_id not in pending:
                return False
            pending.discard(message.tool_call_id or "")
            continue
        if pending:
            return False
        if message.role == "assistant":
            pending = {call.id for call in message.tool_calls}
    return not pending


_message = st.one_of(
    st.builds(user, st.text(max_size=30)),
    st.builds(answer, st.text(max_size=30)),
    st.lists(st.sampled_from("abcdef"), min_size=1, max_size=3, unique=True).map(
        lambda ids: asks(*ids)
    ),
    st.builds(result, st.sampled_from("abcdefz"), st.text(max_size=30)),
)


@given(
    st.lists(_message, max_size=30),
    st.integers(min_value=1, max_value=12),
    st.integers(min_value=1, max_value=400),
)
def test_trimmed_history_is_always_valid_and_a_suffix(
    history: list[ChatMessage], max_messages: int, max_chars: int
) -> None:
    """For any stored history and budget, what the model gets is valid, and the newest part
    (after the newest user message, which is always kept, however far back)."""
    trimmed = trim_history(history, max_messages=max_messages, max_chars=max_chars)
    repaired = repair(history)
    assert _valid(trimmed)
    assert _valid(repaired)
    if repaired:
        assert trimmed  # the newest turn is always kept
    questions = [i for i, m in enumerate(repaired) if m.role == "user"]
    if questions and repaired[questions[-1]] is not trimmed[0]:
        assert any(m is repaired[questions[-1]] for m in trimmed)
    if trimmed != repaired[len(repaired) - len(trimmed) :]:
        # Not a suffix: the newest user message, then a suffix that does not reach it.
        assert trimmed[0] is repaired[questions[-1]]
        assert trimmed[1:] == repaired[len(repaired) - len(trimmed) + 1 :]
        assert len(repaired) - len(trimmed) + 1 > questions[-1] + 1


def test_the_newest_question_is_kept_with_tool_results_over_the_budget() -> None:
    """A turn of calls whose results alone fill the budget still goes with its question."""
    history = [user("old"), answer("x"), user("why?"), asks("a", "b"), result("a"), result("b")]
    assert trim_history(history, max_messages=3, max_chars=10**6) == history[2:]
    big = [user("why?"), asks("a"), result("a", "r" * 5000)]
    assert trim_history(big, max_messages=100, max_chars=1000) == big
