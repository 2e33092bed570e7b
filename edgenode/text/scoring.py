"""Exact BM25 of free-text queries over postings held in memory: FTS5's own scores, faster.

FTS5 ranks an OR of words by calling bm25() on every row that holds any of them (one docsize
lookup and one position-list walk per row, ~0.4 µs each), and a word in a fifth of the rows makes
that thousands of rows per query. Here the same sum is computed with numpy over each word's
postings (rowid, occurrences per column), read once from FTS5's own index (`fts5vocab` instance
table) and kept until the index changes: the score of a query is a few vector additions.

The scores are FTS5's to the last bit, not an approximation: bm25() (fts5_aux.c) computes, per
row, for each phrase i in query order

    score += idf[i] * ((f[i] * (k1 + 1.0)) / (f[i] + k1 * (1 - b + b * D / avgdl)))

with k1 = 1.2, b = 0.75, f[i] the sum of the column weights over the phrase's occurrences (in
column order), D the row's size in tokens (all columns), avgdl = total tokens / rows and
idf[i] = log((rows - hits + 0.5) / (hits + 0.5)), 1e-6 when not positive; `rows` and the totals
come from the index's averages record (the `%_data` row 1), D from `%_docsize`. The same IEEE
operations in the same order give the same doubles: numpy's elementwise +, *, / are exact
roundings, the additions run phrase by phrase as in the C loop (a missing phrase adds 0.0, which
changes nothing), and the logarithm is the C library's, as in SQLite. tests/test_text_scoring.py
checks equality with bm25() on random corpora, weights, updates and deletes.

Used only where that holds: each query word is one token for the collection's tokenizer (never
with trigrams), no filter, at most MAX_ROWS rows; anything else, and a search while the index is
changing, goes to FTS5's ranking query. TextIndex.rank also compares the first answer of each
index with bm25()'s and keeps to FTS5 if they differ (a SQLite built to round differently).

A write bumps a seqlock-style counter before and after its transaction; a snapshot (or a word's
postings) read while the counter moved is thrown away, so one snapshot never mixes two states
of the index. Snapshots are rebuilt at most every REBUILD_SECONDS, reading the sizes of the rows
written since the last one: between the first search after a write and then, searches take the
FTS5 path, exact as well. A rebuilt snapshot keeps the postings of the words no write since touched:
each write names the terms of its rows' old and new text (TextIndex reads and tokenizes them,
~2 µs a row), and only those words are read again.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

import apsw
import numpy as np

K1 = 1.2
B = 0.75
# A snapshot after writes patches the written rows' sizes into the last one (~2 ms for 100 rows at
# 50k; a full read, ~20 ms, past rows/8 written), at most this often.
REBUILD_SECONDS = 0.25
# Postings kept per snapshot (rowid slot 8 B, one count per column 4 B, and a score per weight set
# 8 B): about 20 MiB at this bound for a one-column collection. Past it the words are dropped.
MAX_POSTINGS = 1_000_000

# Past this many rows FTS5 ranks: a query here sums into arrays of one entry per row (12 B each).
MAX_ROWS = 2_000_000
# Scores kept per word for this many weight sets (requests choose them freely; each costs 8 B a posting).
WEIGHT_SETS = 4

Mode = Literal["any", "all"]


def _varints(blob: bytes) -> list[int]:
    """SQLite's varints (FTS5 stores sizes and totals in them)."""
    out: list[int] = []
    i, n = 0, len(blob)
    while i < n:
        value = 0
        for j in range(9):
            byte = blob[i]
            i += 1
            if j == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if byte < 0x80:
                break
        out.append(value)
    return out


def _parse_ints(text: str, n: int) -> np.ndarray:
    if n < 64:
        return np.array(text.split(" "), dtype=np.int64)
    out = np.fromstring(text, dtype=np.int64, sep=" ")  # text mode: not the deprecated binary one
    return out if len(out) == n else np.array(text.split(" "), dtype=np.int64)


@dataclass
class _Word:
    term: str  # the index's token for the word
    docs: np.ndarray  # rowids holding it, ascending
    slots: np.ndarray  # their positions in Snapshot.rowids
    counts: np.ndarray  # (len(slots), columns) occurrences
    scores: dict[tuple[float, ...], np.ndarray] = field(default_factory=dict)  # per weight set


@dataclass
class Snapshot:
    version: int
    rowids: np.ndarray  # every row of the index, ascending
    lengths: np.ndarray  # D: each row's size in tokens, all columns (float64)
    scale: np.ndarray  # k1 * (1 - b + b * D / avgdl) per row
    rows: int
    words: dict[str, _Word | None] = field(default_factory=dict)  # None: not one token, use FTS5
    postings: int = 0
    # Words of the snapshot before, whose terms no write since touched: their postings still hold.
    carried: dict[str, _Word | None] = field(default_factory=dict)


class Scorer:
    """The postings cache of one TextIndex. `begin_write`/`end_write` bracket each transaction
    that changes the FTS5 table; `rank` answers (rowid, score) or None for "use FTS5"."""

    def __init__(self, columns: int, rebuild_seconds: float = REBUILD_SECONDS) -> None:
        self.columns = columns
        self.rebuild_seconds = rebuild_seconds
        self._begun = 0
        self._done = 0
        self._snapshot: Snapshot | None = None
        self._built_at = -math.inf
        self._lock = threading.Lock()
        self._columns: dict[str, int] | None = None
        # Per write since the snapshot: (version after it, the terms its rows held before and
        # after or None when not known, its rowids)
        self._touched: list[tuple[int, frozenset[str] | None, list[int]]] = []
        self._touched_lock = threading.Lock()

    def wants_terms(self) -> bool:
        """Whether a write should name the terms it touches (there are postings to keep)."""
        return self._snapshot is not None

    def begin_write(self) -> None:
        self._begun += 1

    def end_write(self, terms: frozenset[str] | None, rowids: list[int]) -> None:
        """`terms`: every term of the written rows' old and new text, None when not known (then
        the next snapshot reads every word again); `rowids`: the rows written or deleted."""
        with self._touched_lock:
            self._done += 1
            # A snapshot is only installed with no write under way, and never removed: every write
            # after it is logged here.
            if self._snapshot is not None:
                self._touched.append((self._done, terms, rowids))

    def version(self) -> int:
        return self._done

    def unchanged_since(self, version: int) -> bool:
        """No write began since `version()` answered `version`."""
        return self._stable(version)

    def _stable(self, version: int) -> bool:
        return self._begun == self._done == version

    def snapshot(self, conn: apsw.Connection) -> Snapshot | None:
        version = self._done
        snap = self._snapshot
        if snap is not None and snap.version == version and self._stable(version):
            return snap
        if not self._stable(version) or time.monotonic() - self._built_at < self.rebuild_seconds:
            return None
        if not self._lock.acquire(blocking=False):
            return None  # another thread is building it; FTS5 answers meanwhile
        try:
            self._built_at = time.monotonic()
            old = self._snapshot
            with self._touched_lock:
                between = [(t, r) for v, t, r in self._touched if old is not None and old.version < v <= version]
            snap = self._read_snapshot(conn, version, old, [r for _, r in between])
            if snap is None or not self._stable(version):
                return None
            if old is not None and all(t is not None for t, _ in between):
                # The words of `old` whose terms no write between the two touched.
                touched = frozenset().union(*(t for t, _ in between if t is not None))
                kept = {**old.carried, **old.words}
                snap.carried = {w: e for w, e in kept.items() if e is None or e.term not in touched}
            with self._touched_lock:
                self._touched = [e for e in self._touched if e[0] > version]
            self._snapshot = snap
            return snap
        finally:
            self._lock.release()

    def _read_snapshot(
        self, conn: apsw.Connection, version: int, old: Snapshot | None, written: list[list[int]]
    ) -> Snapshot | None:
        """The index's rows and sizes: those of `old` with the `written` rows read again when
        there is one (a write of a few rows costs a few lookups, not a read of every size)."""
        averages = conn.execute("SELECT block FROM fts_data WHERE id = 1").fetchone()
        if averages is None:
            return None
        totals = _varints(averages[0])
        rows, tokens = totals[0], sum(totals[1 : 1 + self.columns])
        if rows > MAX_ROWS or rows == 0:
            return None
        found: tuple[np.ndarray, np.ndarray] | None = None
        changed = np.unique(np.fromiter((r for ids in written for r in ids), np.int64)) if old is not None else None
        if old is not None and changed is not None and len(changed) <= max(1000, rows // 8):
            ids, lengths = self._sizes(conn, changed.tolist())
            keep = ~np.isin(old.rowids, changed)
            all_ids = np.concatenate((old.rowids[keep], ids))
            order = np.argsort(all_ids, kind="stable")
            found = all_ids[order], np.concatenate((old.lengths[keep], lengths))[order]
        if found is None or len(found[0]) != rows:
            found = self._sizes(conn, None)
        rowids, d = found
        if len(rowids) != rows:
            return None
        avgdl = float(tokens) / float(rows)
        scale = K1 * ((1 - B) + B * d / avgdl)
        return Snapshot(version=version, rowids=rowids, lengths=d, scale=scale, rows=rows)

    def _sizes(self, conn: apsw.Connection, rowids: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
        """(rowids ascending, sizes in tokens) from `%_docsize`: of the given rows, or of all."""
        if rowids is None:
            sizes = conn.execute("SELECT id, sz FROM fts_docsize ORDER BY id").fetchall()
        else:
            sizes = []
            for start in range(0, len(rowids), 1000):
                chunk = ",".join(str(int(r)) for r in rowids[start : start + 1000])
                sizes += conn.execute(f"SELECT id, sz FROM fts_docsize WHERE id IN ({chunk}) ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in sizes), np.int64, len(sizes))
        if self.columns == 1:
            lengths = [sz[0] if len(sz) == 1 else _varints(sz)[0] for _, sz in sizes]
        else:
            lengths = [sum(_varints(sz)) for _, sz in sizes]
        return ids, np.asarray(lengths, dtype=np.float64)

    def _word(self, conn: apsw.Connection, snap: Snapshot, tokenizer: apsw.FTS5Tokenizer, word: str) -> _Word | None:
        known = snap.words.get(word, False)
        if known is not False:
            return known  # type: ignore[return-value]
        carried = snap.carried.get(word, False)
        if carried is None:
            snap.words[word] = None
            return None
        if carried is not False:
            term, docs, counts = carried.term, carried.docs, carried.counts  # type: ignore[union-attr]
        else:
            tokens = tokenizer(
                word.encode(), apsw.FTS5_TOKENIZE_QUERY, None, include_offsets=False, include_colocated=False
            )
            if len(tokens) != 1:
                snap.words[word] = None
                return None
            term = tokens[0]
            docs, counts = self._postings(conn, term)
        slots = np.searchsorted(snap.rowids, docs)
        inside = np.minimum(slots, len(snap.rowids) - 1)
        if not self._stable(snap.version) or not np.array_equal(snap.rowids[inside], docs):
            return None  # the index changed under the read: this snapshot is done
        entry = _Word(term=term, docs=docs, slots=slots, counts=counts)
        if snap.postings + len(docs) > MAX_POSTINGS:
            snap.words.clear()
            snap.postings = 0
        snap.words[word] = entry
        snap.postings += len(docs)
        return entry

    def _postings(self, conn: apsw.Connection, term: str) -> tuple[np.ndarray, np.ndarray]:
        """The rows holding `term`, ascending, and its occurrences in each column of each.

        The instance table has a row per occurrence, in (rowid, column, offset) order; they come
        back as one string of numbers (a row per occurrence through Python costs ~0.7 µs, eight
        times the parse: a word in a fifth of 50k rows loads in 1 ms instead of 8)."""
        if self.columns == 1:
            col_expr = "0"
        else:
            cols = self._column_numbers(conn)
            col_expr = "CASE col " + " ".join(f"WHEN '{name}' THEN {i}" for name, i in cols.items()) + " END"
        found = conn.execute(
            f"SELECT count(*), group_concat(doc, ' '), group_concat({col_expr}, ' ') "
            "FROM temp.fts_instances WHERE term = ?"
            if self.columns > 1
            else "SELECT count(*), group_concat(doc, ' ') FROM temp.fts_instances WHERE term = ?",
            (term,),
        ).fetchone()
        n = int(found[0]) if found else 0
        if n == 0:
            return np.zeros(0, np.int64), np.zeros((0, self.columns), np.int32)
        docs = _parse_ints(found[1], n)
        if len(docs) != n or np.any(docs[1:] < docs[:-1]):
            raise RuntimeError(f"the instance table gave the postings of {term!r} out of order")
        new_doc = np.concatenate(([True], docs[1:] != docs[:-1]))
        if self.columns == 1:
            starts = np.flatnonzero(new_doc)
            counts = np.diff(np.append(starts, n)).astype(np.int32).reshape(-1, 1)
            return docs[starts], counts
        col = _parse_ints(found[2], n)
        row = np.cumsum(new_doc) - 1
        rows = int(row[-1]) + 1
        counts = np.bincount(row * self.columns + col, minlength=rows * self.columns).astype(np.int32)
        return docs[new_doc], counts.reshape(rows, self.columns)

    def _column_numbers(self, conn: apsw.Connection) -> dict[str, int]:
        if self._columns is None:
            cols = [r[1] for r in conn.execute("PRAGMA table_info(fts)").fetchall()]
            self._columns = {name: i for i, name in enumerate(cols)}
        return self._columns

    @staticmethod
    def _scores(snap: Snapshot, entry: _Word, weights: tuple[float, ...]) -> np.ndarray:
        cached = entry.scores.get(weights)
        if cached is not None:
            return cached
        # f: the weights summed over the occurrences column by column, as bm25() adds them.
        f = np.zeros(len(entry.slots), np.float64)
        for col, w in enumerate(weights):
            counts = entry.counts[:, col]
            top = int(counts.max(initial=0))
            if top == 0 or w == 0:
                continue
            if w == 1.0 and not f.any():
                f += counts  # integers: exact, the same as adding 1.0 `counts` times
                continue
            for j in range(top):
                f += np.where(counts > j, w, 0.0)
        hits = len(entry.slots)
        idf = math.log((snap.rows - hits + 0.5) / (hits + 0.5))
        if idf <= 0.0:
            idf = 1e-6
        scores = idf * ((f * (K1 + 1.0)) / (f + snap.scale[entry.slots]))
        if len(entry.scores) >= WEIGHT_SETS:
            entry.scores.clear()
        entry.scores[weights] = scores
        return scores

    def words_in_rows(self, words: list[str], rowids: list[int]) -> dict[int, list[str]] | None:
        """Which of the words each row holds (in query order, repeats kept), from the current
        snapshot; None when there is none or a word is not cached there."""
        snap = self._snapshot
        if snap is None or not self._stable(snap.version) or not rowids:
            return None
        entries = [snap.words.get(word) for word in words]
        if any(entry is None for entry in entries):
            return None
        ids = np.asarray(rowids, np.int64)
        slots = np.searchsorted(snap.rowids, ids).clip(0, len(snap.rowids) - 1)
        known = snap.rowids[slots] == ids
        out: dict[int, list[str]] = {r: [] for r in rowids}
        for word, entry in zip(words, entries, strict=True):
            assert entry is not None
            if len(entry.slots) == 0:
                continue
            at = np.minimum(np.searchsorted(entry.slots, slots), len(entry.slots) - 1)
            for r in ids[known & (entry.slots[at] == slots)].tolist():
                out[r].append(word)
        return out

    def rank(
        self,
        conn: apsw.Connection,
        tokenizer: apsw.FTS5Tokenizer,
        words: list[str],
        mode: Mode,
        weights: list[float],
        limit: int,
        offset: int,
    ) -> list[tuple[int, float]] | None:
        """Best first, ties to the lower rowid (as the FTS5 query orders them); None: use FTS5."""
        snap = self.snapshot(conn)
        if snap is None:
            return None
        w = tuple(weights)
        entries: list[_Word] = []
        for word in words:
            entry = self._word(conn, snap, tokenizer, word)
            if entry is None:
                return None
            entries.append(entry)
        n = len(snap.rowids)
        total = np.zeros(n, np.float64)
        present = np.zeros(n, np.int32)
        distinct: dict[int, _Word] = {}
        for entry in entries:  # every phrase, in query order, as bm25() sums them
            total[entry.slots] += self._scores(snap, entry, w)
            distinct[id(entry)] = entry
        for entry in distinct.values():
            present[entry.slots] += 1
        need = 1 if mode == "any" else len(distinct)
        cand = np.flatnonzero(present >= need)
        if not self._stable(snap.version):
            return None
        want = offset + limit
        if cand.size == 0 or offset >= cand.size:
            return []
        s = total[cand]
        if cand.size > want:
            kth = np.partition(s, cand.size - want)[cand.size - want]
            keep = s >= kth
            cand, s = cand[keep], s[keep]
        order = np.lexsort((cand, -s))[offset : offset + limit]
        return [(int(snap.rowids[cand[i]]), float(s[i])) for i in order.tolist()]
