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

# How `edgenode primary` fills Hrana's `replication_index` (an opaque u64): bit 63 marks the value as
# ours, bits 32-62 hold the generation and bits 0-31 the commit frame, so the numbers order like the
# positions. sqld's own value is a plain frame number of another log and never has bit 63 set.
_POSITION_TAG = 1 << 63
_FRAME_BITS = 32


def replication_index(generation: int, frame: int) -> int:
    if not (0 <= generation < 1 << 31 and 0 <= frame < 1 << _FRAME_BITS):
        raise ValueError(f"position ({generation}, {frame}) does not fit a replication index")
    return _POSITION_TAG | generation << _FRAME_BITS | frame


def position_of_index(index: int | None) -> WritePosition | None:
    """The (generation, frame) an `edgenode primary` replication index stands for; None for anything
    else (no index, or another server's, whose meaning is unknown here)."""
    if index is None or not index & _POSITION_TAG or index >= 1 << 64:
        return None
    index &= ~_POSITION_TAG
    return WritePosition(index >> _FRAME_BITS, index & ((1 << _FRAME_BITS) - 1))


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
