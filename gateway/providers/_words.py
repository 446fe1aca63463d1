"""Word handling for the offline model: tokenizing, stemming, and argument candidates.

Private to ``gateway.providers``; pure functions over strings, importing
nothing from the gateway. ``offline.py`` documents the algorithm these
helpers implement (it is a contract: change both together).
"""

from __future__ import annotations

import re

import msgspec

__all__ = [
    "STOPWORDS",
    "Candidates",
    "candidates",
    "content_words",
    "entity_words",
    "identifier_words",
    "stem",
    "words",
]

_STOPWORD_TEXT = """
    a an the is are was were be been being am do does did doing done of to in on at for about
    with by from and or but nor what whats which who whom whose when where why how can could
    would should will shall may might must i im me my mine we us our you your yours he she they
    them their it its this that these those there here please tell show give get let know want
    need like some any all s t d ll re ve m hi hello hey thanks thank has have had just also so
    if then than as up out into over not no yes named called say says said one ok okay
    today tonight now currently right
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
"""Words that never count when matching a message against tools."""

_WORD = re.compile(r"[A-Za-z]+|\d+")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_QUOTED = re.compile(
    r"\"([^\"]+)\"|“([^”]+)”|«([^»]+)»|`([^`]+)`|(?:^|(?<=\s))'([^']+)'(?=$|[\s.,;:!?])"
)
_CODE_BLOCK = re.compile(r"```[A-Za-z0-9_+-]*\n?(.*?)```", re.DOTALL)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
# Starts only where a local part starts: inside a long run of word characters with no
# "@" after it, every start would scan the rest of the run (quadratic).
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_ID_LIKE = re.compile(r"\b(?=[A-Za-z0-9_-]*\d)[A-Za-z][A-Za-z0-9_-]*\b")
_EXPRESSION = re.compile(r"[-+(]*\d[\d.\s]*(?:(?:\*\*|//|[-+*/%^])[\s(]*\d[\d.\s)]*)+")
_MATH_RUN = re.compile(r"[-+(]*\d[\d.\s()*/%^+-]*")
_MAX_EXPRESSION = 200
"""Characters of a run of digits, operators and spaces searched for an expression."""
_URL = re.compile(r"https?://\S+")
_PREPOSITION = re.compile(r"\b(?:in|for|about)\s+(.+)", re.IGNORECASE)
_CLAUSE_END = re.compile(r"[.,;:!?\n]")


def _split_identifier(text: str) -> str:
    return _CAMEL.sub(r"\1 \2", text).replace("_", " ").replace("-", " ")


def stem(word: str) -> str:
    """Reduce a lowercase word to a crude stem: plurals become singular.

    ``cities`` -> ``city``, ``boxes`` -> ``box``, ``orders`` -> ``order``;
    words ending in ``ss``, ``us`` or ``is`` (``address``, ``status``) stay.
    """
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """Stemmed, lowercase content words of ``text`` (identifiers split, stopwords dropped).

    Numbers and one-letter words are dropped: they never select a tool.
    """
    result: list[str] = []
    for raw in _WORD.findall(_split_identifier(text)):
        low = raw.lower()
        if low.isdigit() or len(low) < 2 or low in STOPWORDS:
            continue
        result.append(stem(low))
    return result


def identifier_words(name: str) -> list[str]:
    """The lowercase words of an identifier: ``orderId`` and ``order_id`` give ``order, id``."""
    return [w.lower() for w in _WORD.findall(_split_identifier(name))]


def entity_words(text: str) -> set[str]:
    """Words standing for typed values in ``text``: ``email`` for an address, ``url`` for a link.

    So "orders of alice@example.com" matches a tool described with "email".
    """
    found = set()
    if _EMAIL.search(text):
        found.add("email")
    if _URL.search(text):
        found.add("url")
    return found


def content_words(text: str) -> list[str]:
    """Content words of ``text`` in their original case (stopwords and numbers dropped)."""
    return [
        raw
        for raw in _WORD.findall(text)
        if not raw.isdigit() and len(raw) > 1 and raw.lower() not in STOPWORDS
    ]


class Candidates(msgspec.Struct, kw_only=True):
    """Values found in a message that may fill tool arguments, best first per kind."""

    quoted: list[str] = []
    code: list[str] = []
    phrases: list[str] = []
    numbers: list[tuple[str, str]] = []
    """(number text, the word just before it, lowercase)"""
    emails: list[str] = []
    ids: list[str] = []
    expressions: list[str] = []
    raw_words: list[str] = []
    """Every word of the message, lowercase (for enum matching)."""


def _phrases(text: str) -> list[str]:
    """The words after "in", "for" or "about", up to the end of the clause.

    Leading and trailing stopwords are trimmed: "weather in New York today?"
    gives "New York today"; "orders for the customer Alice" gives "customer Alice".
    """
    found: list[str] = []
    for match in _PREPOSITION.finditer(text):
        clause = _CLAUSE_END.split(match.group(1), maxsplit=1)[0]
        tokens = clause.split()
        while tokens and tokens[0].lower().strip("'\"") in STOPWORDS:
            tokens.pop(0)
        while tokens and tokens[-1].lower().strip("'\"") in STOPWORDS:
            tokens.pop()
        phrase = " ".join(tokens).strip("'\"")
        if phrase and phrase not in found:
            found.append(phrase)
    return found


def candidates(message: str) -> Candidates:
    """Extract every argument candidate from a user message."""
    quoted = [next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(message)]
    code = [m.group(1).strip() for m in _CODE_BLOCK.finditer(message)]
    numbers: list[tuple[str, str]] = []
    # The word before each number, in one pass over both (not a scan of the prefix per
    # number, which is quadratic in a message of many numbers).
    word_matches = _WORD.finditer(message)
    upcoming = next(word_matches, None)
    last_word = ""
    for match in _NUMBER.finditer(message):
        while upcoming is not None and upcoming.end() <= match.start():
            last_word = upcoming.group(0)
            upcoming = next(word_matches, None)
        numbers.append((match.group(0), last_word.lower()))
    # An expression lies inside a run of the characters it may hold; only runs with an
    # operator, and only their first _MAX_EXPRESSION characters, are searched: the
    # pattern backtracks, so over a 4,000-character run of digits (or "1 1 1 ... +")
    # it took most of a second, on the event loop.
    expressions = [
        m.group(0).strip()
        for run in _MATH_RUN.finditer(message)
        if any(op in run.group(0) for op in "+-*/%^")
        for m in _EXPRESSION.finditer(run.group(0)[:_MAX_EXPRESSION])
        if any(op in m.group(0) for op in "+-*/%^")
    ]
    return Candidates(
        quoted=[q.strip() for q in quoted if q.strip()],
        code=code,
        phrases=_phrases(message),
        numbers=numbers,
        emails=_EMAIL.findall(message),
        ids=[i for i in _ID_LIKE.findall(message) if not i.isdigit()],
        expressions=expressions,
        raw_words=[w.lower() for w in _WORD.findall(message)],
    )
