"""What the data layer returns: query rows, write outcomes and where a write became visible."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Params = Sequence[Any] | dict[str, Any] | None
Statement = tuple[str, Params]
ChangeListener = Callable[[], Awaitable[None]]
# What a connection owner needs of a prepared write (small to pickle): sql, bound params, is_dml, is_insert.
PlainStatement = tuple[str, list[Any], bool, bool]


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]
    decltypes: list[str | None] = field(default_factory=list)


@dataclass
class ExecResult:
    rows_affected: int
    last_insert_rowid: int | None


@dataclass(frozen=True, slots=True)
class WritePosition:
    """Where a committed write is visible on this node (replica mode); both None on a standalone
    node, and on a replica whose read-your-writes sync did not finish in time."""

    generation: int | None = None
    frame: int | None = None


NO_POSITION = WritePosition()


@dataclass
class WriteResult:
    results: list[ExecResult]
    position: WritePosition = NO_POSITION
    replayed: bool = False  # an Idempotency-Key's recorded outcome, nothing applied now
    write_id: str | None = None  # local-first: the queued write's id (GET /api/v1/outbox/{write_id})
    pending: bool = False  # local-first: committed here, not yet decided by the primary


@dataclass
class StatementOutcome:
    """One statement's full result, as a protocol backend (Hrana) reports it."""

    columns: list[str]
    rows: list[list[Any]]
    rows_affected: int
    last_insert_rowid: int | None
