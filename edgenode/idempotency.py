"""Idempotent writes: a key recorded with the write, in the same transaction, on the side that commits it.

A write sent with a key (`Idempotency-Key` on `POST /api/v1/execute`) claims the key in
`_edgenode_idempotency` inside the write's own transaction and records each statement's outcome
there before COMMIT. So the key exists exactly when the write committed: a retry after any crash
(client, node, primary, `kill -9` mid-request) finds either nothing (the write did not commit: it
runs now) or the record (it committed: the recorded outcome is returned and nothing runs again).

Where it is recorded:
- standalone node: in the node's own database, by the writer connection (`run_keyed_local`);
- replica node: on the primary, inside the one atomic Hrana batch that carries the write
  (`run_keyed_hrana`), so it does not matter whether the node, the primary or the network died.

Only committed outcomes are recorded: a write that failed changed nothing, so its retry simply
runs again. A key seen with a different request is refused (422); a key whose first request is
still in flight elsewhere is 409. Keys are dropped after `idempotency_retention` seconds (by the
next keyed write on that database); a retry later than that runs the write again.

Local-first writes (a queue of writes a node replays to its primary) use the same table and
batch: each queued write's id is its key.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from edgenode.engine import run_transaction
from edgenode.errors import DatabaseError, SQLError, Unavailable
from edgenode.hrana import protocol as p
from edgenode.hrana.backend import StmtResult
from edgenode.hrana.values import to_python
from edgenode.results import ExecResult, PlainStatement

if TYPE_CHECKING:
    # Imported where used: the client pulls in httpx, which a standalone node never needs.
    from edgenode.hrana.client import HranaClient

TABLE = "_edgenode_idempotency"
HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
_KEY_RE = re.compile(r"^[\x21-\x7e]+$")
KEY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": _KEY_RE.pattern}  # OpenAPI

CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, "
    "outcome TEXT NOT NULL, total INTEGER NOT NULL, created_at REAL NOT NULL) WITHOUT ROWID"
)
CREATE_INDEX = f"CREATE INDEX IF NOT EXISTS {TABLE}_created_at ON {TABLE} (created_at)"
PURGE = f"DELETE FROM {TABLE} WHERE created_at < ?"
LOOKUP = f"SELECT fingerprint, outcome FROM {TABLE} WHERE key = ?"
# `total` holds what total_changes() will be once this row's own change is counted, so the next
# record can tell whether the statement in between changed anything (SQLite's changes() carries
# over from earlier statements). WITHOUT ROWID: claiming a key leaves last_insert_rowid() alone.
CLAIM = f"INSERT INTO {TABLE} (key, fingerprint, outcome, total, created_at) VALUES (?, ?, ?, total_changes() + 1, ?)"
# After each statement of a forwarded batch: that statement's outcome as the primary reports it
# (rows changed, else 0 and no rowid), computed by SQL because the batch must record it before COMMIT.
RECORD_STEP = (
    f"UPDATE {TABLE} SET outcome = json_insert(outcome, '$[#]', CASE WHEN total_changes() = total "
    "THEN json_array(0, NULL) ELSE json_array(changes(), last_insert_rowid()) END), "
    "total = total_changes() + 1 WHERE key = ?"
)
RECORD_ALL = f"UPDATE {TABLE} SET outcome = ? WHERE key = ?"


class IdempotencyKeyInvalid(DatabaseError):
    code = "invalid_idempotency_key"


class IdempotencyKeyReused(DatabaseError):
    status = 422
    code = "idempotency_key_reused"


class IdempotencyKeyInUse(DatabaseError):
    status = 409
    code = "idempotency_key_in_use"


@dataclass
class KeyedWrite:
    """A write's key and the fingerprint of its statements; `replayed` is set by the write path."""

    key: str
    fingerprint: str
    retention: float
    replayed: bool = False

    def expired_before(self) -> float:
        return time.time() - self.retention


def parse_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not raw or len(raw) > MAX_KEY_LENGTH or not _KEY_RE.match(raw):
        raise IdempotencyKeyInvalid(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (no spaces), e.g. a UUID"
        )
    return raw


def fingerprint(statements: Sequence[tuple[str, Any]]) -> str:
    """What identifies a request: its statements and parameters exactly as sent."""
    encoded = msgspec.json.encode([[sql, params] for sql, params in statements], order="sorted")
    return hashlib.sha256(encoded).hexdigest()


def keyed(key: str | None, statements: Sequence[tuple[str, Any]], retention: float) -> KeyedWrite | None:
    return None if key is None else KeyedWrite(key, fingerprint(statements), retention)


def _recorded(write: KeyedWrite, found_fingerprint: str, outcome: str) -> list[tuple[int, int | None]]:
    if found_fingerprint != write.fingerprint:
        raise IdempotencyKeyReused(
            f"{HEADER} {write.key!r} was already used for a different request; "
            "a retry must send the same statements and parameters, a new write needs a new key"
        )
    return [(int(affected), None if rowid is None else int(rowid)) for affected, rowid in json.loads(outcome)]


def _outcome_json(results: Sequence[ExecResult]) -> str:
    return json.dumps([[r.rows_affected, r.last_insert_rowid] for r in results])


# -- standalone: the node's own writer connection -----------------------------------------------------


def run_keyed_local(conn: Any, statements: list[PlainStatement], write: KeyedWrite) -> tuple[list[ExecResult], bool]:
    """In the writer's process: the write and its key in one transaction. Returns (results, replayed)."""
    found: list[Any] = []

    def claim(c: Any) -> bool:
        c.execute(CREATE_TABLE)
        c.execute(CREATE_INDEX)
        c.execute(PURGE, [write.expired_before()])
        found.extend(c.execute(LOOKUP, [write.key]).fetchall())
        if found:
            return False
        c.execute(CLAIM, [write.key, write.fingerprint, "[]", time.time()])
        return True

    def record(c: Any, results: list[ExecResult]) -> None:
        c.execute(RECORD_ALL, [_outcome_json(results), write.key])

    results = run_transaction(conn, statements, guard=(claim, record))
    if results is None:
        fingerprint_, outcome = found[0]
        recorded = _recorded(write, fingerprint_, outcome)
        return [ExecResult(rows_affected=a, last_insert_rowid=r) for a, r in recorded], True
    return results, False


# -- replica: inside the atomic Hrana batch that carries the write to the primary ----------------------


def run_keyed_hrana(
    client: HranaClient, statements: Sequence[tuple[str, list[Any]]], write: KeyedWrite, attempts: int = 3
) -> tuple[list[StmtResult], bool]:
    """One request: BEGIN; table; purge; lookup; claim; (statement; record)*; COMMIT; ROLLBACK unless
    committed. A key that exists makes the claim fail, so nothing of the batch commits and the lookup's
    row is the answer. Raises BatchStepError (index = the failing statement) like execute_batch_atomic."""
    for attempt in range(attempts):
        outcome = _hrana_attempt(client, statements, write)
        if outcome is not None:
            return outcome
        time.sleep(0.05 * (attempt + 1))
    raise IdempotencyKeyInUse(
        f"{HEADER} {write.key!r} is being used by a request still in progress; retry it in a moment"
    )


def _hrana_attempt(
    client: HranaClient, statements: Sequence[tuple[str, list[Any]]], write: KeyedWrite
) -> tuple[list[StmtResult], bool] | None:
    from edgenode.hrana.client import BatchStepError, make_stmt, stmt_result_from_proto

    def step(sql: str, args: list[Any] | None = None, after: int | None = None, rows: bool = False) -> p.BatchStep:
        condition = None if after is None else p.OkCond(step=after)
        return p.BatchStep(stmt=make_stmt(sql, args, want_rows=rows), condition=condition)

    steps = [
        # IMMEDIATE: the batch reads (the lookup) before it writes; a deferred transaction would get
        # SQLITE_BUSY without waiting if another write committed in between.
        step("BEGIN IMMEDIATE"),
        step(CREATE_TABLE, after=0),
        step(CREATE_INDEX, after=1),
        step(PURGE, [write.expired_before()], after=2),
        step(LOOKUP, [write.key], after=3, rows=True),
        step(CLAIM, [write.key, write.fingerprint, "[]", time.time()], after=4),
    ]
    lookup, claim = 4, 5
    statement_steps = []
    for sql, args in statements:
        statement_steps.append(len(steps))
        steps.append(p.BatchStep(stmt=make_stmt(sql, args), condition=p.OkCond(step=len(steps) - 1)))
        steps.append(step(RECORD_STEP, [write.key], after=len(steps) - 1))
    commit = len(steps)
    steps.append(step("COMMIT", after=commit - 1))
    rollback = make_stmt("ROLLBACK", want_rows=False)
    steps.append(p.BatchStep(stmt=rollback, condition=p.NotCond(cond=p.OkCond(step=commit))))
    with client.stream() as stream:
        result = stream.batch_raw(steps, close=True)

    found = result.step_results[lookup]
    if found is not None and found.rows:
        fingerprint_, outcome = (to_python(value) for value in found.rows[0])
        recorded = _recorded(write, str(fingerprint_), str(outcome))
        return [StmtResult([], [], affected, rowid) for affected, rowid in recorded], True
    for index, error in enumerate(result.step_errors):
        if error is None:
            continue
        if index == claim and "constraint" in error.message.lower():
            return None  # claimed by a request that committed after our lookup: look again
        if index not in statement_steps and index != commit:
            # The key's own steps fail only when the primary is busy or broken, never for the request.
            raise Unavailable(f"the primary could not record {HEADER} {write.key!r}: {error.message}; retry")
        statement_index = statement_steps.index(index) if index in statement_steps else None
        where = f"statement {statement_index}" if statement_index is not None else "COMMIT"
        raise BatchStepError(f"{where} failed: {error.message}", error.code or "UNKNOWN", statement_index)
    results = [result.step_results[i] for i in statement_steps]
    if any(r is None for r in results) or result.step_results[commit] is None:
        raise SQLError("the primary skipped a statement of the batch without an error")
    return [stmt_result_from_proto(r) for r in results if r is not None], False
