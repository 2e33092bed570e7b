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

Local-first writes (a queue of writes a node replays to its primary) use the same table: each
queued write's id is its key, in the reserved namespace `lf/<node_id>/<seq:020d>` (`group_steps`).
Several queued writes share one primary transaction, each in its own savepoint; a write the primary
refuses is recorded too (outcome `"rejected"`), so a key exists exactly when the primary has
*decided* the write, and a re-sent write is never run again. `_edgenode_writers` holds each node's
highest decided seq, written in the same transaction. `lf/` keys are exempt from the time-based
purge: their node deletes them once it has recorded their outcome (the `confirmed` bound).
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
from edgenode.expect import guard_want
from edgenode.hrana import protocol as p
from edgenode.hrana.backend import StmtResult
from edgenode.hrana.batch import IN_TRANSACTION, GroupBatch, all_of, failed, ok
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
LF_PREFIX = "lf/"
# Local-first keys are deleted by their node (group_steps' `confirmed`), never by age: a node away
# longer than the retention must still find its decisions there.
PURGE = f"DELETE FROM {TABLE} WHERE created_at < ? AND substr(key, 1, 3) != '{LF_PREFIX}'"
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
# RECORD_STEP after an `expect_rows` guard (edgenode.expect), which leaves changes() at 0 and passes only
# when the statement changed exactly the expected count: that count (the first argument) is recorded.
RECORD_EXPECTED = (
    f"UPDATE {TABLE} SET outcome = json_insert(outcome, '$[#]', CASE WHEN total_changes() = total "
    "THEN json_array(0, NULL) ELSE json_array(?, last_insert_rowid()) END), "
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
    if raw.startswith(LF_PREFIX):
        raise IdempotencyKeyInvalid(f"{HEADER} values starting with {LF_PREFIX!r} are reserved for local-first writes")
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
    deferred: int | None = None  # see GroupBatch.write: a statement's record waits for its expect_rows guard
    for index, (sql, args) in enumerate(statements):
        statement_steps.append(len(steps))
        steps.append(p.BatchStep(stmt=make_stmt(sql, args), condition=p.OkCond(step=len(steps) - 1)))
        if deferred is not None:
            steps.append(step(RECORD_EXPECTED, [deferred, write.key], after=len(steps) - 1))
            deferred = None
        deferred = guard_want(statements, index)
        if deferred is None:
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


# -- local-first: a group of queued writes in one primary transaction ----------------------------------

WRITERS = "_edgenode_writers"
CREATE_WRITERS = (
    f"CREATE TABLE IF NOT EXISTS {WRITERS} (node_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, at REAL NOT NULL)"
)
UPSERT_WRITER = (
    f"INSERT INTO {WRITERS} (node_id, seq, at) VALUES (?, ?, ?) "
    "ON CONFLICT (node_id) DO UPDATE SET seq = max(seq, excluded.seq), at = excluded.at"
)
WRITER_MARK = f"SELECT seq FROM {WRITERS} WHERE node_id = ?"
REJECTED = '"rejected"'
_DECIDED = f"SELECT key, outcome FROM {TABLE} WHERE key >= ? AND key <= ? ORDER BY key"
_FORGET = f"DELETE FROM {TABLE} WHERE key > ? AND key <= ?"
_REJECT = f"INSERT INTO {TABLE} (key, fingerprint, outcome, total, created_at) VALUES (?, ?, '{REJECTED}', 0, ?)"


def lf_key(node_id: str, seq: int) -> str:
    """A queued write's id on the primary; zero-padded so keys sort in seq order."""
    return f"{LF_PREFIX}{node_id}/{seq:020d}"


@dataclass
class GroupWrite:
    """One queued write: its seq in the node's outbox, its statements (exact values), its fingerprint."""

    seq: int
    statements: list[tuple[str, Any]]
    fingerprint: str


@dataclass
class Decision:
    """What the primary did with one write of a group.

    `applied`: committed, `results` per statement as (rows_affected, last_insert_rowid); `rejected`:
    refused and recorded (`error` is {code, message}; a decision found from an earlier push lost the
    error text with that reply); `undecided`: nothing happened (the batch did not commit): send again."""

    seq: int
    outcome: str
    results: list[tuple[int, int | None]] | None = None
    error: dict[str, str] | None = None
    statement: int | None = None
    earlier: bool = False


@dataclass
class _Layout:
    lookup: int
    commit: int
    # per write: (claim, statement steps, release, undo, reject)
    writes: list[tuple[int, list[int], int, int, int]]


def group_steps(
    node_id: str, writes: Sequence[GroupWrite], confirmed: int | None = None, now: float | None = None
) -> tuple[list[p.BatchStep], _Layout]:
    """The batch that decides `writes` (in seq order) in one primary transaction.

    Tables; BEGIN IMMEDIATE; forget the keys up to `confirmed` (the node recorded their outcome);
    look up earlier decisions in the group's key range; per write (`hrana.batch.GroupBatch.write`):
    SAVEPOINT, CLAIM (fails if the write was decided before), (statement; RECORD_STEP)*, RELEASE,
    else ROLLBACK TO + RELEASE, and then a `"rejected"` record; the node's mark; COMMIT; ROLLBACK
    unless COMMIT ran.

    Every step of a write runs only while the transaction is open (`is_autocommit` is false), so a
    statement that ends the whole transaction (INSERT OR ROLLBACK, RAISE(ROLLBACK)) leaves the writes
    before it and after it undecided; the culprit's own rejection record then runs in autocommit,
    on its own, so it cannot block the queue."""
    assert writes, "a group has at least one write"
    now = time.time() if now is None else now
    batch = GroupBatch()
    # The tables first, outside the transaction (no-ops once they exist): a rejection recorded alone
    # after a statement rolled the transaction back must still find its table.
    last = batch.add(CREATE_TABLE)
    last = batch.add(CREATE_INDEX, cond=ok(last))
    last = batch.add(CREATE_WRITERS, cond=ok(last))
    last = batch.add("BEGIN IMMEDIATE", cond=ok(last))
    if confirmed is not None and confirmed > 0:
        last = batch.add(_FORGET, [lf_key(node_id, 0), lf_key(node_id, confirmed)], cond=ok(last))
    lookup = batch.add(_DECIDED, [lf_key(node_id, writes[0].seq), lf_key(node_id, writes[-1].seq)], ok(last), True)
    layout: list[tuple[int, list[int], int, int, int]] = []
    for write in writes:
        key = lf_key(node_id, write.seq)
        placed = batch.write(
            write.statements,
            gate=ok(lookup),
            claim=(CLAIM, [key, write.fingerprint, "[]", now]),
            record=(RECORD_STEP, [key]),
            record_expected=(RECORD_EXPECTED, [key]),
        )
        assert placed.claim is not None
        # The write's own failure (its claim succeeded): record the decision, in the transaction if
        # it is still open, else alone in autocommit.
        reject = batch.add(
            _REJECT, [key, write.fingerprint, now], cond=all_of(ok(placed.claim), failed(placed.release))
        )
        layout.append((placed.claim, placed.statements, placed.release, placed.undo, reject))
    mark = batch.add(UPSERT_WRITER, [node_id, writes[-1].seq, now], cond=all_of(ok(lookup), IN_TRANSACTION))
    commit = batch.commit(cond=ok(mark))
    steps = batch.steps
    return steps, _Layout(lookup, commit, layout)


def group_decisions(
    node_id: str, writes: Sequence[GroupWrite], result: p.BatchResult, layout: _Layout
) -> list[Decision]:
    """Each write's decision from the batch's step results (see `Decision`)."""
    earlier: dict[str, str] = {}
    found = result.step_results[layout.lookup]
    if found is not None:
        for row in found.rows:
            key, outcome = (to_python(value) for value in row)
            earlier[str(key)] = str(outcome)
    committed = result.step_results[layout.commit] is not None
    decisions = []
    for write, (claim, statements, release, undo, reject) in zip(writes, layout.writes, strict=True):
        prior = earlier.get(lf_key(node_id, write.seq))
        # The transaction had ended under the write (its undo was skipped): its record ran alone, in autocommit.
        alone = result.step_results[undo] is None and result.step_errors[undo] is None
        if prior is not None:
            decisions.append(_from_record(write.seq, prior))
        elif committed and result.step_results[release] is not None:
            steps = [result.step_results[i] for i in statements]
            results = [
                (r.affected_row_count, None if r.last_insert_rowid is None else int(r.last_insert_rowid))
                for r in steps
                if r is not None
            ]
            decisions.append(Decision(write.seq, "applied", results=results))
        elif result.step_results[reject] is not None and (committed or alone):
            index = next((n for n, i in enumerate(statements) if result.step_errors[i] is not None), None)
            error = result.step_errors[statements[index]] if index is not None else None
            if error is None:  # a RECORD_STEP failed: the primary's own trouble, not the write's
                error = next((e for e in result.step_errors[claim:release] if e is not None), None)
            decisions.append(
                Decision(
                    write.seq,
                    "rejected",
                    error={
                        "code": (error.code or "UNKNOWN") if error else "UNKNOWN",
                        "message": error.message if error else "refused",
                    },
                    statement=index,
                )
            )
        else:
            decisions.append(Decision(write.seq, "undecided"))
    return decisions


def _from_record(seq: int, outcome: str) -> Decision:
    if outcome == REJECTED:
        return Decision(
            seq,
            "rejected",
            error={
                "code": "UNKNOWN",
                "message": "refused by the primary in an earlier push (its error text was lost with that reply)",
            },
            earlier=True,
        )
    recorded = [(int(a), None if r is None else int(r)) for a, r in json.loads(outcome)]
    return Decision(seq, "applied", results=recorded, earlier=True)


def push_group(
    client: HranaClient, node_id: str, writes: Sequence[GroupWrite], confirmed: int | None = None
) -> list[Decision]:
    """One request to the primary deciding `writes`; raises HranaError when it could not be sent or
    answered (then every write is undecided: send them again, with the same seqs)."""
    steps, layout = group_steps(node_id, writes, confirmed)
    with client.stream() as stream:
        result = stream.batch_raw(steps, close=True)
    return group_decisions(node_id, writes, result, layout)


def push_bytes(statements: Sequence[tuple[str, Any]], fingerprint: str) -> int:
    """The size of the Hrana request that pushes this one write on its own (`push_group`), as the
    primary's body limit counts it. A node id and seq of the longest kind stand in for the real ones."""
    steps, _ = group_steps("f" * 32, [GroupWrite(2**62, list(statements), fingerprint)], confirmed=2**62, now=0.0)
    body = p.PipelineReqBody(requests=[p.BatchReq(batch=p.Batch(steps=steps)), p.CloseReq()], baton=None)
    return len(msgspec.json.encode(body))
