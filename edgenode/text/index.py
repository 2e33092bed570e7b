"""The FTS5 index of one text collection: an apsw SQLite file the node owns, never the replica.

It is the vector sidecar (edgenode.vectors.exact.Sidecar) with an FTS5 table in place of the
vectors: the same `filt` table of declared filter columns and the same filter compiler (the
engine authorizes every action of the expression), the same `meta` rows recording the identity
(uid + spec) it was built for and the feed position it reflects, committed with the rows.
"""

from __future__ import annotations

import logging
from typing import Any

import apsw

from edgenode.api.errors import ApiError
from edgenode.text.models import TOKENIZE, TextSpec
from edgenode.text.query import engine_error
from edgenode.text.scoring import Mode, Scorer
from edgenode.vectors.exact import CompiledFilter, Sidecar

log = logging.getLogger(__name__)

MARK = ("<mark>", "</mark>")
ELLIPSIS = "…"


def _text(value: Any) -> str | None:
    """What FTS5 indexes for a value: text as is, numbers as their text, nothing for NULL or blobs."""
    if value is None or isinstance(value, dict):  # blobs arrive as {"base64": ...}
        return None
    return value if isinstance(value, str) else str(value)


def _any(words: list[str]) -> str:
    return " OR ".join(f'"{w}"' for w in words)


class TextIndex(Sidecar):
    spec: TextSpec  # type: ignore[assignment]

    def __init__(self, path: Any, spec: TextSpec, uid: str) -> None:
        # Trigram phrases are runs of trigrams, never one token: FTS5 ranks those itself.
        self.scorer = Scorer(len(spec.columns)) if spec.tokenizer != "trigram" else None
        self._checked = False  # the scorer's first answer was compared with FTS5's
        self._scorer_agrees = True
        self._writer_tokenizer: apsw.FTS5Tokenizer | None = None
        super().__init__(path, spec, uid)  # type: ignore[arg-type]

    def _scoring_reader(self) -> tuple[apsw.Connection, apsw.FTS5Tokenizer]:
        """This thread's reader, with the index's instance table and the collection's tokenizer
        (both belong to a connection)."""
        conn = self._reader()
        tokenizer = getattr(self._local, "tokenizer", None)
        if tokenizer is None:
            conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts_instances USING fts5vocab(main, fts, instance)")
            name, *args = TOKENIZE[self.spec.tokenizer].split()
            tokenizer = conn.fts5_tokenizer(name, args)
            self._local.tokenizer = tokenizer
        return conn, tokenizer

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
        scorer = self.scorer if rows else None
        if scorer is None:
            self._write_rows(ids, live, n, fts_cols, filt_cols, position)
            return len(rows)
        terms = self._terms(ids, live) if scorer.wants_terms() else None
        scorer.begin_write()
        try:
            self._write_rows(ids, live, n, fts_cols, filt_cols, position)
        finally:
            scorer.end_write(terms, [r for (r,) in ids])
        return len(rows)

    def _terms(self, ids: list[tuple[int]], live: list[tuple[int, list[Any]]]) -> frozenset[str]:
        """Every term of the rows' text as indexed now and as written: the words whose postings
        this write may change (the others' carry over to the next snapshot, edgenode.text.scoring).
        The writer's own connection: it is the only one that changes the index."""
        tokenizer = self._writer_tokenizer
        if tokenizer is None:
            name, *args = TOKENIZE[self.spec.tokenizer].split()
            tokenizer = self._writer_tokenizer = self.writer.fts5_tokenizer(name, args)
        cols = ", ".join(f'"{c}"' for c in self.spec.columns)
        texts: list[Any] = []
        for start in range(0, len(ids), 1000):
            chunk = ",".join(str(int(r)) for (r,) in ids[start : start + 1000])
            for row in self.writer.execute(f"SELECT {cols} FROM fts WHERE rowid IN ({chunk})"):
                texts += row
        for _, values in live:
            texts += [_text(v) for v in values[: len(self.spec.columns)]]
        out: set[str] = set()
        for text in texts:
            if text:
                out.update(
                    tokenizer(
                        text.encode(),
                        apsw.FTS5_TOKENIZE_DOCUMENT,
                        None,
                        include_offsets=False,
                        include_colocated=False,
                    )
                )
        return frozenset(out)

    def _write_rows(
        self,
        ids: list[tuple[int]],
        live: list[tuple[int, list[Any]]],
        n: int,
        fts_cols: str,
        filt_cols: str,
        position: int | None,
    ) -> None:
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

    def optimize(self) -> None:
        """Merge the index's segments into one (after a full build: faster queries, smaller file)."""
        self.writer.execute("INSERT INTO fts(fts) VALUES ('optimize')")

    def rank(
        self,
        match: str,
        limit: int,
        offset: int,
        weights: list[float],
        flt: CompiledFilter | None,
        q: str,
        words: tuple[list[str], Mode] | None = None,
    ) -> list[tuple[int, float]]:
        """(rowid, score), best first: score is BM25 with the given column weights, negated so that
        higher is better; ties go to the lower rowid, so pages never overlap or skip. `words`: the
        free-text words `match` ORs ("any") or ANDs ("all"), which the postings in memory
        (edgenode.text.scoring) score to the same result without FTS5's per-row ranking."""
        if words is not None and flt is None and self.scorer is not None and self._scorer_agrees:
            conn, tokenizer = self._scoring_reader()
            version = self.scorer.version()
            ranked = self.scorer.rank(conn, tokenizer, words[0], words[1], weights, limit, offset)
            if ranked is not None:
                if self._checked:
                    return ranked
                # Once per index, an answer is checked against bm25() itself: the equality rests
                # on SQLite's build doing the same floating-point operations (a compiler that fuses
                # a multiply-add, as some ARM builds do, would change the last bits).
                exact = self.rank_fts5(match, limit, offset, weights, flt, q)
                if self.scorer.unchanged_since(version):  # else a write came between: check later
                    if ranked != exact:
                        log.warning("%s: in-memory BM25 differs from bm25(); FTS5 ranks from now on", self.path)
                        self._scorer_agrees = False
                    self._checked = True
                return exact
        return self.rank_fts5(match, limit, offset, weights, flt, q)

    def rank_fts5(
        self, match: str, limit: int, offset: int, weights: list[float], flt: CompiledFilter | None, q: str
    ) -> list[tuple[int, float]]:
        """The ranking query itself: bm25() on every matching row, then the top of the order."""
        marks = ", ".join("?" * len(weights))
        sql = f"SELECT rowid, -bm25(fts, {marks}) AS score FROM fts WHERE fts MATCH ?"
        params: tuple[Any, ...] = (*weights, match)
        if flt is not None:
            where, filter_params = self._where(flt)
            sql += f" AND rowid IN (SELECT rowid FROM filt WHERE {where})"
            params += filter_params
        sql += " ORDER BY score DESC, rowid LIMIT ? OFFSET ?"
        return self._query(self._reader(), sql, (*params, limit, offset), q, flt)  # type: ignore[return-value]

    def snippets(
        self, match: str, rowids: list[int], tokens: int, q: str, words: list[str] | None = None
    ) -> dict[int, str]:
        """Highlighted snippets of the given rows for the query. A query of its own, for the rows
        shown only: in the ranking query SQLite would make one for every match.

        With the free-text `words` of `match` and their postings in memory, each row gets a query
        of the words it holds only: FTS5 positions every phrase of the expression on each row
        asked for (~5 µs a phrase), and a phrase with no occurrence in a row changes nothing in
        its snippet (snippet() scores and marks occurrences). Same snippets, half the time for
        long queries (tests/test_text_scoring.py compares them)."""
        if not rowids or tokens == 0:
            return {}
        if words is not None and self.scorer is not None and self._scorer_agrees:
            held = self.scorer.words_in_rows(words, rowids)
            if held is not None:
                conn = self._reader()
                sql = "SELECT snippet(fts, -1, ?, ?, ?, ?) FROM fts WHERE fts MATCH ? AND rowid = ?"
                out: dict[int, str] = {}
                for rowid, present in held.items():
                    if present:
                        row = self._query(conn, sql, (*MARK, ELLIPSIS, tokens, _any(present), rowid), q)
                        if row:
                            out[rowid] = row[0][0]
                return out
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
