"""Applies `sql/NNN_name.sql` files in order, each once, each in one transaction.

Applied files are recorded in `_edgenode_migrations` with a SHA-256 of their text; a file that
changed after it was applied stops the runner, because the database no longer matches the file
and silently skipping it would hide that. The runner talks to a `MigrationTarget`, so the same
logic serves the primary (apsw), a standalone node (libsql) and a replica node (whose
migrations run on the primary through the write path).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TABLE = "_edgenode_migrations"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
    "checksum TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
)
_FILE_RE = re.compile(r"^(\d+)_([A-Za-z0-9_\-]+)\.sql$")


class MigrationError(Exception):
    """The migrations cannot be applied as asked; the message says which file and why."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        return split_statements(self.sql)


@dataclass
class MigrationReport:
    applied: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    dry_run: bool = False


class MigrationTarget(ABC):
    """Where migrations run. Implementations must make `run_atomic` all-or-nothing."""

    @abstractmethod
    def query(self, sql: str) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def run_atomic(self, statements: list[tuple[str, list[Any]]]) -> None: ...


class ApswTarget(MigrationTarget):
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql))

    def run_atomic(self, statements: list[tuple[str, list[Any]]]) -> None:
        with self.conn:  # apsw: a savepoint that rolls back on exception
            for sql, params in statements:
                self.conn.execute(sql, params)


class LibsqlTarget(MigrationTarget):
    """A libsql connection opened with isolation_level=None (explicit transactions)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql).fetchall())

    def run_atomic(self, statements: list[tuple[str, list[Any]]]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                self.conn.execute(sql, params)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise


def default_sql_dir() -> Path:
    """The shipped migrations, `edgenode/sql`: in a checkout a link to the repository's `sql/` (the
    one source), in a wheel or a frozen binary the files the build copied through that link."""
    return Path(str(importlib.resources.files("edgenode") / "sql"))


def split_statements(sql: str) -> list[str]:
    """Split a script at the semicolons SQLite's own tokenizer says end a statement.

    The libsql binding runs only the first statement of a string and `executescript` swallows
    errors, so each statement is sent on its own.
    """
    statements: list[str] = []
    start = 0
    for index, char in enumerate(sql):
        if char == ";" and sqlite3.complete_statement(sql[start : index + 1]):
            statement = sql[start : index + 1].strip()
            if _has_code(statement):
                statements.append(statement)
            start = index + 1
    tail = sql[start:].strip()
    if _has_code(tail):
        raise MigrationError(f"statement without a closing semicolon: {tail[:60]!r}")
    return statements


def _has_code(statement: str) -> bool:
    without_comments = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.S)
    return bool(without_comments.strip(" \t\r\n;"))


def discover(sql_dir: Path | None = None) -> list[Migration]:
    sql_dir = sql_dir or default_sql_dir()
    if not sql_dir.is_dir():
        raise MigrationError(f"migrations directory {sql_dir} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} also used by {found[version].path.name}")
        found[version] = Migration(version, match.group(2), path, path.read_text())
    return [found[v] for v in sorted(found)]


def run_migrations(
    target: MigrationTarget,
    sql_dir: Path | None = None,
    to: int | None = None,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
) -> MigrationReport:
    """Apply pending migrations up to and including version `to` (all when None)."""
    migrations = discover(sql_dir)
    report = MigrationReport(dry_run=dry_run)
    if not dry_run:
        target.run_atomic([(CREATE_TABLE, [])])
    recorded = _recorded(target)
    known = {m.version for m in migrations}
    for version, (name, _) in recorded.items():
        if version not in known:
            raise MigrationError(f"database has migration {version:03d}_{name} applied but its file is missing")
    for migration in migrations:
        label = migration.path.name
        if migration.version in recorded:
            name, checksum = recorded[migration.version]
            if checksum != migration.checksum:
                raise MigrationError(
                    f"{label} was changed after it was applied (checksum {checksum[:12]} in the database, "
                    f"{migration.checksum[:12]} on disk): restore the file and put the change in a new migration"
                )
            report.already.append(label)
            continue
        if to is not None and migration.version > to:
            break
        if dry_run:
            report.pending.append(label)
            continue
        if progress:
            progress(f"applying {label}")
        statements: list[tuple[str, list[Any]]] = [(s, []) for s in migration.statements()]
        statements.append(
            (
                f"INSERT INTO {TABLE} (version, name, checksum) VALUES (?, ?, ?)",
                [migration.version, migration.name, migration.checksum],
            )
        )
        try:
            target.run_atomic(statements)
        except Exception as exc:
            raise MigrationError(f"{label} failed and was rolled back: {exc}") from exc
        report.applied.append(label)
    return report


def _recorded(target: MigrationTarget) -> dict[int, tuple[str, str]]:
    try:
        rows = target.query(f"SELECT version, name, checksum FROM {TABLE} ORDER BY version")
    except Exception as exc:
        if "no such table" in str(exc):
            return {}
        raise
    return {int(v): (str(n), str(c)) for v, n, c in rows}


def status(target: MigrationTarget, sql_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every migration file with whether it is applied, for `/api/v1/status` and `edgenode status`."""
    recorded = _recorded(target)
    return [{"version": m.version, "name": m.name, "applied": m.version in recorded} for m in discover(sql_dir)]
