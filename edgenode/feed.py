"""Change feed: triggers append (seq, table, rowid, op) to `_edgenode_changes` on the writer.

The table replicates like any other, so every node applies the same feed after each sync. The
op is informational: applying a change re-reads the row's current state, which makes replaying
any range idempotent (a crash between applying and persisting only costs a replay).

A REPLACE conflict on a UNIQUE key other than the rowid (`INSERT OR REPLACE INTO
prompt_embeddings ...` on (prompt_id, model)) deletes the old row without firing DELETE triggers
(SQLite fires them only under `recursive_triggers`, a setting of the writing connection, which a
node cannot choose for every client). So tables with such keys get BEFORE INSERT/UPDATE triggers
that record, as op 'r', the rowids of rows holding the new row's key values: rows the statement may
replace. Recording a row that survives is harmless, since applying re-reads it. Keys are read from
the table's unique indexes when the triggers are installed; an expression index cannot be matched
this way and is skipped, and `replace_triggers_current` lets a node notice keys added later.

Compaction deletes changes every local consumer has applied (`compact` asks every registered
`Consumer` for its floor: vector and text collections, the change stream's retention), but keeps the
newest `retain` so replicas that lag a little do not have to rescan; `compacted_through` tells a
node whose position fell behind the compacted range that it must rebuild from a full scan (or, for a
stream subscriber, resync).

**Captured tables** (the change stream, `edgenode.changes`). A table the stream serves gets a
second set of triggers (`capture_statements`) that append ops 'I', 'U', 'D' *with the row's
values* in the `row` column: a JSON object of column name -> `quote(value)`, SQLite's own SQL
literal of the value. A literal is exact for every storage class: 64-bit integers as digits, text
as written, blobs as `X'hex'`, and floats with as many digits as it takes to read back the same
double (checked: `quote()` round-trips random doubles bit-exactly; -0.0 reads back as 0.0, as
SQLite stores it). JSON alone would not do: `json_object` refuses blobs and prints floats with 15
digits. Capturing in the trigger, rather than re-reading the row when the event is delivered, keeps
every version (an insert then an update in one transaction are two events with their own rows; a
re-read would show the final row twice, or none after a delete) at the price of writing the row
twice. 'D' carries the deleted row's values, so a stream's column filter can judge a delete.

**Commit markers** (`edgenode.commit_marks`, the one rule for the node's writer and the primary).
A unit of writes that appended captured changes also appends one op 'C' row whose `rid` is the seq
of its first change: the stream turns it into a commit event. Units: a REST write transaction and
each write of a group commit (`engine.run_transaction`, `engine.run_group`), a standalone node's
Hrana transaction (its COMMIT), and on `edgenode primary` every transaction and every savepoint
a RELEASE closes (a forward combiner's group: one savepoint per write). Writes the node does not
commit itself carry no marker (see `edgenode.changes`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import weakref
from typing import Any, Protocol

from edgenode.commit_marks import CHANGES_TABLE, COMMIT_OP, MARK_SQL, SEQ_SQL  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

STATE_TABLE = "_edgenode_feed_state"

SCHEMA: list[tuple[str, list[Any]]] = [
    (
        f"CREATE TABLE IF NOT EXISTS {CHANGES_TABLE} ("
        "seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, rid INTEGER NOT NULL, op TEXT NOT NULL, row TEXT)",
        [],
    ),
    # One row (id = 1); an INTEGER PRIMARY KEY because the node's DDL analyzer trips on implicit indexes.
    (f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (id INTEGER PRIMARY KEY, compacted_through INTEGER NOT NULL)", []),
]


def _trigger(table: str, op: str) -> str:
    return f'"_edgenode_feed_{table}_{op}"'


def rowid_hidden(table: str, columns: Any) -> str | None:
    """Why the feed cannot follow `table`, when a column named rowid hides the table's rowid: the
    triggers' `new.rowid` would read that column (a NULL there failed every insert on the feed's
    NOT NULL rid, and a text value stood in for a row id)."""
    if any(str(c).lower() == "rowid" for c in columns):
        return f"table {table!r} has a column named rowid, which hides the rowid the change feed follows; rename it"
    return None


async def refollow(db: Any, table: str) -> bool:
    """Put back the feed triggers of a table dropped and created again and have every consumer
    rebuild what it holds over it (the old rows are gone, the new ones were never recorded);
    False when its triggers are all there."""
    if not await feed_triggers_missing(db, table):
        return False
    await db.write(trigger_statements(table))
    for consumer in consumers(db):
        await consumer.table_recreated(table)
    return True


# Per database: a lock and, per table, what the first look since this process started found.
_start_checks: weakref.WeakKeyDictionary[Any, tuple[asyncio.Lock, dict[str, bool]]] = weakref.WeakKeyDictionary()


async def recreated_before_start(db: Any, table: str) -> bool:
    """Whether `table` was dropped and created again before this process first looked (while the
    node was down, or running without a `refollow` since): its feed triggers are gone though the
    table is there. They are put back then. Every caller gets the first look's answer, so each
    collection over the table opening at start rebuilds instead of loading an index of the old
    table's rows and waiting for changes that were never recorded. A failed look is not kept."""
    lock, seen = _start_checks.setdefault(_key(db), (asyncio.Lock(), {}))
    async with lock:
        if table not in seen:
            recreated = False
            if await feed_triggers_missing(db, table):
                result = await db.read("SELECT count(*) FROM pragma_table_list(?) WHERE schema = 'main'", [table])
                if int(result.rows[0][0]) > 0:  # dropped and not created again: nothing to follow
                    keys = await unique_keys(db, table)
                    await db.write(trigger_statements(table) + replace_trigger_statements(table, keys))
                    recreated = True
            seen[table] = recreated
        return seen[table]


async def feed_triggers_missing(db: Any, table: str) -> bool:
    """Some of the table's feed triggers are gone: DROP TABLE takes a table's triggers with it, so a
    table dropped and created again under its name is no longer followed until they are put back."""
    names = [_trigger(table, op).strip('"') for op in ("i", "u", "d")]
    result = await db.read("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?, ?)", names)
    return int(result.rows[0][0]) < 3


def trigger_statements(table: str) -> list[tuple[str, list]]:
    """Triggers for one table; `table` is a validated plain identifier (see CollectionSpec.validate)."""
    ins = f"INSERT INTO {CHANGES_TABLE}(tbl, rid, op)"
    return [
        (
            f'CREATE TRIGGER IF NOT EXISTS {_trigger(table, "i")} AFTER INSERT ON "{table}" '
            f"BEGIN {ins} VALUES ('{table}', new.rowid, 'i'); END",
            [],
        ),
        (
            # An UPDATE that changes the rowid must also retire the old rowid.
            f'CREATE TRIGGER IF NOT EXISTS {_trigger(table, "u")} AFTER UPDATE ON "{table}" '
            f"BEGIN {ins} SELECT '{table}', old.rowid, 'd' WHERE old.rowid IS NOT new.rowid; "
            f"{ins} VALUES ('{table}', new.rowid, 'u'); END",
            [],
        ),
        (
            f'CREATE TRIGGER IF NOT EXISTS {_trigger(table, "d")} AFTER DELETE ON "{table}" '
            f"BEGIN {ins} VALUES ('{table}', old.rowid, 'd'); END",
            [],
        ),
    ]


async def unique_keys(db: Any, table: str) -> list[list[tuple[str, str]]]:
    """The (column, collation) lists of `table`'s UNIQUE constraints and indexes, the rowid's own
    excepted; expression indexes are left out (see the module doc)."""
    indexes = await db.read('SELECT name FROM pragma_index_list(?) WHERE "unique" = 1 ORDER BY name', [table])
    keys = []
    for (index,) in indexes.rows:
        info = await db.read("SELECT cid, name, coll FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno", [index])
        if info.rows and all(cid >= 0 for cid, _, _ in info.rows):
            keys.append([(str(name), str(coll)) for _, name, coll in info.rows])
    return keys


def replace_triggers(table: str, keys: list[list[tuple[str, str]]]) -> dict[str, str]:
    """Trigger name -> CREATE TRIGGER text (as sqlite_master keeps it) for the unique `keys` of
    `table`, each a list of (column, collation); none when the table has no such keys."""
    if not keys:
        return {}
    ins = f"INSERT INTO {CHANGES_TABLE}(tbl, rid, op)"
    match = " OR ".join(
        "(" + " AND ".join(f'"{col}" = new."{col}" COLLATE {coll}' for col, coll in key) + ")" for key in keys
    )
    out = {}
    for op, event, self_row in (("ri", "INSERT", ""), ("ru", "UPDATE", " AND rowid IS NOT old.rowid")):
        name = _trigger(table, op)
        out[name] = (
            f'CREATE TRIGGER {name} BEFORE {event} ON "{table}" '
            f"BEGIN {ins} SELECT '{table}', rowid, 'r' FROM \"{table}\" WHERE ({match}){self_row}; END"
        )
    return out


def replace_trigger_statements(table: str, keys: list[list[tuple[str, str]]]) -> list[tuple[str, list]]:
    """Drop and recreate the replace triggers, so new or removed unique keys take effect."""
    drops = [(f"DROP TRIGGER IF EXISTS {_trigger(table, op)}", []) for op in ("ri", "ru")]
    return [*drops, *((sql, []) for sql in replace_triggers(table, keys).values())]


async def replace_triggers_current(db: Any, table: str, keys: list[list[tuple[str, str]]]) -> bool:
    """The installed replace triggers of `table` are exactly the ones its current keys call for."""
    names = [_trigger(table, op).strip('"') for op in ("ri", "ru")]
    result = await db.read("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?)", names)
    installed = {f'"{name}"': sql for name, sql in result.rows}
    return installed == replace_triggers(table, keys)


def drop_trigger_statements(table: str) -> list[tuple[str, list]]:
    return [(f"DROP TRIGGER IF EXISTS {_trigger(table, op)}", []) for op in ("i", "u", "d", "ri", "ru")]


CAPTURE_OPS = {"I": "insert", "U": "update", "D": "delete"}


def _capture_trigger(table: str, op: str) -> str:
    return f'"_edgenode_stream_{table}_{op}"'


def _row_json(alias: str, columns: list[str]) -> str:
    pairs = ", ".join(f"'{c}', quote({alias}.\"{c}\")" for c in columns)
    return f"json_object({pairs})"


def capture_statements(table: str, columns: list[str], has_row_column: bool) -> list[tuple[str, list]]:
    """(Re)install the stream's triggers of `table` for its current `columns` (plain identifiers,
    checked by the caller against the schema); the feed table first, with its `row` column."""
    ins = f"INSERT INTO {CHANGES_TABLE}(tbl, rid, op, row)"
    out: list[tuple[str, list]] = [*SCHEMA]
    if not has_row_column:
        out.append((f"ALTER TABLE {CHANGES_TABLE} ADD COLUMN row TEXT", []))
    out += [(f"DROP TRIGGER IF EXISTS {_capture_trigger(table, op)}", []) for op in "iud"]
    new, old = _row_json("new", columns), _row_json("old", columns)
    out += [
        (
            f'CREATE TRIGGER {_capture_trigger(table, "i")} AFTER INSERT ON "{table}" '
            f"BEGIN {ins} VALUES ('{table}', new.rowid, 'I', {new}); END",
            [],
        ),
        (
            f'CREATE TRIGGER {_capture_trigger(table, "u")} AFTER UPDATE ON "{table}" '
            f"BEGIN {ins} SELECT '{table}', old.rowid, 'D', {old} WHERE old.rowid IS NOT new.rowid; "
            f"{ins} VALUES ('{table}', new.rowid, 'U', {new}); END",
            [],
        ),
        (
            f'CREATE TRIGGER {_capture_trigger(table, "d")} AFTER DELETE ON "{table}" '
            f"BEGIN {ins} VALUES ('{table}', old.rowid, 'D', {old}); END",
            [],
        ),
    ]
    return out


def drop_capture_statements(table: str) -> list[tuple[str, list]]:
    return [(f"DROP TRIGGER IF EXISTS {_capture_trigger(table, op)}", []) for op in "iud"]


async def captured_tables(db: Any) -> set[str]:
    """Tables whose stream triggers are installed (all three) on the table they were made for (a
    renamed table's triggers still write its old name: see `follow_renames`)."""
    counts: dict[str, int] = {}
    for name, on in await _edgenode_triggers(db):
        recorded = recorded_table(name)
        if name.startswith(_STREAM_PREFIX) and recorded == on:
            counts[on] = counts.get(on, 0) + 1
    return {t for t, n in counts.items() if n == 3}


# -- renamed tables ------------------------------------------------------------------------------
#
# `ALTER TABLE t RENAME TO u` moves t's triggers to u (SQLite rewrites their ON clause and the
# table's name in their bodies) but not the name they write into the feed, a string literal: u's
# changes went on under t's name, where no consumer of u looked, and a capture of u added a second
# set of triggers (each change twice). So the node follows a rename: `follow_renames` puts the
# triggers back under the new name and has the consumers move what they hold over the table (the
# vector and text definitions name the new table, with a new uid: rebuilt from it), in one
# transaction. The change stream's entries of the table are relabelled to the new name in it too,
# so a subscriber resuming on the new name with its cursor misses nothing. The change hub runs it
# (`ChangeHub`) when the schema mirror shows a renamed trigger (no I/O per commit:
# `renames_suspected`), and before a capture.

_FEED_PREFIX = "_edgenode_feed_"
_STREAM_PREFIX = "_edgenode_stream_"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def recorded_table(trigger: str) -> str | None:
    """The table name one of edgenode's triggers writes into the feed (None: not one of ours)."""
    for prefix, ops in ((_FEED_PREFIX, ("i", "u", "d", "ri", "ru")), (_STREAM_PREFIX, ("i", "u", "d"))):
        if trigger.startswith(prefix):
            rest = trigger[len(prefix) :]
            for op in ops:
                if rest.endswith(f"_{op}") and len(rest) > len(op) + 1:
                    return rest[: -len(op) - 1]
    return None


def renamed_from(triggers: Any) -> dict[str, str]:
    """Recorded table name -> the table its triggers are on now, for every renamed table, from
    (trigger name, table) pairs."""
    out: dict[str, str] = {}
    for name, on in triggers:
        recorded = recorded_table(name)
        if recorded is not None and recorded != on:
            out[recorded] = on
    return out


# Per database: the mirror's trigger list last judged (the analyzer keeps one object until the
# schema changes) and the verdict, so a check after every commit is an identity test.
_judged: weakref.WeakKeyDictionary[Any, tuple[Any, bool]] = weakref.WeakKeyDictionary()


def renames_suspected(db: Any) -> bool:
    """The schema as the node last read it (its analyzer's mirror; no I/O) has a renamed table."""
    key = _key(db)
    analyzer = getattr(key, "analyzer", None)
    if analyzer is None:
        return False
    triggers = analyzer.triggers()
    judged = _judged.get(key)
    if judged is None or judged[0] is not triggers:
        judged = _judged[key] = (triggers, bool(renamed_from(triggers)))
    return judged[1]


def followable(name: str) -> bool:
    """Whether triggers can be made for `name` (a plain identifier, as a capture requires)."""
    return bool(_IDENT.match(name)) and not name.lower().startswith(("_edgenode", "sqlite_"))


async def _edgenode_triggers(db: Any) -> list[tuple[str, str]]:
    result = await db.read(
        "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '\\_edgenode\\_%' ESCAPE '\\'"
    )
    return [(str(name), str(on)) for name, on in result.rows]


async def follow_renames(db: Any) -> dict[str, str]:
    """Move the triggers of every renamed table (and what the consumers hold over it) to its new
    name, in one transaction; returns old -> new name (empty when nothing was renamed). A new name
    triggers cannot be made for (not a plain identifier) loses its triggers: nothing goes on under
    the old name, and the consumers say why their collections stopped following it."""
    triggers = await _edgenode_triggers(db)
    renames = renamed_from(triggers)
    if not renames:
        return {}
    statements: list[tuple[str, list]] = []
    captured = {on for name, on in triggers if name.startswith(_STREAM_PREFIX) and recorded_table(name) == on}
    for old, new in renames.items():
        had_feed = any(n.startswith(_FEED_PREFIX) and recorded_table(n) == old for n, _ in triggers)
        had_capture = any(n.startswith(_STREAM_PREFIX) and recorded_table(n) == old for n, _ in triggers)
        statements += drop_trigger_statements(old) + drop_capture_statements(old)
        if not followable(new):
            continue
        if had_feed:
            statements += trigger_statements(new) + replace_trigger_statements(new, await unique_keys(db, new))
        if had_capture and new not in captured:
            result = await db.read("SELECT name FROM pragma_table_info(?)", [new])
            columns = [str(c) for (c,) in result.rows]
            if all(_IDENT.match(c) for c in columns):
                # Its recorded changes go with it (a capture of `new` made meanwhile has its own).
                statements.append(
                    (f"UPDATE {CHANGES_TABLE} SET tbl = ? WHERE tbl = ? AND op IN ('I', 'U', 'D')", [new, old])
                )
                statements += capture_statements(new, columns, await has_row_column(db))
            else:
                log.warning("table %s (was %s) has a column that is not a plain name: no longer captured", new, old)
        for consumer in consumers(db):
            statements += await consumer.rename_statements(old, new)
    for old, new in renames.items():
        if not followable(new):
            for consumer in consumers(db):
                consumer.table_unfollowable(old, new)
    await db.write(statements)
    return renames


async def has_row_column(db: Any) -> bool:
    """Whether the feed table needs no `row` column added (it has one, or does not exist yet)."""
    result = await db.read(f"SELECT count(*), sum(name = 'row') FROM pragma_table_info('{CHANGES_TABLE}')")
    columns, has_row = result.rows[0]
    return columns == 0 or bool(has_row)


def parse_literal(text: str) -> Any:
    """A `quote()` literal back to its value: NULL, an integer, a real, 'text' or X'blob'."""
    if text == "NULL":
        return None
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    if text.startswith("X'"):
        return bytes.fromhex(text[2:-1])
    try:
        return int(text)
    except ValueError:
        return float(text)


def decode_row(row_json: str | None) -> dict[str, Any] | None:
    if row_json is None:
        return None
    return {column: parse_literal(literal) for column, literal in json.loads(row_json).items()}


# The stream's rows of the feed (captured changes and commit markers), in seq order.
EVENTS_SQL = (
    f"SELECT seq, tbl, rid, op, row FROM {CHANGES_TABLE} "
    "WHERE seq > ? AND seq <= ? AND op IN ('I', 'U', 'D', 'C') ORDER BY seq LIMIT ?"
)


EVENT_AT_SQL = f"SELECT seq, tbl, rid, op, row FROM {CHANGES_TABLE} WHERE seq = ? AND op IN ('I', 'U', 'D')"


async def read_event_at(db: Any, seq: int) -> list[Any] | None:
    """The captured change at `seq` (as `read_events` gives it); None when `seq` is a commit marker,
    another consumer's entry, compacted, or not there (yet)."""
    try:
        result = await db.read(EVENT_AT_SQL, [seq])
    except Exception as exc:
        if "no such table" in str(exc) or "no such column" in str(exc):
            return None
        raise
    return result.rows[0] if result.rows else None


async def read_events(db: Any, after: int, upto: int, limit: int) -> list[list[Any]]:
    """Captured changes and commit markers with after < seq <= upto, at most `limit`."""
    try:
        result = await db.read(EVENTS_SQL, [after, upto, limit])
    except Exception as exc:
        if "no such table" in str(exc) or "no such column" in str(exc):
            return []
        raise
    return result.rows


async def head(db: Any) -> int:
    """The highest seq ever assigned (survives compaction, thanks to AUTOINCREMENT), at most the
    database's `feed_bound` (a local-first node's synced head)."""
    try:
        result = await db.read("SELECT seq FROM sqlite_sequence WHERE name = ?", [CHANGES_TABLE])
    except Exception as exc:
        if "no such table" in str(exc):
            return 0
        raise
    value = int(result.rows[0][0]) if result.rows else 0
    bound = db.feed_bound()
    return value if bound is None else min(value, bound)


async def compacted_through(db: Any) -> int:
    try:
        result = await db.read(f"SELECT compacted_through FROM {STATE_TABLE} WHERE id = 1")
    except Exception as exc:
        if "no such table" in str(exc):
            return 0
        raise
    return int(result.rows[0][0]) if result.rows else 0


async def changed_rows(
    db: Any, table: str, columns: list[str], low: int, high: int
) -> list[tuple[int, list[Any] | None]]:
    """Rowids of `table` changed in (low, high] with their current values (None when deleted)."""
    cols = ", ".join(f't."{c}"' for c in columns)
    result = await db.read(
        f"SELECT c.rid, t.rowid IS NOT NULL, {cols} FROM "
        f"(SELECT DISTINCT rid FROM {CHANGES_TABLE} WHERE seq > ? AND seq <= ? AND tbl = ?) c "
        f'LEFT JOIN "{table}" t ON t.rowid = c.rid',
        [low, high, table],
    )
    return [(int(row[0]), list(row[2:]) if row[1] else None) for row in result.rows]


def compact_statements(through: int) -> list[tuple[str, list]]:
    return [
        (f"DELETE FROM {CHANGES_TABLE} WHERE seq <= ?", [through]),
        (
            f"INSERT INTO {STATE_TABLE}(id, compacted_through) VALUES (1, ?) "
            "ON CONFLICT(id) DO UPDATE SET compacted_through = max(compacted_through, excluded.compacted_through)",
            [through],
        ),
    ]


class Consumer(Protocol):
    """A local reader of the feed besides the vector collections (text collections): compaction
    keeps what it still needs, and a table's triggers stay while it indexes the table."""

    def feed_floor(self) -> int | None:
        """The lowest position it still has to apply past; None while it cannot say (a build)."""
        ...

    def feed_tables(self) -> set[str]: ...

    async def table_recreated(self, table: str) -> None:
        """`table` was dropped and created again (`refollow`): rebuild what it holds over it."""
        ...

    async def rename_statements(self, old: str, new: str) -> list[tuple[str, list]]:
        """Statements (run with the triggers' move, `follow_renames`) that make what it holds over
        table `old` follow it to `new`."""
        ...

    def table_unfollowable(self, old: str, new: str) -> None:
        """`old` was renamed to `new`, which the feed cannot follow: say so on what it held over it."""
        ...


# Both weak: a consumer holds its database, so strong references here would keep both alive.
_consumers: weakref.WeakKeyDictionary[Any, weakref.WeakSet[Any]] = weakref.WeakKeyDictionary()


def _key(db: Any) -> Any:
    return getattr(db, "inner", db)  # a wrapper (retrying reads) and its database are one feed


def add_consumer(db: Any, consumer: Consumer) -> None:
    _consumers.setdefault(_key(db), weakref.WeakSet()).add(consumer)


def consumers(db: Any) -> list[Consumer]:
    return list(_consumers.get(_key(db), ()))


def consumers_floor(db: Any) -> int | None:
    """The lowest position any registered consumer still needs; None while one cannot say."""
    floor = 2**62
    for consumer in consumers(db):
        mine = consumer.feed_floor()
        if mine is None:
            return None
        floor = min(floor, mine)
    return floor


async def compact(db: Any, floor: int, threshold: int, retain: int) -> None:
    """Trim the feed through `floor` (what the caller applied), never past what another registered
    consumer still needs, when it holds at least `threshold` entries, keeping the newest `retain`
    for replicas that lag a little."""
    others = consumers_floor(db)
    if others is None:
        return
    floor = min(floor, others)
    result = await db.read(f"SELECT min(seq), max(seq) FROM {CHANGES_TABLE}")
    low, high = result.rows[0] if result.rows else (None, None)
    if low is None or high - low + 1 < threshold:
        return
    through = min(floor, high - retain)
    if through >= low:
        await db.write(compact_statements(through))
