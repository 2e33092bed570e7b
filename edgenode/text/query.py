"""The query language: FTS5's own (phrases in double quotes, `word*` prefixes, AND/OR/NOT, NEAR,
parentheses, `column:` filters), checked before it reaches the engine so that a bad query gets a
400 that says where; and free text in the `plain` syntax (rows with every word) or the `any`
syntax (rows with any of the words, those with more and rarer ones ranked first); common English
words (STOPWORDS) are left out of free text unless it has no other words.

The check is a lexer over FTS5's tokens (barewords, strings, operators); it finds what FTS5
would refuse with only "syntax error near X" (an unterminated string, an unbalanced parenthesis,
a character that is neither part of a word nor an operator) and names its position. The engine
parses what passes; its remaining complaints (a misplaced operator, an unknown column) are
mapped back to a position by `engine_error`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgenode.api.errors import ApiError
from edgenode.text.models import MAX_QUERY_CHARS

MAX_TOKENS = 256
# Common English words left out of free-text queries (`plain`, `any`) unless nothing else is left.
STOPWORDS = frozenset(
    """a an and are as at be by for from has have in into is it its of on or that the this to was were will
    with""".split()
)
_OPERATORS = set("()*:^+{},-")


@dataclass(frozen=True)
class Token:
    text: str
    start: int


def _bareword_char(ch: str) -> bool:
    # FTS5 barewords: codepoints above 127, ASCII letters and digits, '_', and 0x1A.
    return ord(ch) > 127 or (ch.isascii() and (ch.isalnum() or ch == "_")) or ch == "\x1a"


def _fail(message: str) -> ApiError:
    return ApiError(400, "invalid_query", message)


def _around(q: str, at: int) -> str:
    """The text around `at` in a long query; nothing more for a short one, whose message already
    names the position (it used to say '... at character 0 ... (at character 0)')."""
    snippet = q[max(0, at - 10) : at + 10]
    return f" (...{snippet}...)" if len(q) > 20 else ""


def tokens(q: str) -> list[Token]:
    """FTS5's tokens of `q`, or a 400 naming the first character FTS5 cannot read."""
    out: list[Token] = []
    depth: list[int] = []
    i = 0
    while i < len(q):
        ch = q[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            j = i + 1
            while True:
                j = q.find('"', j)
                if j < 0:
                    raise _fail(f"q: the string opened by the quote at character {i} is not closed{_around(q, i)}")
                if q.startswith('""', j):  # "" inside a string is a literal quote
                    j += 2
                    continue
                break
            out.append(Token(q[i : j + 1], i))
            i = j + 1
        elif _bareword_char(ch):
            j = i
            while j < len(q) and _bareword_char(q[j]):
                j += 1
            out.append(Token(q[i:j], i))
            i = j
        elif ch in _OPERATORS:
            if ch == "(":
                depth.append(i)
            elif ch == ")":
                if not depth:
                    raise _fail(f"q: the parenthesis at character {i} closes nothing{_around(q, i)}")
                depth.pop()
            out.append(Token(ch, i))
            i += 1
        else:
            raise _fail(
                f"q: {ch!r} at character {i} is not part of the query language; put text with punctuation "
                f'in double quotes, or send "syntax": "plain"{_around(q, i)}'
            )
        if len(out) > MAX_TOKENS:
            raise _fail(f"q has more than {MAX_TOKENS} terms and operators")
    if depth:
        raise _fail(f"q: the parenthesis at character {depth[-1]} is not closed{_around(q, depth[-1])}")
    return out


def check(q: str | None, syntax: str) -> str:
    """The FTS5 query to run for `q` in `syntax`; a 400 for anything FTS5 would refuse to read."""
    if q is None or not q.strip():
        raise _fail("q is empty; give the words to search for")
    if len(q) > MAX_QUERY_CHARS:
        raise _fail(f"q is {len(q)} characters long; at most {MAX_QUERY_CHARS}")
    if "\x00" in q:
        raise _fail("q contains a NUL character")
    if syntax in ("plain", "any"):
        return (" " if syntax == "plain" else " OR ").join(f'"{w}"' for w in free_words(q))
    tokens(q)
    return q


def free_words(q: str) -> list[str]:
    """The words a `plain` or `any` query searches for, in order (each a phrase of its own)."""
    words = re.findall(r"\w+", q)
    if not words:
        raise _fail("q has no words to search for")
    # Words in most documents say little about any of them, yet every match is scored: left
    # out, an 'any' query over a 50k-row table is ~8x faster (bench/search.py).
    words = [w for w in words if w.lower() not in STOPWORDS] or words
    if len(words) > MAX_TOKENS:
        raise _fail(f"q has more than {MAX_TOKENS} words")
    return words


_NEAR = re.compile(r'fts5: syntax error near "(.*)"$', re.S)


def engine_error(q: str, message: str) -> ApiError:
    """FTS5's complaint about a query that passed `check`, with the position of what it names."""
    message = message.removeprefix("SQLError: ")
    near = _NEAR.search(message)
    if near is not None:
        what = near.group(1)
        if not what:
            return _fail(f"q: the query ends too early (an operator or column filter without a term after it): {q!r}")
        starts = [t.start for t in tokens(q) if t.text == what]
        at = starts[0] if starts else q.find(what)
        if at >= 0:
            return _fail(f"q: syntax error at character {at}, near {what!r}{_around(q, at)}")
        return _fail(f"q: syntax error near {what!r}")
    if "no such column" in message:
        column = message.rsplit(":", 1)[-1].strip()
        return _fail(f"q: {column!r} in a column filter is not a text column of this collection")
    return _fail(f"q: {message.removeprefix('fts5: ')}")
