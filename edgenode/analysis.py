"""What a statement would do, decided by SQLite's own compiler rather than by reading the SQL.

The libsql Python binding has no authorizer, no `sqlite3_stmt_readonly`, no declared types and
silently runs only the first of several statements. So every statement is first compiled by
apsw against an in-memory *mirror* of the database's schema, with an authorizer recording each
action the compiled program would take. The mirror holds no data; it is rebuilt whenever the
schema changes. The statement itself then runs on the real libSQL connection.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import apsw
import apsw.ext

# libSQL's own SQL functions, unknown to plain SQLite: declared in the mirror so statements
# using them compile there (they run on the real libSQL connection).
_LIBSQL_FUNCTIONS = (
    "vector",
    "vector32",
    "vector64",
    "vector_extract",
    "vector_distance_cos",
    "vector_distance_l2",
    "libsql_vector_idx",
    "vector1bit",
    "vector8",
    "vector16",
    "vectorb16",
)

# Pragmas whose argument only names what to report on (`PRAGMA table_info(t)`).
INSPECT_PRAGMAS = frozenset(
    "table_info table_xinfo table_list index_list index_info index_xinfo foreign_key_list foreign_key_check "
    "quick_check integrity_check".split()
)
# Pragmas that report when given no value; with a value they change a setting.
REPORT_PRAGMAS = frozenset(
    "database_list collation_list function_list module_list pragma_list compile_options user_version "
    "schema_version application_id page_count page_size freelist_count data_version encoding journal_mode "
    "foreign_keys query_only synchronous cache_size busy_timeout mmap_size".split()
)

_DML_ACTIONS = frozenset({apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE})
_DDL_ACTIONS = frozenset(
    {
        apsw.SQLITE_CREATE_INDEX,
        apsw.SQLITE_CREATE_TABLE,
        apsw.SQLITE_CREATE_TRIGGER,
        apsw.SQLITE_CREATE_VIEW,
        apsw.SQLITE_DROP_INDEX,
        apsw.SQLITE_DROP_TABLE,
        apsw.SQLITE_DROP_TRIGGER,
        apsw.SQLITE_DROP_VIEW,
        apsw.SQLITE_ALTER_TABLE,
        apsw.SQLITE_CREATE_VTABLE,
        apsw.SQLITE_DROP_VTABLE,
    }
)
# Functions that reach outside the database even inside a SELECT.
_DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})


if "index_name" not in {f.name for f in dataclasses.fields(apsw.ext.QueryAction)}:
    # apsw 3.54.1's query_info records index names (CREATE INDEX, and CREATE TABLE with UNIQUE or a
    # non-integer PRIMARY KEY) into a QueryAction that has no such field, failing with TypeError.
    @dataclasses.dataclass
    class _QueryAction(apsw.ext.QueryAction):
        index_name: str | None = None

    apsw.ext.QueryAction = _QueryAction  # type: ignore[misc]


class AnalysisError(Exception):
    """The statement does not compile (bad SQL): the message is SQLite's."""


@dataclass(frozen=True)
class Analysis:
    sql: str
    is_readonly: bool
    why_not_readonly: str | None
    is_explain: bool
    is_dml: bool
    is_ddl: bool
    is_insert: bool
    is_transaction_control: bool
    touches_files: bool  # ATTACH / DETACH / VACUUM INTO
    changes_pragma: bool
    has_more_statements: bool
    param_count: int
    param_names: tuple[str | None, ...]
    columns: tuple[tuple[str, str | None], ...]  # (name, declared type)
    # `PRAGMA name = value` (or `name(value)`): the pragma's name, lower case, and its value as written.
    pragma_setting: tuple[str, str] | None = None


def _deny_reason(action: apsw.ext.QueryAction) -> str | None:
    code = action.action
    if code in (apsw.SQLITE_SELECT, apsw.SQLITE_READ, apsw.SQLITE_RECURSIVE):
        return None
    if code == apsw.SQLITE_FUNCTION:
        if (action.function_name or "").lower() in _DENIED_FUNCTIONS:
            return f"function {action.function_name} is not allowed"
        return None
    if code == apsw.SQLITE_PRAGMA:
        name = (action.pragma_name or "").lower()
        if name in INSPECT_PRAGMAS or (action.pragma_value is None and name in REPORT_PRAGMAS):
            return None
        return f"PRAGMA {name} changes connection or database state"
    if code in (apsw.SQLITE_ATTACH, apsw.SQLITE_DETACH):
        return "ATTACH/DETACH reaches other database files"
    return f"statement would {action.action_name.removeprefix('SQLITE_').lower().replace('_', ' ')}"


class StatementAnalyzer:
    """Thread-safe; results are cached per SQL text until the schema changes."""

    def __init__(self, schema: Callable[[], list[str]], cache_size: int = 2048) -> None:
        self._schema = schema
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Analysis] = OrderedDict()
        self._cache_size = cache_size
        self._slots: OrderedDict[str, tuple[tuple[str, ...], tuple[int, ...]]] = OrderedDict()
        self._tables: frozenset[str] | None = None  # the mirror's table names, lower case, once asked
        self._triggers: tuple[tuple[str, str], ...] | None = None  # (name, table) of its triggers, once asked
        self._mirror = self._build_mirror()

    def _build_mirror(self) -> apsw.Connection:
        mirror = apsw.Connection(":memory:")
        for name in _LIBSQL_FUNCTIONS:
            mirror.create_scalar_function(name, _stub, -1, deterministic=True)
        for statement in self._schema():
            try:
                mirror.execute(statement)
            except apsw.Error:
                # e.g. a virtual table whose module only the real engine has: statements
                # touching it fail analysis and are refused, which is the safe direction.
                continue
        return mirror

    def fork(self) -> StatementAnalyzer:
        """A private copy whose schema a batch can extend with its own DDL before it runs."""
        fork = object.__new__(StatementAnalyzer)
        fork._schema = self._schema
        fork._lock = threading.Lock()
        fork._cache = OrderedDict()
        fork._cache_size = self._cache_size
        fork._slots = OrderedDict()
        fork._tables = None
        fork._triggers = None
        fork._mirror = apsw.Connection(":memory:")
        for name in _LIBSQL_FUNCTIONS:
            fork._mirror.create_scalar_function(name, _stub, -1, deterministic=True)
        with self._lock, fork._mirror.backup("main", self._mirror, "main") as backup:
            backup.step()
        return fork

    def add_temp(self, sql: str) -> None:
        """Create a TEMP object (`IF NOT EXISTS`) on the mirror: the main schema is unchanged, so no
        cached analysis is dropped and no fork is needed (edgenode.expect's view and trigger)."""
        with self._lock:
            try:
                self._mirror.execute(sql)
            except apsw.Error:
                pass

    def apply_ddl(self, sql: str) -> None:
        """Run a schema change on this analyzer's mirror only (errors surface when it really runs)."""
        with self._lock:
            try:
                self._mirror.execute(sql)
            except apsw.Error:
                pass
            self._cache.clear()
            self._tables = None
            self._triggers = None

    def has_table(self, name: str) -> bool:
        """Whether the mirror (the schema as last read) has a table or view `name`."""
        with self._lock:
            if self._tables is None:
                rows = self._mirror.execute("SELECT name FROM sqlite_schema WHERE type IN ('table', 'view')")
                self._tables = frozenset(str(n).lower() for (n,) in rows)
            return name.lower() in self._tables

    def triggers(self) -> tuple[tuple[str, str], ...]:
        """(name, table it is on) of the mirror's triggers: the schema as last read, no I/O."""
        with self._lock:
            if self._triggers is None:
                rows = self._mirror.execute("SELECT name, tbl_name FROM sqlite_schema WHERE type = 'trigger'")
                self._triggers = tuple((str(n), str(t)) for n, t in rows)
            return self._triggers

    def refresh(self) -> None:
        mirror = self._build_mirror()
        with self._lock:
            self._mirror = mirror
            self._cache.clear()
            self._tables = None
            self._triggers = None

    def parameter_slots(self, sql: str, count: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """`sql` cut at its parameters, as SQLite's own tokenizer finds them: `pieces[0] ?slots[0]
        pieces[1] ... pieces[-1]`, each slot the 1-based index the parameter binds to (`:a` used twice,
        or `?3`, name its index each time). Comments and string literals are never taken for
        parameters. `count` is the statement's parameter count (its `param_count`)."""
        with self._lock:
            cached = self._slots.get(sql)
            if cached is not None:
                return cached
        # sqlite3_expanded_sql copies the statement's text and puts each parameter's value in its
        # place: bind a marker per index (text that the SQL does not contain) and cut at the markers.
        nonce = 0
        while f"edgenode-slot-{nonce}-" in sql:
            nonce += 1
        markers = [f"edgenode-slot-{nonce}-{i}" for i in range(1, count + 1)]
        expanded: list[str | None] = []

        def capture(cursor: apsw.Cursor, _sql: str, _bindings: Any) -> bool:
            expanded.append(cursor.expanded_sql)
            return False  # compiled and bound, never run

        with self._lock:
            cursor = self._mirror.cursor()
            cursor.exec_trace = capture
            try:
                cursor.execute(sql, markers)
            except apsw.ExecTraceAbort:
                pass
            except apsw.Error as exc:
                raise AnalysisError(_message(exc)) from exc
        if not expanded or expanded[0] is None:
            raise AnalysisError("SQLite could not expand the statement's parameters")
        parts = re.split(rf"'edgenode-slot-{nonce}-(\d+)'", expanded[0])
        slots = (tuple(parts[0::2]), tuple(int(i) for i in parts[1::2]))
        with self._lock:
            self._slots[sql] = slots
            if len(self._slots) > self._cache_size:
                self._slots.popitem(last=False)
        return slots

    def analyze(self, sql: str) -> Analysis:
        with self._lock:
            cached = self._cache.get(sql)
            if cached is not None:
                self._cache.move_to_end(sql)
                return cached
            try:
                info = apsw.ext.query_info(self._mirror, sql, actions=True)
            except apsw.Error as exc:
                raise AnalysisError(_message(exc)) from exc
            except ValueError as exc:  # apsw raises this for empty or comment-only SQL
                raise AnalysisError(str(exc)) from exc
            analysis = _summarise(sql, info)
            self._cache[sql] = analysis
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return analysis


def _stub(*_args: Any) -> None:
    return None


def _message(exc: apsw.Error) -> str:
    text = str(exc)
    # apsw prefixes the class name ("SQLError: no such table: x"); clients want SQLite's text.
    return text.split(": ", 1)[1] if ": " in text and text.split(": ", 1)[0].endswith("Error") else text


def _summarise(sql: str, info: apsw.ext.QueryDetails) -> Analysis:
    actions = info.actions or []
    codes = {a.action for a in actions}
    reason = None
    for action in actions:
        reason = _deny_reason(action)
        if reason:
            break
    if reason is None and not info.is_readonly:
        reason = "statement would write"
    if not (info.first_query or "").strip() or not _has_code(info.first_query or ""):
        raise AnalysisError("no SQL statement given")
    first = (info.first_query or "").lstrip().upper()
    touches_files = bool(codes & {apsw.SQLITE_ATTACH, apsw.SQLITE_DETACH}) or (
        first.startswith("VACUUM") and " INTO " in f" {first} "
    )
    remaining = (info.query_remaining or "").strip()
    return Analysis(
        sql=sql,
        is_readonly=reason is None,
        why_not_readonly=reason,
        is_explain=bool(info.is_explain),
        # DDL also inserts into sqlite_schema; only changes to user tables count as DML.
        is_dml=any(a.action in _DML_ACTIONS and not (a.table_name or "").startswith("sqlite_") for a in actions),
        is_ddl=bool(codes & _DDL_ACTIONS),
        is_insert=any(
            a.action == apsw.SQLITE_INSERT and not (a.table_name or "").startswith("sqlite_") for a in actions
        ),
        is_transaction_control=apsw.SQLITE_TRANSACTION in codes or apsw.SQLITE_SAVEPOINT in codes,
        touches_files=touches_files,
        changes_pragma=any(a.action == apsw.SQLITE_PRAGMA and a.pragma_value is not None for a in actions),
        has_more_statements=bool(remaining) and _has_code(remaining),
        param_count=info.bindings_count,
        param_names=tuple(info.bindings_names),
        columns=tuple((d[0], d[1]) for d in (info.description_full or info.description or ())),
        pragma_setting=next(
            (
                ((a.pragma_name or "").lower(), a.pragma_value)
                for a in actions
                if a.action == apsw.SQLITE_PRAGMA and a.pragma_value is not None
            ),
            None,
        ),
    )


def _has_code(text: str) -> bool:
    """A tail of only comments and semicolons is not another statement."""
    return bool(re.sub(r"--[^\n]*|/\*.*?\*/|;", "", text, flags=re.S).strip())
