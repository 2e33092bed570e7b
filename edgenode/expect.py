"""`expect_rows`: a REST write statement may state how many rows it must change where it commits.

The check is plain SQL that travels with the write (docs/local-first.md §5), so every write path
runs it where the write commits, with no new protocol: on a standalone node, on the primary a
forward-mode node sends the write to, locally and then on the primary for a local-first write (a
mismatch there makes the queued write a conflict, whose local effects vanish at convergence).

`expand` puts, before the write's statements, a TEMP view with an INSTEAD OF trigger (IF NOT EXISTS:
temp objects are per connection, each connection that runs the write creates them once), and after
each statement that asks for the check a GUARD: `INSERT INTO temp._edgenode_expect VALUES (changes(), n)`.
The trigger RAISEs (ABORT: the write fails, its transaction or savepoint is rolled back) when the two
differ. Inserting into a view writes no row: `last_insert_rowid()` and `total_changes()` stay as the
statement left them; only `changes()` becomes 0, so a step that records the statement's outcome after
the guard takes the count from the guard's argument (`idempotency.RECORD_EXPECTED`).

`results` and `error` map the expanded write back to the client's statements.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from edgenode.errors import DatabaseError, SQLError

MESSAGE = "expect_rows: the statement changed a different number of rows than expect_rows"
VIEW = "CREATE TEMP VIEW IF NOT EXISTS _edgenode_expect (got, want) AS SELECT NULL, NULL"
TRIGGER = (
    "CREATE TEMP TRIGGER IF NOT EXISTS _edgenode_expect_check INSTEAD OF INSERT ON _edgenode_expect "
    f"WHEN NEW.got IS NOT NEW.want BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
)
GUARD = "INSERT INTO temp._edgenode_expect (got, want) VALUES (changes(), ?)"
PRELUDE_SQL = frozenset((VIEW, TRIGGER))
_INDEX = re.compile(r"^statements\[(\d+)\]: ")


class ExpectRowsMismatch(DatabaseError):
    status = 409
    code = "expect_rows_mismatch"
    hrana_code = "SQLITE_CONSTRAINT"


def guard_want(statements: Sequence[tuple[str, Any]], index: int) -> int | None:
    """When statement `index + 1` is a guard: the row count it checks statement `index` against."""
    if index + 1 < len(statements) and statements[index + 1][0] == GUARD:
        args = statements[index + 1][1]
        return int(args[0])
    return None


class Expanded:
    """A write with its checks: `statements` to run; positions of the client's statements in it."""

    def __init__(self, statements: Sequence[tuple[str, Any]], expects: Sequence[int | None]) -> None:
        self.original = len(statements)
        self.expects = list(expects)
        if all(e is None for e in expects):
            self.statements = list(statements)
            self.positions = list(range(len(statements)))
            return
        self.statements = [(VIEW, None), (TRIGGER, None)]
        self.positions = []
        for (sql, params), want in zip(statements, expects, strict=True):
            self.positions.append(len(self.statements))
            self.statements.append((sql, params))
            if want is not None:
                self.statements.append((GUARD, [want]))

    @property
    def checked(self) -> bool:
        return len(self.statements) != self.original

    def results(self, results: Sequence[Any]) -> list[Any]:
        return [results[i] for i in self.positions] if self.checked else list(results)

    def client_index(self, index: int) -> int:
        """The client's statement an index of the expanded write stands for (a guard: its statement)."""
        return max((n for n, at in enumerate(self.positions) if at <= index), default=0)

    def error(self, exc: DatabaseError) -> DatabaseError:
        """The error as the client sent the write: its statement numbers, a mismatch as 409."""
        if not self.checked:
            return exc
        message = str(exc)
        match = _INDEX.match(message)
        index = getattr(exc, "index", None)
        expanded = int(match.group(1)) if match else index
        client = self.client_index(expanded) if expanded is not None else None
        rest = message[match.end() :] if match else message
        if MESSAGE in message:
            want = self.expects[client] if client is not None else None
            return ExpectRowsMismatch(
                f"statements[{client}]: changed a different number of rows than its expect_rows ({want}) on the "
                "database that commits the write; nothing of the write was applied (re-read the rows and retry)",
                index=client,
            )
        if client is None or not isinstance(exc, SQLError):
            return exc
        return SQLError(f"statements[{client}]: {rest}", index=client)
