"""The local-first outbox: writes a node acknowledged and has not yet seen decided by its primary.

`DATA_DIR/outbox.db` (apsw, WAL, `synchronous=FULL`), owned by the replica connection's process,
which also owns the replica file: one owner call commits a write to both, outbox first (design:
docs/local-first.md §2, §3). It lives outside `replica/` because a resync wipes that directory.

Tables:
- `meta`: node_id (a random id naming this node's writes on the primary), database_id,
  pulled_hwm (the highest seq the pulled state shows decided), counters;
- `entries`: one row per acknowledged write, in seq order. `statements` are the write's statements
  with exact values (msgpack: 64-bit integers and blobs round-trip), sent to the primary;
  `local` the same statements as the local libsql connection replays them. State:
  `pending` (not decided yet), `pushed` (applied on the primary, not yet in the pulled state),
  `done` (in the pulled state; kept for `idempotency_retention` so a client's Idempotency-Key
  retry still finds its outcome);
- `conflicts`: writes the primary refused, with its error, until an operator retries or discards them.

Every method runs one transaction; none is called from the event loop (owner process only).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import apsw
import msgspec

from edgenode.crash import crash_point
from edgenode.idempotency import GroupWrite
from edgenode.results import ExecResult, PlainStatement

NAME = "outbox.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    client_key TEXT UNIQUE,
    fingerprint TEXT NOT NULL,
    statements BLOB NOT NULL,
    local BLOB NOT NULL,
    bytes INTEGER NOT NULL,
    local_results TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    primary_results TEXT,
    created_at REAL NOT NULL,
    pushed_at REAL
);
CREATE INDEX IF NOT EXISTS entries_state ON entries (state, seq);
CREATE TABLE IF NOT EXISTS conflicts (
    seq INTEGER PRIMARY KEY,
    client_key TEXT,
    fingerprint TEXT NOT NULL,
    statements BLOB NOT NULL,
    local BLOB NOT NULL,
    local_results TEXT NOT NULL,
    error TEXT NOT NULL,
    created_at REAL NOT NULL,
    decided_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    pushed_at REAL
);
"""
# Columns added to `conflicts` after outbox.db files were first written: (name, declaration).
CONFLICT_COLUMNS = (("attempts", "INTEGER NOT NULL DEFAULT 0"), ("pushed_at", "REAL"))


def write_id(node_id: str, seq: int) -> str:
    return f"{node_id}-{seq}"


def parse_write_id(node_id: str, text: str) -> int | None:
    """The seq a write id names on this node, None if it names none of this node's writes."""
    prefix = f"{node_id}-"
    digits = text[len(prefix) :]
    # ASCII only: str.isdigit() also takes '²', which int() refuses; seqs are SQLite integers.
    if not text.startswith(prefix) or not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        return None
    seq = int(digits)
    return seq if seq <= 2**63 - 1 else None


def results_json(results: list[ExecResult]) -> str:
    return json.dumps([[r.rows_affected, r.last_insert_rowid] for r in results])


def results_from_json(text: str) -> list[ExecResult]:
    return [ExecResult(int(a), None if r is None else int(r)) for a, r in json.loads(text)]


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = apsw.Connection(str(path))
        self.db.setbusytimeout(5000)
        self.db.execute("PRAGMA journal_mode=WAL")
        # The acknowledgement point of a local-first write: its outbox commit must survive power loss.
        self.db.execute("PRAGMA synchronous=FULL")
        with self.db:
            self.db.execute(SCHEMA)
            have = {row[1] for row in self.db.execute("PRAGMA table_info(conflicts)")}
            for name, declaration in CONFLICT_COLUMNS:
                if name not in have:
                    self.db.execute(f"ALTER TABLE conflicts ADD COLUMN {name} {declaration}")
            if self._meta("node_id") is None:
                self._set("node_id", uuid.uuid4().hex)
                self._set("next_seq", 1)
                self._set("pulled_hwm", 0)
                self._set("pushed_total", 0)
                self._set("conflicts_total", 0)
        self.node_id = str(self._meta("node_id"))

    def close(self) -> None:
        self.db.close()

    def _meta(self, name: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def _set(self, name: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    @property
    def pulled_hwm(self) -> int:
        return int(self._meta("pulled_hwm") or 0)

    def database_id(self) -> str | None:
        value = self._meta("database_id")
        return None if value is None else str(value)

    def set_database_id(self, database_id: str | None) -> None:
        with self.db:
            self._set("database_id", database_id)

    # -- acknowledging writes ----------------------------------------------------------------------

    def find_key(self, client_key: str) -> tuple[int, str, list[ExecResult]] | None:
        """A client's Idempotency-Key already acknowledged here: (seq, fingerprint, local results)."""
        for table in ("entries", "conflicts"):
            row = self.db.execute(
                f"SELECT seq, fingerprint, local_results FROM {table} WHERE client_key = ?", (client_key,)
            ).fetchone()
            if row is not None:
                return int(row[0]), str(row[1]), results_from_json(row[2])
        return None

    def append(
        self,
        writes: list[tuple[str | None, str, list[tuple[str, Any]], list[PlainStatement], list[ExecResult]]],
        retention: float,
    ) -> list[int]:
        """Queue writes (client key, fingerprint, statements, local statements, local results) in one
        durable transaction; returns their seqs. Also drops `done` rows older than `retention`."""
        now = time.time()
        seqs = []
        with self.db:
            seq = int(self._meta("next_seq"))
            for client_key, fingerprint, statements, local, results in writes:
                encoded = msgspec.msgpack.encode(statements)
                self.db.execute(
                    "INSERT INTO entries (seq, client_key, fingerprint, statements, local, bytes, local_results, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        seq,
                        client_key,
                        fingerprint,
                        encoded,
                        msgspec.msgpack.encode(local),
                        len(encoded),
                        results_json(results),
                        now,
                    ),
                )
                seqs.append(seq)
                seq += 1
            self._set("next_seq", seq)
            self.db.execute("DELETE FROM entries WHERE state = 'done' AND created_at < ?", (now - retention,))
            crash_point("N1")  # docs/local-first.md §6: the write applied locally, its outbox commit not done
        return seqs

    # -- pushing ----------------------------------------------------------------------------------

    def undecided(self, limit: int = 256, max_bytes: int = 1 << 20) -> list[GroupWrite]:
        """The oldest pending writes, in seq order, up to `limit` writes or about `max_bytes`."""
        batch: list[GroupWrite] = []
        size = 0
        for seq, fingerprint, statements, nbytes in self.db.execute(
            "SELECT seq, fingerprint, statements, bytes FROM entries WHERE state = 'pending' ORDER BY seq LIMIT ?",
            (limit,),
        ):
            if batch and size + nbytes > max_bytes:
                break
            size += nbytes
            decoded = msgspec.msgpack.decode(statements)
            batch.append(GroupWrite(int(seq), [(sql, args) for sql, args in decoded], str(fingerprint)))
        return batch

    def confirmed(self) -> int:
        """Every write up to this seq has its outcome recorded here (its key on the primary may go)."""
        row = self.db.execute("SELECT min(seq) FROM entries WHERE state = 'pending'").fetchone()
        if row[0] is not None:
            return int(row[0]) - 1
        return int(self._meta("next_seq")) - 1

    def record(self, decisions: list[Any], failure: str | None = None) -> dict[str, int]:
        """The primary's decisions (`idempotency.Decision`), in one transaction; counts per outcome."""
        now = time.time()
        counts = {"applied": 0, "rejected": 0, "undecided": 0}
        newly_pushed = 0
        with self.db:
            for decision in decisions:
                counts[decision.outcome] += 1
                if decision.outcome == "applied":
                    self.db.execute(
                        "UPDATE entries SET state = 'pushed', primary_results = ?, pushed_at = ?, attempts = "
                        "attempts + 1, last_error = NULL WHERE seq = ? AND state = 'pending'",
                        (json.dumps(decision.results), now, decision.seq),
                    )
                    # A pull may have settled it already (from its replicated key) while the reply was on its way.
                    newly_pushed += self.db.changes()
                elif decision.outcome == "rejected":
                    self._to_conflicts(decision.seq, decision.error, now)
                else:
                    self.db.execute(
                        "UPDATE entries SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                        (failure or "not decided by the primary", decision.seq),
                    )
            if newly_pushed:
                self._set("pushed_total", int(self._meta("pushed_total")) + newly_pushed)
        return counts

    def _to_conflicts(self, seq: int, error: dict[str, Any] | None, now: float) -> None:
        # The push that brought the decision counts as an attempt, and is when it was pushed.
        moved = self.db.execute(
            "INSERT INTO conflicts (seq, client_key, fingerprint, statements, local, local_results, error, "
            "created_at, decided_at, attempts, pushed_at) SELECT seq, client_key, fingerprint, statements, local, "
            "local_results, ?, created_at, ?, attempts + 1, ? FROM entries WHERE seq = ? AND state = 'pending' "
            "RETURNING seq",
            (json.dumps(error or {"code": "UNKNOWN", "message": "refused"}), now, now, seq),
        ).fetchall()
        if moved:
            crash_point("N9")  # §6: halfway through moving a refused write to the conflicts (one transaction)
            self.db.execute("DELETE FROM entries WHERE seq = ?", (seq,))
            self._set("conflicts_total", int(self._meta("conflicts_total")) + 1)
        elif error is not None:
            # A pull settled it from its replicated key while the push's reply was on its way: the
            # reply still has the primary's own error text.
            self.db.execute(
                "UPDATE conflicts SET error = ? WHERE seq = ? AND error LIKE '%was lost%'", (json.dumps(error), seq)
            )

    # -- after a pull -----------------------------------------------------------------------------

    def settle(self, mark: int, decided: dict[int, str]) -> None:
        """The pulled state shows every write up to `mark` decided: `pushed` ones are now `done`;
        `pending` ones (the reply was lost) take their decision from their replicated key row
        (`decided`: seq → recorded outcome)."""
        from edgenode.idempotency import REJECTED

        now = time.time()
        with self.db:
            if mark > self.pulled_hwm:
                self._set("pulled_hwm", mark)
            self.db.execute("UPDATE entries SET state = 'done' WHERE state = 'pushed' AND seq <= ?", (mark,))
            for seq, outcome in decided.items():
                if outcome == REJECTED:
                    lost = "refused by the primary in a push whose reply was lost (its error text was lost with it)"
                    self._to_conflicts(seq, {"code": "UNKNOWN", "message": lost}, now)
                else:
                    self.db.execute(
                        "UPDATE entries SET state = 'done', primary_results = ?, pushed_at = ? "
                        "WHERE seq = ? AND state = 'pending'",
                        (outcome, now, seq),
                    )
                    self._set("pushed_total", int(self._meta("pushed_total")) + 1)

    def pending_up_to(self, mark: int) -> list[int]:
        rows = self.db.execute("SELECT seq FROM entries WHERE state = 'pending' AND seq <= ?", (mark,))
        return [int(seq) for (seq,) in rows]

    def replayable(self) -> list[tuple[int, list[PlainStatement]]]:
        """What the pulled state does not hold yet, in seq order: the local view replays it."""
        rows = self.db.execute(
            "SELECT seq, local FROM entries WHERE state IN ('pending', 'pushed') AND seq > ? ORDER BY seq",
            (self.pulled_hwm,),
        )
        return [(int(seq), [tuple(s) for s in msgspec.msgpack.decode(local)]) for seq, local in rows]  # type: ignore[misc]

    # -- reporting and operators --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        pending, oldest, last_error = self.db.execute(
            "SELECT count(*), min(created_at), (SELECT last_error FROM entries WHERE state = 'pending' "
            "ORDER BY seq LIMIT 1) FROM entries WHERE state = 'pending'"
        ).fetchone()
        unpulled = self.db.execute("SELECT count(*) FROM entries WHERE state = 'pushed'").fetchone()[0]
        failed = self.db.execute("SELECT count(*) FROM conflicts").fetchone()[0]
        return {
            "pending": int(pending),
            "pushed": int(self._meta("pushed_total")),
            "failed": int(failed),
            "oldest_pending_s": None if oldest is None else round(max(time.time() - oldest, 0.0), 3),
            "pushed_not_pulled": int(unpulled),
            "pulled_hwm": self.pulled_hwm,
            "last_error": last_error,
            "node_id": self.node_id,
        }

    def last_issued(self) -> int:
        """The highest seq this node ever gave a write (0 before the first)."""
        return int(self._meta("next_seq")) - 1

    def counts(self) -> tuple[int, int]:
        """(pending writes, conflicts)."""
        pending = self.db.execute("SELECT count(*) FROM entries WHERE state = 'pending'").fetchone()[0]
        return int(pending), int(self.db.execute("SELECT count(*) FROM conflicts").fetchone()[0])

    def entry(self, seq: int) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT seq, state, attempts, last_error, local_results, primary_results, created_at, pushed_at, "
            "statements FROM entries WHERE seq = ?",
            (seq,),
        ).fetchone()
        if row is not None:
            seq_, state, attempts, last_error, local, primary, created, pushed, statements = row
            return {
                "write_id": write_id(self.node_id, seq_),
                "state": "applied" if state == "done" else state,
                "attempts": attempts,
                "last_error": last_error,
                "local_results": json.loads(local),
                "primary_results": None if primary is None else json.loads(primary),
                "created_at": created,
                "pushed_at": pushed,
                "statements": _statements_json(statements),
            }
        conflict = self._conflict(seq)
        if conflict is not None:
            return conflict
        return None

    def _conflict(self, seq: int) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT seq, statements, local_results, error, created_at, decided_at, attempts, pushed_at FROM conflicts "
            "WHERE seq = ?",
            (seq,),
        ).fetchone()
        return None if row is None else self._conflict_dict(row)

    def _conflict_dict(self, row: Any) -> dict[str, Any]:
        seq, statements, local, error, created, decided, attempts, pushed = row
        return {
            "attempts": attempts,
            "pushed_at": pushed,
            "write_id": write_id(self.node_id, seq),
            "state": "conflict",
            "statements": _statements_json(statements),
            "local_results": json.loads(local),
            "error": json.loads(error),
            "created_at": created,
            "decided_at": decided,
        }

    def conflicts(self, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT seq, statements, local_results, error, created_at, decided_at, attempts, pushed_at FROM conflicts "
            "ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [self._conflict_dict(row) for row in rows]

    def conflict_write(self, seq: int) -> tuple[str, list[tuple[str, Any]], list[PlainStatement]] | None:
        row = self.db.execute("SELECT fingerprint, statements, local FROM conflicts WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            return None
        fingerprint, statements, local = row
        decoded = [(sql, args) for sql, args in msgspec.msgpack.decode(statements)]
        return str(fingerprint), decoded, [tuple(s) for s in msgspec.msgpack.decode(local)]  # type: ignore[misc]

    def take_conflict(self, seq: int) -> tuple[str, list[tuple[str, Any]], list[PlainStatement]] | None:
        """Remove a conflict (discard, or retry: the caller queues it again as a new write)."""
        with self.db:
            row = self.db.execute(
                "DELETE FROM conflicts WHERE seq = ? RETURNING fingerprint, statements, local", (seq,)
            ).fetchone()
        if row is None:
            return None
        fingerprint, statements, local = row
        decoded = [(sql, args) for sql, args in msgspec.msgpack.decode(statements)]
        return str(fingerprint), decoded, [tuple(s) for s in msgspec.msgpack.decode(local)]  # type: ignore[misc]


def _statements_json(blob: bytes) -> list[dict[str, Any]]:
    from edgenode.values import to_json

    out = []
    for sql, args in msgspec.msgpack.decode(blob):
        params = {k: to_json(v) for k, v in args.items()} if isinstance(args, dict) else [to_json(v) for v in args]
        out.append({"sql": sql, "params": params})
    return out
