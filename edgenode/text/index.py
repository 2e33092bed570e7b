"""The FTS5 index of one text collection: an apsw SQLite file the node owns, never the replica.

It is the vector sidecar (edgenode.vectors.exact.Sidecar) with an FTS5 table in place of the
vectors: the same `filt` table of declared filter columns and the same filter compiler (the
engine authorizes every action of the expression), the same `meta` rows recording the identity
(uid + spec) it was built for and the feed position it reflects, committed with the rows.
"""

from __future__ import annotations

from typing import Any

import apsw

from edgenode.api.errors import ApiError
from edgenode.text.models import TOKENIZE, TextSpec
from edgenode.text.query import engine_error
from edgenode.vectors.exact import CompiledFilter, Sidecar

MARK = ("<mark>", "</mark>")
ELLIPSIS = "…"


def _text(value: Any) -> str | None:
    """What FTS5 indexes for a value: text as is, numbers as their text, nothing for NULL or blobs."""
    if value is None or isinstance(value, dict):  # blobs arrive as {"base64": ...}
        return None
    return value if isinstance(value, str) else str(value)


class TextIndex(Sidecar):
    spec: TextSpec  # type: ignore[assignment]

    def _ensure_schema(self) -> None:
        filt = "".join(f', "{c}"' for c in self.columns)
        text = ", ".join(f'"{c}"' for c in self.spec.columns)
        self.writer.execute(
            "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);"
            f"CREATE TABLE IF NOT EXISTS filt(rowid INTEGER PRIMARY KEY{filt});"
            f"CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5({text}, tokenize='{TOKENIZE[self.spec.tokenizer]}');"
        )
        for c in self.columns:
            self.writer.execute(f'CREATE INDEX IF NOT EXISTS "filt_{c}" ON filt("{c}")')

    def count(self) -> int:
        return int(self._reader().execute("SELECT count(*) FROM filt").fetchone()[0])

    def apply_rows(self, rows: list[tuple[int, list[Any] | None]], position: int | None) -> int:
        """Rows as the feed or a scan gives them: (rowid, text values + filter values), or None for a
        row that is gone. Re-applying a row is harmless, which makes any replayed range idempotent."""
        n = len(self.spec.columns)
        fts_cols = "".join(f', "{c}"' for c in self.spec.columns)
        filt_cols = "".join(f', "{c}"' for c in self.columns)
        ids = [(rowid,) for rowid, _ in rows]
        live = [(rowid, values) for rowid, values in rows if values is not None]
        with self.writer:
            self.writer.executemany("DELETE FROM fts WHERE rowid = ?", ids)
            self.writer.executemany("DELETE FROM filt WHERE rowid = ?", ids)
            if live:
                self.writer.executemany(
                    f"INSERT INTO fts(rowid{fts_cols}) VALUES (?{', ?' * n})",
                    [(rowid, *(_text(v) for v in values[:n])) for rowid, values in live],
                )
                self.writer.executemany(
                    f"INSERT INTO filt(rowid{filt_cols}) VALUES (?{', ?' * len(self.columns)})",
                    [(rowid, *(None if isinstance(v, dict) else v for v in values[n:])) for rowid, values in live],
                )
            if position is not None:
                self.writer.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('position', ?)", (position,))
        return len(rows)

    def optimize(self) -> None:
        """Merge the index's segments into one (after a full build: faster queries, smaller file)."""
        self.writer.execute("INSERT INTO fts(fts) VALUES ('optimize')")

    def rank(
        self, match: str, limit: int, offset: int, weights: list[float], flt: CompiledFilter | None, q: str
    ) -> list[tuple[int, float]]:
        """(rowid, score), best first: score is BM25 with the given column weights, negated so that
        higher is better; ties go to the lower rowid, so pages never overlap or skip."""
        marks = ", ".join("?" * len(weights))
        sql = f"SELECT rowid, -bm25(fts, {marks}) AS score FROM fts WHERE fts MATCH ?"
        params: tuple[Any, ...] = (*weights, match)
        if flt is not None:
            where, filter_params = self._where(flt)
            sql += f" AND rowid IN (SELECT rowid FROM filt WHERE {where})"
            params += filter_params
        sql += " ORDER BY score DESC, rowid LIMIT ? OFFSET ?"
        return self._query(self._reader(), sql, (*params, limit, offset), q, flt)  # type: ignore[return-value]

    def snippets(self, match: str, rowids: list[int], tokens: int, q: str) -> dict[int, str]:
        """Highlighted snippets of the given rows for the query. A query of its own, for the rows
        shown only: in the ranking query SQLite would make one for every match."""
        if not rowids or tokens == 0:
            return {}
        ids = ",".join(str(int(r)) for r in rowids)
        sql = f"SELECT rowid, snippet(fts, -1, ?, ?, ?, ?) FROM fts WHERE fts MATCH ? AND rowid IN ({ids})"
        return dict(self._query(self._reader(), sql, (*MARK, ELLIPSIS, tokens, match), q))  # type: ignore[arg-type]

    def _query(
        self, conn: apsw.Connection, sql: str, params: tuple[Any, ...], q: str, flt: CompiledFilter | None = None
    ) -> list[tuple[Any, ...]]:
        try:
            return self._run(conn, sql, params, flt)
        except ApiError as exc:
            # _run calls every SQL error the filter's, but the filter compiled before the query ran
            # (compile_filter): what is left is the MATCH expression's.
            if isinstance(exc.__cause__, apsw.SQLError) and exc.message.startswith("filter failed:"):
                raise engine_error(q, str(exc.__cause__)) from exc.__cause__
            raise
