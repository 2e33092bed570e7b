"""What runs in the process that owns the replica's libSQL connection (see `edgenode.owner`).

The binding holds the GIL for every call, `sync()` included, so the connection lives in a child
process: the node's event loop never waits on it. These are module-level functions because the
owner sends them to the child by reference; arguments and results pickle.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import libsql

from edgenode.crash import crash_point
from edgenode.engine import execute as engine_execute
from edgenode.engine import read_schema
from edgenode.engine import rollback as engine_rollback
from edgenode.errors import SQLError
from edgenode.idempotency import TABLE, WRITER_MARK, lf_key
from edgenode.pragmas import PragmaReport, Profile, apply_profile
from edgenode.replica.files import InvalidInfo, Position, ReplicaFiles
from edgenode.replica.outbox import NAME as OUTBOX_NAME
from edgenode.replica.outbox import Outbox
from edgenode.results import ExecResult, PlainStatement
from edgenode.tls import client_context

# Messages of the libsql client that mean the local replica can no longer follow the primary.
_RESYNC_MARKERS = {
    "invalid local state": "invalid_local_state",
    "server returned a conflict": "conflict",
    "lower generation than local": "primary_behind",
    "failed to verify metadata": "invalid_local_state",
    "status=410": "generation_gone",
    "wal_insert_frame failed": "invalid_local_state",
    "walconflict": "conflict",
}
# Pragmas the libsql synced connection sends to the primary even with a value, or that the sync
# machinery owns (it checkpoints at generation changes and needs WAL frame N to be sync frame N).
NOT_ON_REPLICA = {
    "foreign_keys": "the libsql synced connection sends it to the primary (the replica takes no local writes)",
    "journal_mode": "the sync machinery keeps the replica in WAL mode",
    "wal_autocheckpoint": "checkpoints are left to the sync machinery (at generation changes)",
}

# In local-first mode the connection is offline: nothing goes to the primary, but the node must
# check a write the way the primary will re-run it, which is with SQLite's default (sqld's too).
NOT_ON_LOCAL_FIRST = {
    **NOT_ON_REPLICA,
    "foreign_keys": "left at SQLite's default (off) on a local-first replica: its writes run again on the "
    "primary, whose connections keep that default, and the node checks a write as the primary will run it",
}

_relay_http: httpx.Client | None = None


class ResyncNeeded(Exception):
    """The replica cannot follow the primary as it is; `reason` labels the metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (ResyncNeeded, (self.reason, str(self)))


def classify(message: str) -> str | None:
    lowered = message.lower()
    for marker, reason in _RESYNC_MARKERS.items():
        if marker in lowered:
            return reason
    return None


def apply_replica_profile(profile: Profile, conn: Any, local_first: bool = False) -> PragmaReport:
    """Apply what the synced connection takes locally; readbacks go through pragma_x() (local),
    because the client sends a bare `PRAGMA x` to the primary."""

    def execute(sql: str) -> list[tuple[Any, ...]]:
        text = sql.strip()
        name = text.split()[1].lower()
        if "=" not in text:
            return list(conn.execute(f"SELECT * FROM pragma_{name}").fetchall() or [])
        return list(conn.execute(text).fetchall() or [])

    refused = NOT_ON_LOCAL_FIRST if local_first else NOT_ON_REPLICA
    report = apply_profile(profile, execute, skip=frozenset(refused))
    for setting in profile.settings:
        if setting.pragma in refused:
            report.refused[setting.name] = refused[setting.pragma]
    return report


def open_replica(
    data_dir: str, relay_url: str, token: str, profile: Profile, local_first: bool = False
) -> tuple[Any, tuple[Position, list[str], PragmaReport, str | None]]:
    """Open the replica's connection; in local-first mode also the outbox, and recover (§6 of
    docs/local-first.md): cut the speculative frames an earlier run left, then replay the queue.
    The last item of the metadata is the node id of local-first writes (None in forward mode)."""
    global _outbox
    files = ReplicaFiles(Path(data_dir))
    if local_first:
        rollback_to_pulled(files)
    # offline: writes commit locally (local-first); the node never lets the client push frames.
    conn = libsql.connect(
        str(files.db), sync_url=relay_url, auth_token=token, isolation_level=None, offline=local_first
    )
    report = apply_replica_profile(profile, conn, local_first)
    node_id = None
    if local_first:
        if _outbox is None:
            _outbox = Outbox(Path(data_dir) / OUTBOX_NAME)
        node_id = _outbox.node_id
        _settle_and_replay(conn, files)
    _relay_client()  # now, while the relay starts, rather than in the first sync
    return conn, (files.read_info(), read_schema(conn), report, node_id)


def _relay_client() -> httpx.Client:
    global _relay_http
    if _relay_http is None:
        _relay_http = httpx.Client(timeout=2.0, verify=client_context())
    return _relay_http


def _relay(relay_url: str, seconds: float) -> dict[str, Any]:
    return _relay_client().put(f"{relay_url}/_relay/deadline", content=str(seconds)).json()


def pull(
    conn: Any, data_dir: str, relay_url: str, timeout: float
) -> tuple[Position, Position, list[str] | None, float, bool]:
    """One sync through the relay: (before, after, new schema or None, seconds, cut short)."""
    files = ReplicaFiles(Path(data_dir))
    before = files.read_info()
    duration, truncated = _sync(conn, files, relay_url, timeout)
    after = _after(files)
    schema = read_schema(conn) if after != before else None
    return before, after, schema, duration, truncated


def _after(files: ReplicaFiles) -> Position:
    try:
        return files.read_info()
    except InvalidInfo as exc:
        raise ResyncNeeded("invalid_local_state", str(exc)) from None


def _sync(conn: Any, files: ReplicaFiles, relay_url: str, timeout: float) -> tuple[float, bool]:
    _relay(relay_url, timeout)
    began = time.monotonic()
    ended: dict[str, Any] = {}
    failure: str | None = None
    try:
        conn.sync()
    except ValueError as exc:
        failure = str(exc)
    finally:
        duration = time.monotonic() - began
        try:
            ended = _relay(relay_url, 0)
        except (httpx.HTTPError, ValueError):
            pass
    truncated = bool(ended.get("truncated"))
    if ended.get("database_changed"):
        raise ResyncNeeded("primary_changed", str(ended["database_changed"]))
    if failure is not None:
        reason = classify(failure)
        if reason:
            raise ResyncNeeded(reason, failure) from None
        raise ValueError(failure) from None
    return duration, truncated


# -- local-first (docs/local-first.md §3, §4, §6) --------------------------------------------------------

_outbox: Outbox | None = None
_synced_head = 0  # the change feed's head in the pulled state (consumers read no further)
_local_failures: dict[int, str] = {}  # queued writes that no longer apply here (seq → error)
WAL_HEADER = 32
_WAL_MAGIC = (0x377F0682, 0x377F0683)


def rollback_to_pulled(files: ReplicaFiles) -> bool:
    """Cut the WAL back to the last pulled commit frame (`-info`'s durable frame), dropping every
    local frame after it, and invalidate the wal-index header so the next read runs WAL recovery.

    Sound because checkpoints are disabled on a synced connection (docs/local-first.md [V2]): WAL
    frame N is the primary's frame N up to the durable one. Idempotent (a crash halfway is redone)."""
    durable = files.read_info().frame
    try:
        with open(files.wal, "r+b") as wal:
            header = wal.read(WAL_HEADER)
            if len(header) < WAL_HEADER or int.from_bytes(header[:4], "big") not in _WAL_MAGIC:
                return False
            page_size = int.from_bytes(header[8:12], "big")
            keep = WAL_HEADER + durable * (24 + page_size)
            if wal.seek(0, os.SEEK_END) <= keep:
                return False
            wal.truncate(keep)
            os.fsync(wal.fileno())
    except FileNotFoundError:
        return False
    crash_point("N4")  # docs/local-first.md §6: the WAL cut, the wal-index header not yet invalidated
    try:
        fd = os.open(files.shm, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        os.pwrite(fd, bytes(96), 0)
    finally:
        os.close(fd)
    return True


def _mark(conn: Any, node_id: str) -> int:
    try:
        row = conn.execute(WRITER_MARK, [node_id]).fetchone()
    except ValueError:  # no _edgenode_writers yet: nothing of ours decided
        return 0
    return int(row[0]) if row else 0


def _feed_head(conn: Any) -> int:
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = '_edgenode_changes'").fetchone()
    except ValueError:
        return 0
    return int(row[0]) if row else 0


def _settle_and_replay(conn: Any, files: ReplicaFiles) -> int:
    """In the pulled state (no local frames): learn what the primary decided, then replay the rest.
    Returns how many writes were replayed."""
    global _synced_head
    outbox = _outbox
    assert outbox is not None
    mark = _mark(conn, outbox.node_id)
    _synced_head = _feed_head(conn)
    decided: dict[int, str] = {}
    pending = outbox.pending_up_to(mark)
    if pending:
        keys = {lf_key(outbox.node_id, seq): seq for seq in pending}
        marks = ", ".join("?" for _ in keys)
        found = conn.execute(f"SELECT key, outcome FROM {TABLE} WHERE key IN ({marks})", list(keys)).fetchall()
        for key, outcome in found:
            decided[keys[key]] = outcome
    outbox.settle(mark, decided)
    entries = outbox.replayable()
    if not entries:
        return 0
    # The replay needs no fsync: a restart rebuilds it from the outbox (§3 step 2c).
    with _unsynced_transaction(conn):
        for seq, statements in entries:
            error = _apply_one(conn, statements)
            if isinstance(error, str):
                _local_failures[seq] = error
            else:
                _local_failures.pop(seq, None)
            crash_point("N6")  # §6: the replay transaction open, not committed
    return len(entries)


@contextmanager
def _unsynced_transaction(conn: Any) -> Iterator[None]:
    """BEGIN IMMEDIATE at synchronous=NORMAL (the outbox, not the replica, is what must survive);
    COMMIT when the block ends, ROLLBACK when it raises; FULL again after either."""
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        engine_rollback(conn)
        raise
    finally:
        conn.execute("PRAGMA synchronous = FULL")


def _apply_one(conn: Any, statements: list[PlainStatement]) -> list[ExecResult] | str:
    """One write inside the open transaction, in a savepoint: its results, or its error (undone)."""
    conn.execute("SAVEPOINT lf_local")
    results = []
    for index, (sql, params, is_dml, is_insert) in enumerate(statements):
        try:
            cursor = conn.execute(sql, params)
            cursor.fetchall()
        except ValueError as exc:
            conn.execute("ROLLBACK TO lf_local")
            conn.execute("RELEASE lf_local")
            return f"statements[{index}]: {exc}"
        results.append(
            ExecResult(
                rows_affected=max(cursor.rowcount, 0) if is_dml else 0,
                last_insert_rowid=cursor.lastrowid if is_insert else None,
            )
        )
    conn.execute("RELEASE lf_local")
    return results


def pull_local_first(
    conn: Any, data_dir: str, relay_url: str, timeout: float
) -> tuple[Position, Position, list[str] | None, float, bool, int]:
    """`pull` for local-first mode: rollback to the pulled state, sync, learn the decisions, replay.
    One owner call, so no read sees the state between (§4). The replay runs even if the sync fails.
    The last item is the change feed's synced head (consumers read no further, §8)."""
    files = ReplicaFiles(Path(data_dir))
    before = files.read_info()
    cut = rollback_to_pulled(files)
    if cut:
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()  # WAL recovery, fresh page cache
    replayed = 0
    try:
        duration, truncated = _sync(conn, files, relay_url, timeout)
        after = _after(files)
        if cut:
            crash_point("N5")  # §6: pulled, the pending writes cut and not yet replayed
    finally:
        replayed = _settle_and_replay(conn, files)
    schema = read_schema(conn) if after != before or replayed else None
    return before, after, schema, duration, truncated, _synced_head


def synced_head(conn: Any) -> int:
    return _synced_head


def local_failure(conn: Any, seq: int) -> str | None:
    return _local_failures.get(seq)


def _box() -> Outbox:
    if _outbox is None:
        raise RuntimeError("the replica was opened without its outbox (not local-first)")
    return _outbox


def apply_local(
    conn: Any,
    group: list[tuple[str | None, str, list[tuple[str, Any]], list[PlainStatement]]],
    retention: float,
    database_id: str | None = None,
) -> list[tuple[Any, ...]]:
    """A group of local-first writes (client key, fingerprint, statements, local statements): one
    replica transaction, a savepoint each; the accepted ones are queued in the outbox (one durable
    commit: the acknowledgement), then the replica commits without an fsync (§3 step 2).

    Per write: ("ok", seq, results), ("replayed", seq, results) for a client key seen before,
    ("reused", ) for a key seen with other statements, ("error", message, index) when it fails here."""
    outbox = _box()
    if database_id is not None and outbox.database_id() is None:
        outbox.set_database_id(database_id)  # the queue belongs to the database the node follows now
    out: list[tuple[Any, ...] | None] = [None] * len(group)
    accepted: list[tuple[int, tuple[Any, ...]]] = []
    keys: dict[str, tuple[int, str]] = {}  # client keys seen in this group → (position, fingerprint)
    with _unsynced_transaction(conn):
        for i, (key, fingerprint, statements, local) in enumerate(group):
            if key is not None:
                found = outbox.find_key(key)
                if found is not None:
                    seq, recorded, results = found
                    out[i] = ("replayed", seq, results) if recorded == fingerprint else ("reused",)
                    continue
                if key in keys:
                    out[i] = ("same-group", keys[key][0]) if keys[key][1] == fingerprint else ("reused",)
                    continue
                keys[key] = (i, fingerprint)
            results = _apply_one(conn, local)
            if isinstance(results, str):
                index = int(results.split("]", 1)[0].split("[", 1)[1])
                out[i] = ("error", results, index)
                continue
            accepted.append((i, (key, fingerprint, statements, local, results)))
        seqs = outbox.append([w for _, w in accepted], retention) if accepted else []
        if seqs:
            crash_point("N2")  # §6: queued durably, the replica's COMMIT and the response not done
    for (i, write), seq in zip(accepted, seqs, strict=True):
        out[i] = ("ok", seq, write[4])
    for i, outcome in enumerate(out):
        if outcome is not None and outcome[0] == "same-group":
            first = out[outcome[1]]
            assert first is not None
            out[i] = ("replayed", *first[1:]) if first[0] == "ok" else first
    return [o for o in out if o is not None]


def outbox_batch(conn: Any, limit: int = 256) -> tuple[str, list[Any], int, str | None]:
    """(node id, the oldest undecided writes (at most `limit`), the confirmed bound, the database the
    queue belongs to)."""
    outbox = _box()
    return outbox.node_id, outbox.undecided(limit), outbox.confirmed(), outbox.database_id()


def outbox_claim(conn: Any, database_id: str) -> None:
    _box().set_database_id(database_id)


def outbox_record(conn: Any, decisions: list[Any], failure: str | None) -> dict[str, int]:
    """Record the decisions; the counts per outcome, and the outbox's `pending_now`/`conflicts_now`."""
    counts = _box().record(decisions, failure)
    counts["pending_now"], counts["conflicts_now"] = _box().counts()
    return counts


def outbox_status(conn: Any) -> dict[str, Any]:
    return _box().status()


def outbox_entry(conn: Any, seq: int) -> dict[str, Any] | int | None:
    """The write's entry, or (when none is kept) the last seq issued, to tell "never issued" from
    "no longer kept"."""
    entry = _box().entry(seq)
    if entry is None:
        return _box().last_issued()
    if entry is not None and entry["state"] in ("pending", "pushed"):
        failure = _local_failures.get(seq)
        entry["local"] = f"fails here now: {failure}" if failure else "applied here"
    return entry


def outbox_conflicts(conn: Any) -> list[dict[str, Any]]:
    return _box().conflicts()


def outbox_resolve(conn: Any, seq: int, action: str, retention: float) -> tuple[Any, ...] | None:
    outbox = _box()
    found = outbox.conflict_write(seq)
    if found is None:
        return None
    if action == "retry":
        fingerprint, statements, local = found
        outcome = apply_local(conn, [(None, fingerprint, statements, local)], retention)[0]
        if outcome[0] != "ok":
            return ("error", outcome[1])  # it stays a conflict
    outbox.take_conflict(seq)
    return ("discarded",) if action == "discard" else ("ok", outcome[1])


# -- local-first interactive transactions (docs/local-first.md §7) -----------------------------------
# The session holding the node's lease (replica/lease.py) runs its BEGIN, statements and COMMIT here as
# separate owner calls; nothing else touches the connection meanwhile (no pull, no other write).


def txn_begin(conn: Any, sql: str) -> None:
    """Open the transaction (the client's own BEGIN; a READONLY one opens a plain deferred one)."""
    conn.execute("PRAGMA synchronous = NORMAL")  # the outbox commit is the durable one (§3 step 2c)
    try:
        conn.execute(sql)
    except BaseException:
        conn.execute("PRAGMA synchronous = FULL")
        raise


def txn_execute(
    conn: Any, sql: str, params: list[Any], want_rows: bool, is_dml: bool, is_insert: bool
) -> tuple[Any, bool]:
    """One statement of the open transaction (`engine.execute`); never in autocommit: a transaction
    the watchdog rolled back meanwhile must not turn its late statement into an unqueued local write."""
    if not conn.in_transaction:
        return SQLError("the transaction is no longer open on this node (rolled back)"), False
    return engine_execute(conn, sql, params, want_rows, is_dml, is_insert)


def txn_end(
    conn: Any,
    write: tuple[str, list[tuple[str, Any]], list[PlainStatement], list[ExecResult]] | None,
    retention: float,
    database_id: str | None = None,
) -> int | None:
    """COMMIT (with `write`: fingerprint, statements, local statements, local results, queued first as
    ONE outbox entry, durably) or ROLLBACK (`write` None and nothing to keep). The seq, if queued."""
    seq = None
    try:
        if write is not None and conn.in_transaction:
            outbox = _box()
            if database_id is not None and outbox.database_id() is None:
                outbox.set_database_id(database_id)
            fingerprint, statements, local, results = write
            (seq,) = outbox.append([(None, fingerprint, statements, local, results)], retention)
            crash_point("N2")  # §6: queued durably, the replica's COMMIT and the response not done
            conn.execute("COMMIT")
        elif conn.in_transaction:
            engine_rollback(conn)
    finally:
        conn.execute("PRAGMA synchronous = FULL")
    return seq


def txn_rollback(conn: Any) -> None:
    try:
        if conn.in_transaction:
            engine_rollback(conn)
    finally:
        conn.execute("PRAGMA synchronous = FULL")
