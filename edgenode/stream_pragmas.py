"""Per-stream connection PRAGMAs, as sqld allows them on a Hrana stream: `foreign_keys` and
`defer_foreign_keys` (sqld's query analysis accepts these two with a value and refuses every other
connection setting; libsql-server/src/query_analysis.rs).

On sqld each stream has its own connection, so `PRAGMA foreign_keys=off` holds for that stream's
later statements (npm `@libsql/client`'s `migrate()` relies on it). The node's connections are
shared by streams, so a stream's settings are kept with the stream and put on whichever connection
runs its statement, then the connection's own values come back before anyone else uses it:

- outside a transaction, the setting is recorded on the stream (nothing runs);
- every statement of that stream runs with `enter` before and `leave` after it, in the connection's
  process: `enter` sets the stream's values (only outside a transaction: SQLite ignores
  `foreign_keys` inside one), `leave` restores the connection's own values once no transaction is
  open, so a transaction begun with `foreign_keys=off` keeps it to its COMMIT or ROLLBACK and no
  longer;
- inside a transaction the PRAGMA runs as is on the connection the stream holds: `foreign_keys` is a
  no-op there (as in SQLite, as on sqld) and `defer_foreign_keys` ends with the transaction.

`defer_foreign_keys` set outside a transaction applies to the stream's next transaction (SQLite
clears it when a transaction ends); the stream forgets it then.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import apsw

from edgenode.analysis import Analysis

STREAM_PRAGMAS = ("foreign_keys", "defer_foreign_keys")
Settings = tuple[tuple[str, int], ...]

_scratch_lock = threading.Lock()
_scratch: apsw.Connection | None = None


_READ = re.compile(r"^\s*PRAGMA\s+(?:main\s*\.\s*)?(?:foreign_keys|defer_foreign_keys)\s*;?\s*$", re.IGNORECASE)


def reads_stream_pragma(sql: str) -> bool:
    """`PRAGMA foreign_keys` (no value): a stream reads its own setting."""
    return _READ.match(sql) is not None


class StreamPragmaError(ValueError):
    """A stream PRAGMA with a value SQLite does not read as a boolean."""


def stream_pragma(analysis: Analysis) -> tuple[str, int] | None:
    """(name, 0/1) when the statement sets a per-stream PRAGMA, else None."""
    setting = analysis.pragma_setting
    if setting is None or setting[0] not in STREAM_PRAGMAS:
        return None
    name, value = setting
    return name, _as_sqlite_reads(name, value)


def _as_sqlite_reads(name: str, value: str) -> int:
    """The value exactly as SQLite parses it (on, yes, true, 1, 'off', ...): set it on a scratch
    connection and read it back."""
    global _scratch
    with _scratch_lock:
        if _scratch is None:
            _scratch = apsw.Connection(":memory:")
        try:
            _scratch.execute(f"PRAGMA {name} = {value}")
            got = _scratch.execute(f"PRAGMA {name}").fetchall()[0][0]
            _scratch.execute(f"PRAGMA {name} = 0")
        except apsw.Error as exc:
            raise StreamPragmaError(f"PRAGMA {name}: {exc}") from exc
    return 1 if got else 0


class StreamSettings:
    """One stream's settings (the session's side)."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}

    def set(self, name: str, value: int) -> None:
        self._values[name] = value

    def transaction_ended(self) -> None:
        self._values.pop("defer_foreign_keys", None)

    def items(self) -> Settings:
        return tuple(self._values.items())

    def statements(self) -> list[str]:
        """The PRAGMAs that give a fresh connection (a primary stream) these settings."""
        return [f"PRAGMA {name} = {value}" for name, value in self._values.items()]


# -- in the connection's process -----------------------------------------------------------------

_own: dict[str, int] = {}  # this process's connection's values, read before a stream first changed them
_changed = False


def enter(conn: Any, settings: Settings) -> None:
    global _changed
    if not settings or conn.in_transaction:
        return
    for name, value in settings:
        if name not in _own:
            # `leave` restored everything after the last call, so this is the connection's own value.
            _own[name] = int(conn.execute(f"PRAGMA {name}").fetchall()[0][0])
        conn.execute(f"PRAGMA {name} = {int(value)}")
    _changed = True


def leave(conn: Any) -> None:
    global _changed
    if not _changed or conn.in_transaction:
        return
    for name, value in _own.items():
        conn.execute(f"PRAGMA {name} = {value}")
    _changed = False
