"""Building Hrana batches, and the one rule for a group of writes in one transaction.

`GroupBatch` builds ONE batch that is one transaction with a savepoint per write:

    per write:  SAVEPOINT (only while the transaction is open); its steps, each if the previous one
                succeeded; RELEASE if the last succeeded; else ROLLBACK TO + RELEASE (while open)
    COMMIT (while the transaction is open, or as the caller gates it); ROLLBACK unless COMMIT ran

Each write is atomic on its own and a failing one is rolled back alone, with its own error, while the
group costs one commit on the primary. A statement that ends the whole transaction (`INSERT OR
ROLLBACK`, `RAISE(ROLLBACK)`) leaves the later writes unopened: `is_autocommit` gates every
SAVEPOINT, so none starts a transaction of its own, and COMMIT does not run.

Two front-ends use it: forward mode's write combiner (`replica/combiner.py`) and the local-first
push (`idempotency.group_steps`), which adds its key claim and per-statement records to each write.
No httpx here: a standalone node imports this module (through `idempotency`) without the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgenode.expect import guard_want
from edgenode.hrana import protocol as p
from edgenode.hrana.backend import Value
from edgenode.hrana.values import from_python

Args = Sequence[Value] | dict[str, Value] | None

IN_TRANSACTION: p.BatchCond = p.NotCond(cond=p.IsAutocommitCond())
_SAVEPOINT = "edgenode_w"


def make_stmt(sql: str, args: Args = None, *, want_rows: bool = True) -> p.Stmt:
    if isinstance(args, dict):
        named = [p.NamedArg(name=name, value=from_python(value)) for name, value in args.items()]
        return p.Stmt(sql=sql, args=[], named_args=named, want_rows=want_rows)
    return p.Stmt(sql=sql, args=[from_python(value) for value in args or ()], named_args=[], want_rows=want_rows)


def ok(step: int) -> p.BatchCond:
    return p.OkCond(step=step)


def all_of(*conds: p.BatchCond) -> p.BatchCond:
    return p.AndCond(conds=list(conds))


def failed(step: int) -> p.BatchCond:
    """The step did not succeed (it failed or was skipped)."""
    return p.NotCond(cond=p.OkCond(step=step))


@dataclass(slots=True)
class WriteSteps:
    """Where one write's steps sit in the batch."""

    savepoint: int
    claim: int | None  # the step run first inside the savepoint, if one was given
    statements: list[int]  # one per statement of the write
    release: int  # succeeded exactly when every step of the write did
    undo: int  # ROLLBACK TO: skipped (no result, no error) when the transaction had already ended


class GroupBatch:
    """The steps of one batch; `write` and `commit` add the savepoint-per-write rule."""

    def __init__(self) -> None:
        self.steps: list[p.BatchStep] = []

    def add(self, sql: str, args: Args = None, cond: p.BatchCond | None = None, rows: bool = False) -> int:
        """One step; returns its index."""
        self.steps.append(p.BatchStep(stmt=make_stmt(sql, args, want_rows=rows), condition=cond))
        return len(self.steps) - 1

    def write(
        self,
        statements: Sequence[tuple[str, Args]],
        *,
        rows: bool = False,
        gate: p.BatchCond | None = None,
        claim: tuple[str, Args] | None = None,
        record: tuple[str, Args] | None = None,
        record_expected: tuple[str, list[Value]] | None = None,
    ) -> WriteSteps:
        """One write in its own savepoint, opened only while the transaction is open (and `gate`
        holds). `claim` runs first inside it; `record` runs after each statement; a failure of either
        fails the write like a failing statement. A statement followed by an `expect_rows` guard
        (edgenode.expect) has the guard run before its record, which is then `record_expected` with
        the expected count first in its arguments (the guard leaves `changes()` at 0)."""
        opened = IN_TRANSACTION if gate is None else all_of(gate, IN_TRANSACTION)
        savepoint = last = self.add(f"SAVEPOINT {_SAVEPOINT}", cond=opened)
        claimed = None
        if claim is not None:
            claimed = last = self.add(claim[0], claim[1], ok(last))
        indexes: list[int] = []
        deferred: int | None = None  # the expected count of a statement whose record waits for its guard
        for i, (sql, args) in enumerate(statements):
            last = self.add(sql, args, ok(last), rows)
            indexes.append(last)
            if deferred is not None and record_expected is not None:
                last = self.add(record_expected[0], [deferred, *record_expected[1]], ok(last))
                deferred = None
            want = guard_want(statements, i) if record_expected is not None else None
            if want is not None:
                deferred = want
            elif record is not None:
                last = self.add(record[0], record[1], ok(last))
        release = self.add(f"RELEASE {_SAVEPOINT}", cond=ok(last))
        undo = self.add(f"ROLLBACK TO {_SAVEPOINT}", cond=all_of(ok(savepoint), failed(release), IN_TRANSACTION))
        self.add(f"RELEASE {_SAVEPOINT}", cond=ok(undo))
        return WriteSteps(savepoint, claimed, indexes, release, undo)

    def commit(self, cond: p.BatchCond = IN_TRANSACTION) -> int:
        """COMMIT under `cond`, then ROLLBACK unless it ran; returns COMMIT's index."""
        commit = self.add("COMMIT", cond=cond)
        self.add("ROLLBACK", cond=all_of(failed(commit), IN_TRANSACTION))
        return commit
