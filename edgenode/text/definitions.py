"""Text collection definitions, stored in the database so every replica learns them.

A definition is a row of `_edgenode_text_collections` (name, spec as JSON, uid), beside the
vector collections' `_edgenode_collections` and shaped like it: the uid is minted when the
definition is written, so an index built for an older definition (or for the same name on
another primary) never matches and is rebuilt. The table's change-feed triggers are the vector
feed's own (edgenode.feed), installed in the same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from edgenode import feed
from edgenode.api.errors import ApiError
from edgenode.text.models import TextSpec
from edgenode.vectors.collections import DatabaseLike, is_missing_table, schema_table_name, table_columns

DEFINITIONS_TABLE = "_edgenode_text_collections"

SCHEMA: list[tuple[str, list[Any]]] = [
    (
        # No UNIQUE: the node's statement analyzer trips on DDL that creates an index (see
        # edgenode.vectors.collections); a definition is replaced by DELETE + INSERT in one transaction.
        f"CREATE TABLE IF NOT EXISTS {DEFINITIONS_TABLE} ("
        "id INTEGER PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL, uid TEXT NOT NULL, "
        "created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
        [],
    ),
    *feed.SCHEMA,
]


@dataclass(frozen=True)
class TextDefinition:
    name: str
    spec: TextSpec
    uid: str

    def same_spec(self, other: TextSpec) -> bool:
        return msgspec.json.encode(self.spec) == msgspec.json.encode(other)


async def load_definitions(db: DatabaseLike, table_known: bool = False) -> dict[str, TextDefinition]:
    """The stored definitions. Unless the table is `table_known` to exist, the node's schema mirror
    is asked first (no I/O): this runs after every write, on nodes with no text collection too."""
    if not table_known and not db.may_have_table(DEFINITIONS_TABLE):
        return {}
    try:
        result = await db.read(f"SELECT name, spec, uid FROM {DEFINITIONS_TABLE} ORDER BY id")
    except Exception as exc:
        if is_missing_table(exc):
            return {}
        raise
    out: dict[str, TextDefinition] = {}
    for name, spec_json, uid in result.rows:
        try:
            spec = msgspec.json.decode(spec_json, type=TextSpec)
        except msgspec.DecodeError:
            continue  # written by a newer version we cannot read; leave it alone
        out[name] = TextDefinition(name=name, spec=spec, uid=uid)
    return out


async def check_against_table(db: DatabaseLike, spec: TextSpec) -> None:
    """Refuse a spec the table does not fit; `spec.table` becomes the schema's spelling of the name
    (edgenode.vectors.collections.schema_table_name says why)."""
    table = await schema_table_name(db, spec.table)
    columns = await table_columns(db, table) if table else {}
    if table is None or not columns:
        raise ApiError(400, "unknown_table", f"table {spec.table!r} does not exist")
    spec.table = table
    if hidden := feed.rowid_hidden(table, columns):
        raise ApiError(400, "invalid_collection", hidden)
    for label, col in [("column", c) for c in spec.columns] + [("filter column", c) for c in spec.filter_columns]:
        if col.lower() not in columns:
            raise ApiError(400, "unknown_column", f"{label} {col!r} is not a column of table {spec.table!r}")
    try:
        await db.read(f'SELECT rowid FROM "{spec.table}" LIMIT 0')
    except Exception as exc:
        raise ApiError(400, "invalid_collection", f"table {spec.table!r} has no rowid: {exc}") from exc


def put_statements(name: str, spec: TextSpec, keys: list[list[tuple[str, str]]]) -> list[tuple[str, list]]:
    """One transaction: store the definition (fresh uid) and install the table's feed triggers;
    `keys` are its unique keys (edgenode.vectors.collections.unique_keys)."""
    return [
        *SCHEMA,
        *feed.trigger_statements(spec.table),
        *feed.replace_trigger_statements(spec.table, keys),
        (f"DELETE FROM {DEFINITIONS_TABLE} WHERE name = ?", [name]),
        (
            f"INSERT INTO {DEFINITIONS_TABLE}(name, spec, uid) VALUES (?, ?, ?)",
            [name, msgspec.json.encode(spec).decode(), uuid.uuid4().hex],
        ),
    ]


def rename_statements(defs: dict[str, TextDefinition], old: str, new: str) -> list[tuple[str, list]]:
    """The definitions over table `old` name `new` instead, each with a new uid (rebuilt from the
    renamed table on every node), as for vector collections (edgenode.vectors.collections)."""
    statements: list[tuple[str, list]] = []
    for name, definition in defs.items():
        if definition.spec.table == old:
            spec = msgspec.json.decode(msgspec.json.encode(definition.spec), type=TextSpec)
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
