"""Collection definitions, stored in the database so every replica learns them.

A definition is a row of `_edgenode_collections` (name, spec as JSON, uid). The uid is minted
when the definition is written, so an index file built for an older definition, or for the same
name on another primary, never matches and is rebuilt.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from edgenode import feed
from edgenode.api.errors import ApiError
from edgenode.feed import unique_keys
from edgenode.vectors.models import NAME_RE, CollectionSpec

log = logging.getLogger(__name__)
DEFINITIONS_TABLE = "_edgenode_collections"

SCHEMA: list[tuple[str, list[Any]]] = [
    (
        # No UNIQUE/TEXT PRIMARY KEY: apsw 3.54's query_info (the node's statement analyzer) fails on
        # DDL that creates an index; a definition is replaced by DELETE + INSERT in one transaction.
        f"CREATE TABLE IF NOT EXISTS {DEFINITIONS_TABLE} ("
        "id INTEGER PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL, uid TEXT NOT NULL, "
        "created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
        [],
    ),
    *feed.SCHEMA,
]

_F32_TYPE = re.compile(r"^\s*F32_BLOB\s*\(\s*(\d+)\s*\)\s*$", re.IGNORECASE)


class DatabaseLike(Protocol):
    """The methods of `edgenode.database.Database` the vector layer uses."""

    async def read(self, sql: str, params: list | None = None) -> Any: ...

    async def write(self, statements: list[tuple[str, list]]) -> Any: ...

    def add_change_listener(self, callback: Any) -> None: ...

    def may_have_table(self, name: str) -> bool: ...
    def feed_bound(self) -> int | None: ...


@dataclass(frozen=True)
class Definition:
    name: str
    spec: CollectionSpec
    uid: str

    def same_spec(self, other: CollectionSpec) -> bool:
        return msgspec.json.encode(self.spec) == msgspec.json.encode(other)


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise ApiError(400, "invalid_collection_name", f"collection name {name!r} must match {NAME_RE.pattern}")


def is_missing_table(exc: Exception) -> bool:
    return "no such table" in str(exc)


async def load_definitions(db: DatabaseLike) -> dict[str, Definition]:
    if not db.may_have_table(DEFINITIONS_TABLE):
        return {}  # no read: this runs after every write, on nodes with no collection too
    try:
        result = await db.read(f"SELECT name, spec, uid FROM {DEFINITIONS_TABLE} ORDER BY id")
    except Exception as exc:
        if is_missing_table(exc):
            return {}
        raise
    out: dict[str, Definition] = {}
    for name, spec_json, uid in result.rows:
        try:
            spec = msgspec.json.decode(spec_json, type=CollectionSpec)
        except msgspec.DecodeError:
            continue  # a definition written by a newer version we cannot read; leave it alone
        out[name] = Definition(name=name, spec=spec, uid=uid)
    return out


async def schema_table_name(db: DatabaseLike, table: str) -> str | None:
    """`table` as the schema spells it, None when there is no such table. SQLite matches table names
    without regard to case, but the change feed records the triggers' table name as text and its
    consumers match that text exactly: a collection over 'DOCS' never saw the changes of 'docs'."""
    result = await db.read("SELECT name FROM pragma_table_list(?) WHERE schema = 'main'", [table])
    return str(result.rows[0][0]) if result.rows else None


async def table_columns(db: DatabaseLike, table: str) -> dict[str, str]:
    """Column name (lowercased) -> declared type; empty when the table does not exist."""
    result = await db.read("SELECT name, type FROM pragma_table_info(?)", [table])
    return {str(name).lower(): str(ctype or "") for name, ctype in result.rows}


async def check_against_table(db: DatabaseLike, spec: CollectionSpec) -> None:
    """Refuse a spec the table does not fit; `spec.table` becomes the schema's spelling of the name."""
    table = await schema_table_name(db, spec.table)
    columns = await table_columns(db, table) if table else {}
    if table is None or not columns:
        raise ApiError(400, "unknown_table", f"table {spec.table!r} does not exist")
    spec.table = table
    if hidden := feed.rowid_hidden(table, columns):
        raise ApiError(400, "invalid_collection", hidden)
    for label, col in [("column", spec.column)] + [("filter column", c) for c in spec.filter_columns]:
        if col.lower() not in columns:
            raise ApiError(400, "unknown_column", f"{label} {col!r} is not a column of table {spec.table!r}")
    declared = _F32_TYPE.match(columns[spec.column.lower()])
    if declared and int(declared.group(1)) != spec.dim:
        raise ApiError(
            400,
            "dimension_mismatch",
            f"column {spec.column!r} is declared F32_BLOB({declared.group(1)}) but dim is {spec.dim}",
        )
    try:
        await db.read(f'SELECT rowid FROM "{spec.table}" LIMIT 0')
    except Exception as exc:
        raise ApiError(400, "invalid_collection", f"table {spec.table!r} has no rowid: {exc}") from exc


async def heal_replace_triggers(db: DatabaseLike, table: str) -> None:
    """Reinstall the table's replace triggers when its unique keys changed since they were
    installed (or they come from an older edgenode); see edgenode.feed."""
    keys = await unique_keys(db, table)
    if not await feed.replace_triggers_current(db, table, keys):
        log.warning("the change-feed triggers of %s do not match its unique keys; reinstalling them", table)
        await db.write(feed.replace_trigger_statements(table, keys))


def put_statements(
    name: str, spec: CollectionSpec, keys: list[list[tuple[str, str]]]
) -> tuple[str, list[tuple[str, list]]]:
    """Statements (one transaction) that store a definition and install its feed triggers;
    `keys` are the table's unique keys (`unique_keys`)."""
    uid = uuid.uuid4().hex
    statements = [
        *SCHEMA,
        *feed.trigger_statements(spec.table),
        *feed.replace_trigger_statements(spec.table, keys),
        (f"DELETE FROM {DEFINITIONS_TABLE} WHERE name = ?", [name]),
        (
            f"INSERT INTO {DEFINITIONS_TABLE}(name, spec, uid) VALUES (?, ?, ?)",
            [name, msgspec.json.encode(spec).decode(), uid],
        ),
    ]
    return uid, statements


def renamed_away(old: str, new: str) -> str:
    """Why a collection over `old` stopped following it: renamed to a name triggers cannot have."""
    return (
        f"table {old!r} was renamed to {new!r}, which the change feed cannot follow (not a plain "
        f"identifier); the index no longer changes: rename the table to a plain name, then PUT the "
        f"collection with that table"
    )


def rename_statements(defs: dict[str, Definition], old: str, new: str) -> list[tuple[str, list]]:
    """The definitions over table `old` name `new` instead, each with a new uid, so every node
    rebuilds it from the renamed table; a definition changed meanwhile (its uid) is left alone."""
    statements: list[tuple[str, list]] = []
    for name, definition in defs.items():
        if definition.spec.table == old:
            spec = msgspec.json.decode(msgspec.json.encode(definition.spec), type=CollectionSpec)
            spec.table = new
            statements.append(
                (
                    f"UPDATE {DEFINITIONS_TABLE} SET spec = ?, uid = ? WHERE name = ? AND uid = ?",
                    [msgspec.json.encode(spec).decode(), uuid.uuid4().hex, name, definition.uid],
                )
            )
    return statements


def delete_statements(name: str, table: str, table_still_used: bool) -> list[tuple[str, list]]:
    statements: list[tuple[str, list]] = [(f"DELETE FROM {DEFINITIONS_TABLE} WHERE name = ?", [name])]
    if not table_still_used:
        statements += feed.drop_trigger_statements(table)
        statements.append((f"DELETE FROM {feed.CHANGES_TABLE} WHERE tbl = ?", [table]))
    return statements
