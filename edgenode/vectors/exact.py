"""Exact search with sqlite-vec (loaded into apsw) over a sidecar SQLite file the node owns.

The replica file has one owner (the node's libSQL connection), so the sidecar keeps its own copy
of each indexed vector (`vec`) and the declared filter columns (`filt`); filters run here, next to
the vectors. The sidecar also records the feed position it reflects, committed in the same
transaction as the rows, and the identity (uid + spec) it was built for.

Filters are checked by the engine, not by parsing: the expression is compiled as
`SELECT rowid FROM filt WHERE (<expr>)` and as `SELECT (<expr>) FROM filt`, and every action the
compiler asks authorization for must be a read of a declared column of `filt`, a SELECT, or a
deterministic built-in function; nothing may remain after the first statement. At run time the
value goes through `_edgenode_bool`, which rejects anything that is not 0, 1 or NULL.

A filter runs in the node's own process, so every query that runs one is bounded (`_bounded`):
no value it makes or reads may pass `FILTER_MAX_LENGTH` (SQLite's own limit, 1 GB, let
`printf('%.*c', 900000000, 'x')` allocate that much per request), and a progress handler
interrupts it past its `timeout_ms` (the node's query_timeout_ms). Both answer 400 invalid_filter.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import apsw.ext
import msgspec
import numpy as np
import sqlite_vec

from edgenode.api.errors import ApiError
from edgenode.vectors.models import CollectionSpec

SAFE_FUNCTIONS = frozenset(
    """abs char coalesce concat concat_ws glob hex ifnull iif if instr length like likelihood likely lower ltrim
    max min nullif octet_length printf format quote replace round rtrim sign substr substring trim typeof unhex
    unicode unlikely upper ceil ceiling floor mod pow power sqrt exp ln log log10 log2 trunc json_extract json_type
    json_valid json_array_length -> ->> _edgenode_bool""".split()
)
_OK_ACTIONS = {apsw.SQLITE_SELECT, apsw.SQLITE_READ, apsw.SQLITE_FUNCTION}
_DIST_SQL = {"cosine": "vec_distance_cosine(v.embedding, ?)", "l2": "vec_distance_l2(v.embedding, ?)"}
# Reads through a memory map instead of a 4 KiB read() per page missed in SQLite's 2 MiB page cache:
# a vector row is 1.5 KiB (384 dims), so the exact top 10 over 500 filtered rows touches ~250 leaf
# pages scattered over the file; mapped, their lookups cost less than half as much (1.7 -> 0.75 ms
# on a loaded 2-core machine). The map is address space over the OS page cache, not memory per
# connection.
MMAP_BYTES = 1 << 30
# Compiled filters kept per sidecar, by text and parameters (checking one prepares it twice under
# an authorizer and samples rows: ~0.4 ms, a tenth of a filtered search).
FILTER_CACHE = 256
# Longest string or blob a query running a filter may make or read: filter columns hold short
# values (ids, tags, dates), and an expression that builds more is an attack or a mistake.
FILTER_MAX_LENGTH = 4 << 20
FILTER_TIMEOUT_MS = 5_000  # the default of query_timeout_ms
# Virtual machine steps between looks at the clock (each look ~0.1 us; 1000 steps ~10-50 us).
PROGRESS_STEPS = 1_000


class _NotBoolean(Exception):
    pass


def _as_bool_message(value: Any) -> str:
    return f"the filter must be a boolean expression, but it gave {value!r} for a row"


def _as_bool(value: Any) -> Any:
    if value is None or (type(value) is int and value in (0, 1)):
        return value
    raise _NotBoolean(_as_bool_message(value))


@dataclass(frozen=True)
class CompiledFilter:
    sql: str
    params: tuple[Any, ...]
    timeout_ms: int = FILTER_TIMEOUT_MS


def _distances_ip(query: np.ndarray, blobs: list[bytes], dim: int) -> np.ndarray:
    matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim)
    return 1.0 - matrix @ query


class Sidecar:
    def __init__(self, path: Path, spec: CollectionSpec, uid: str) -> None:
        self.path = path
        self.spec = spec
        self.uid = uid
        self.columns = [c for c in spec.filter_columns]
        self._lock = threading.Lock()
        self._local = threading.local()
        self._conns: list[apsw.Connection] = []
        self._filters: dict[tuple[Any, ...], CompiledFilter] = {}
        self.writer = self._connect()
        self._ensure_schema()

    # connections -----------------------------------------------------------------------------
    def _connect(self) -> apsw.Connection:
        conn = apsw.Connection(str(self.path))
        conn.enable_load_extension(True)
        conn.load_extension(sqlite_vec.loadable_path())
        conn.enable_load_extension(False)
        conn.create_scalar_function("_edgenode_bool", _as_bool, 1, deterministic=True)
        conn.set_busy_timeout(5000)
        # One statement per call: apsw runs the statements of a string as its cursor is iterated,
        # so the ones after a PRAGMA that answers a row (journal_mode does) would never run.
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", f"mmap_size={MMAP_BYTES}"):
            conn.execute(f"PRAGMA {pragma}").fetchall()
        with self._lock:
            self._conns.append(conn)
        return conn

    def _reader(self) -> apsw.Connection:
        # One connection per thread so exact queries in the executor run in parallel (WAL readers).
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(apsw.Error):
                conn.close()

    def _ensure_schema(self) -> None:
        cols = "".join(f', "{c}"' for c in self.columns)
        self.writer.execute(
            "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);"
            "CREATE TABLE IF NOT EXISTS vec(rowid INTEGER PRIMARY KEY, embedding BLOB NOT NULL);"
            f"CREATE TABLE IF NOT EXISTS filt(rowid INTEGER PRIMARY KEY{cols});"
        )
        for c in self.columns:
            self.writer.execute(f'CREATE INDEX IF NOT EXISTS "filt_{c}" ON filt("{c}")')

    # identity and position ---------------------------------------------------------------------
    def identity(self) -> str:
        return self.uid + ":" + msgspec.json.encode(self.spec).decode()

    def stamped_identity(self) -> str | None:
        row = self.writer.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
        return row[0] if row else None

    def stamp_identity(self) -> None:
        self.writer.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('identity', ?)", (self.identity(),))

    @property
    def position(self) -> int:
        row = self.writer.execute("SELECT value FROM meta WHERE key = 'position'").fetchone()
        return int(row[0]) if row else -1

    def count(self) -> int:
        # A reader: apsw refuses one connection used by two threads at once, and applies hold the writer.
        return int(self._reader().execute("SELECT count(*) FROM vec").fetchone()[0])

    # writes ------------------------------------------------------------------------------------
    def apply(self, upserts: list[tuple[int, bytes, list[Any]]], deletes: list[int], position: int | None) -> None:
        cols = "".join(f', "{c}"' for c in self.columns)
        marks = ", ?" * len(self.columns)
        with self.writer:
            if deletes:
                self.writer.executemany("DELETE FROM vec WHERE rowid = ?", [(r,) for r in deletes])
                self.writer.executemany("DELETE FROM filt WHERE rowid = ?", [(r,) for r in deletes])
            if upserts:
                self.writer.executemany(
                    "INSERT OR REPLACE INTO vec(rowid, embedding) VALUES (?, ?)", [(r, b) for r, b, _ in upserts]
                )
                self.writer.executemany(
                    f"INSERT OR REPLACE INTO filt(rowid{cols}) VALUES (?{marks})",
                    [(r, *vals) for r, _, vals in upserts],
                )
            if position is not None:
                self.writer.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('position', ?)", (position,))

    def current(self, rowids: list[int]) -> dict[int, tuple[bytes, list[Any]]]:
        """Stored (embedding, filter values) per rowid, to skip updates that change neither."""
        if not rowids:
            return {}
        cols = "".join(f', f."{c}"' for c in self.columns)
        ids = ",".join(str(int(r)) for r in rowids)
        rows = self.writer.execute(
            f"SELECT v.rowid, v.embedding{cols} FROM vec v JOIN filt f ON f.rowid = v.rowid WHERE v.rowid IN ({ids})"
        )
        return {row[0]: (row[1], list(row[2:])) for row in rows}

    def iter_vectors(self, chunk: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        last: int | None = None
        conn = self._reader()
        while True:
            if last is None:
                rows = conn.execute("SELECT rowid, embedding FROM vec ORDER BY rowid LIMIT ?", (chunk,)).fetchall()
            else:
                rows = conn.execute(
                    "SELECT rowid, embedding FROM vec WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, chunk)
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), self.spec.dim)
            yield rowids, vectors

    # filters -----------------------------------------------------------------------------------
    def compile_filter(self, sql: str, params: list[Any], timeout_ms: int = FILTER_TIMEOUT_MS) -> CompiledFilter:
        """The checked filter; one that passed before is not checked again (the columns it may read
        are this sidecar's, fixed for its life). Keys carry each parameter's type: 1, 1.0 and True
        are equal in Python but bind differently."""
        key = (sql, timeout_ms, *((type(p), p) for p in params))
        compiled = self._filters.get(key)
        if compiled is None:
            compiled = self._compile_filter(sql, params, timeout_ms)
            if len(self._filters) >= FILTER_CACHE:
                self._filters.clear()
            self._filters[key] = compiled
        return compiled

    def _compile_filter(self, sql: str, params: list[Any], timeout_ms: int) -> CompiledFilter:
        if not sql.strip():
            raise ApiError(400, "invalid_filter", "filter.sql is empty")
        if "\x00" in sql:
            raise ApiError(400, "invalid_filter", "filter.sql contains a NUL character")
        for p in params:
            if isinstance(p, int) and not -(2**63) <= p < 2**63:
                raise ApiError(400, "invalid_filter", f"filter parameter {p} does not fit in 64 bits")
        conn = self._reader()
        declared = {c.lower() for c in self.columns} | {"rowid", ""}  # "" is how the rowid alias is reported
        for form in (f"SELECT rowid FROM filt WHERE ({sql}\n)", f"SELECT ({sql}\n) FROM filt"):
            try:
                info = apsw.ext.query_info(conn, form, actions=True)
            except apsw.SQLError as exc:
                if self._several_statements(conn, sql):
                    raise ApiError(
                        400, "invalid_filter", "filter.sql must be a single expression, not several statements"
                    ) from exc
                message = str(exc).removeprefix("SQLError: ")
                if "no such column" in message:
                    allowed = ", ".join(self.columns) or "none"
                    message += f" (filter columns of this collection: {allowed})"
                raise ApiError(400, "invalid_filter", f"filter.sql does not compile: {message}") from exc
            except apsw.Error as exc:
                raise ApiError(400, "invalid_filter", f"filter.sql does not compile: {exc}") from exc
            if info.query_remaining and info.query_remaining.strip(" \t\r\n;"):
                raise ApiError(400, "invalid_filter", "filter.sql must be a single expression, not statements")
            if form.startswith("SELECT (") and len(info.description or ()) != 1:
                raise ApiError(400, "invalid_filter", "filter.sql must be a single boolean expression")
            if any(name is not None for name in info.bindings_names):
                raise ApiError(400, "invalid_filter", "filter.sql may only use positional ? parameters")
            if info.bindings_count != len(params):
                raise ApiError(
                    400,
                    "invalid_filter",
                    f"filter.sql has {info.bindings_count} ? parameters but {len(params)} params were given",
                )
            for action in info.actions or []:
                if action.action not in _OK_ACTIONS:
                    raise ApiError(400, "invalid_filter", f"filter.sql may not use {action.action_name}")
                if action.action == apsw.SQLITE_READ and (
                    action.table_name != "filt" or (action.column_name or "").lower() not in declared
                ):
                    what = action.column_name if action.table_name == "filt" else action.table_name
                    raise ApiError(400, "invalid_filter", f"filter.sql may only read filter columns, not {what!r}")
                if action.action == apsw.SQLITE_FUNCTION and (action.function_name or "").lower() not in SAFE_FUNCTIONS:
                    raise ApiError(400, "invalid_filter", f"filter.sql may not call function {action.function_name!r}")
        compiled = CompiledFilter(sql=sql, params=tuple(params), timeout_ms=timeout_ms)
        # A non-boolean expression shows on the first rows; checking a few here rejects it even when
        # the rows a query reaches would not happen to reveal it.
        self._run(conn, f"SELECT _edgenode_bool(({sql}\n)) FROM filt LIMIT 16", compiled.params, compiled)
        return compiled

    @staticmethod
    def _several_statements(conn: apsw.Connection, sql: str) -> bool:
        """Diagnosis only: does the text hold a statement boundary (as the engine splits it)?"""
        try:
            info = apsw.ext.query_info(conn, f"SELECT rowid FROM filt WHERE {sql}")
        except apsw.Error:
            return False
        return bool(info.query_remaining and info.query_remaining.strip(" \t\r\n;"))

    def _where(self, flt: CompiledFilter) -> tuple[str, tuple[Any, ...]]:
        # The bare expression first, so the planner can use the filter columns' indexes; the
        # _edgenode_bool copy then rejects non-boolean values on the rows that pass.
        return f"(({flt.sql}\n)) AND _edgenode_bool(({flt.sql}\n))", flt.params * 2

    @staticmethod
    @contextlib.contextmanager
    def _bounded(conn: apsw.Connection, flt: CompiledFilter | None) -> Iterator[None]:
        """The filter's bounds on `conn` for one query (readers are per thread: nothing else runs on it)."""
        if flt is None:
            yield
            return
        deadline = time.monotonic() + flt.timeout_ms / 1000
        previous = conn.limit(apsw.SQLITE_LIMIT_LENGTH, FILTER_MAX_LENGTH)
        conn.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_STEPS)
        try:
            yield
        finally:
            conn.set_progress_handler(None)
            conn.limit(apsw.SQLITE_LIMIT_LENGTH, previous)

    def _run(
        self, conn: apsw.Connection, sql: str, params: tuple[Any, ...], flt: CompiledFilter | None = None
    ) -> list[tuple[Any, ...]]:
        """Rows of `sql`; with `flt`, a query that runs that filter, under its bounds."""
        try:
            with self._bounded(conn, flt):
                return conn.execute(sql, params).fetchall()
        except apsw.InterruptError as exc:
            ms = flt.timeout_ms if flt is not None else FILTER_TIMEOUT_MS
            raise ApiError(
                400,
                "invalid_filter",
                f"the filter ran longer than query_timeout_ms={ms}; use a simpler expression "
                "(or raise --query-timeout-ms)",
            ) from exc
        except apsw.TooBigError as exc:
            raise ApiError(
                400,
                "invalid_filter",
                f"the filter made or read a value longer than {FILTER_MAX_LENGTH} bytes, the most a filter may "
                "handle (string or blob too big); build smaller values",
            ) from exc
        except apsw.Error as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, _NotBoolean):
                raise ApiError(400, "invalid_filter", str(cause)) from exc
            if isinstance(exc, apsw.SQLError | apsw.MismatchError | apsw.RangeError):
                raise ApiError(400, "invalid_filter", f"filter failed: {exc}") from exc
            raise
        except _NotBoolean as exc:
            raise ApiError(400, "invalid_filter", str(exc)) from exc

    def _accepted(self, sql: str, params: tuple[Any, ...], flt: CompiledFilter) -> list[int]:
        """Rowids of `SELECT rowid, (<filter>) FROM filt WHERE (<filter>) ...`: the rows the filter
        accepts, each checked to have given 1 exactly (what _edgenode_bool checks inside SQLite, here
        without a Python call per row: a sixth of a 1% filter scan)."""
        rows = self._run(self._reader(), sql, params, flt)
        for _, value in rows:
            if type(value) is not int or value != 1:
                raise ApiError(400, "invalid_filter", _as_bool_message(value))
        return [r[0] for r in rows]

    def matching(self, rowids: list[int], flt: CompiledFilter) -> set[int]:
        """The subset of `rowids` the filter accepts (post-filtering ANN candidates)."""
        if not rowids:
            return set()
        ids = ",".join(str(int(r)) for r in rowids)
        expr = f"({flt.sql}\n)"
        sql = f"SELECT rowid, {expr} FROM filt WHERE rowid IN ({ids}) AND {expr}"
        return set(self._accepted(sql, flt.params * 2, flt))

    def matching_rowids(self, flt: CompiledFilter, limit: int) -> list[int]:
        """Rowids the filter accepts, no more than `limit` (a bounded scan: short when the filter is broad)."""
        expr = f"({flt.sql}\n)"
        return self._accepted(f"SELECT rowid, {expr} FROM filt WHERE {expr} LIMIT ?", (*flt.params * 2, limit), flt)

    def search_rowids(self, query: np.ndarray, k: int, rowids: list[int]) -> tuple[list[int], list[float], int]:
        """Exact top-k among the given rowids (those a filter accepted)."""
        if not rowids:
            return [], [], 0
        conn = self._reader()
        ids = ",".join(str(int(r)) for r in rowids)
        if self.spec.metric == "ip":
            rows = conn.execute(f"SELECT rowid, embedding FROM vec WHERE rowid IN ({ids})").fetchall()
            if not rows:
                return [], [], 0
            dist = _distances_ip(query, [r[1] for r in rows], self.spec.dim)
            top = np.argsort(dist, kind="stable")[:k]
            return [rows[i][0] for i in top], [float(dist[i]) for i in top], len(rows)
        dist_sql = _DIST_SQL[self.spec.metric].replace("v.embedding", "embedding")
        rows = conn.execute(
            f"SELECT rowid, {dist_sql} AS d FROM vec WHERE rowid IN ({ids}) ORDER BY d LIMIT ?",
            (query.astype("<f4").tobytes(), k),
        ).fetchall()
        return [r[0] for r in rows], [float(r[1]) for r in rows], len(rowids)

    def search(self, query: np.ndarray, k: int, flt: CompiledFilter | None) -> tuple[list[int], list[float], int]:
        """Exact top-k (rowids, distances, rows considered); distances as the API reports them."""
        conn = self._reader()
        blob = query.astype("<f4").tobytes()
        prefix, source = "", "vec v"
        params: tuple[Any, ...] = ()
        if flt is not None:
            # Matching rowids first (indexes usable), then one rowid lookup per match in vec.
            where, params = self._where(flt)
            prefix = f"WITH m(r) AS MATERIALIZED (SELECT rowid FROM filt WHERE {where}) "
            source = "m CROSS JOIN vec v ON v.rowid = m.r"
        if self.spec.metric == "ip":
            rows = self._run(conn, f"{prefix}SELECT v.rowid, v.embedding FROM {source}", params, flt)
            if not rows:
                return [], [], 0
            dist = _distances_ip(query, [r[1] for r in rows], self.spec.dim)
            top = np.argsort(dist, kind="stable")[:k]
            return [rows[i][0] for i in top], [float(dist[i]) for i in top], len(rows)
        rows = self._run(
            conn,
            f"{prefix}SELECT v.rowid, {_DIST_SQL[self.spec.metric]} AS d, count(*) OVER () FROM {source} "
            "ORDER BY d LIMIT ?",
            (*params, blob, k),
            flt,
        )
        return [r[0] for r in rows], [float(r[1]) for r in rows], (rows[0][2] if rows else 0)
