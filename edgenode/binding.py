"""Statements and parameters as the libsql binding can run them with every integer exact.

The PyPI `libsql` binding (0.1.11) converts each Python int parameter with `extract::<i32>()`,
falling back to `f64`: any integer outside the 32-bit range is bound as REAL, so 2**53 + 1 arrives
as 2**53 and `typeof(?)` says 'real'. No Python type gets an int64 through it. So an integer outside
the 32-bit range is written into the statement as a literal, at the positions SQLite's own
tokenizer reports for its parameter (`StatementAnalyzer.parameter_slots`); the other parameters
stay bound, renumbered `?1..?k`. Each literal is parenthesised: `x - ?` with -5 must not become the
comment `x --5`, and `(-9223372036854775808)` is SQLite's integer minimum, not a REAL.

Reproduction for upstream (libsql 0.1.11):

    import libsql
    conn = libsql.connect(":memory:")
    print(conn.execute("select ?, typeof(?)", (2**53 + 1, 2**53 + 1)).fetchone())
    # (9007199254740992.0, 'real'); sqlite3 and apsw give (9007199254740993, 'integer')

Every front-end that runs statements on a libsql connection (REST reads and writes, Hrana on a
standalone node, local reads on a replica) binds through `for_libsql`. Writes a replica forwards
to its primary travel as Hrana integers and are bound there by apsw, which keeps int64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgenode.analysis import StatementAnalyzer

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def _wide(value: Any) -> bool:
    return type(value) is int and not I32_MIN <= value <= I32_MAX


def for_libsql(analyzer: StatementAnalyzer, sql: str, params: Sequence[Any]) -> tuple[str, list[Any]]:
    """(sql, params) to hand the binding. Unchanged unless an integer needs more than 32 bits.

    `params` are positional, in parameter-index order, already checked against the statement."""
    if not any(_wide(value) for value in params):
        return sql, list(params)
    pieces, slots = analyzer.parameter_slots(sql, len(params))
    out: list[str] = [pieces[0]]
    bound: list[Any] = []
    renumbered: dict[int, int] = {}
    for index, piece in zip(slots, pieces[1:], strict=True):
        value = params[index - 1]
        if _wide(value):
            out.append(f"({int(value)})")
        else:
            number = renumbered.get(index)
            if number is None:
                bound.append(value)
                number = renumbered[index] = len(bound)
            out.append(f"?{number}")
        out.append(piece)
    return "".join(out), bound
