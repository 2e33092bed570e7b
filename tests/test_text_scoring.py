"""The in-memory BM25 of free-text queries (edgenode.text.scoring) against FTS5's own ranking:
the same rows in the same order with the same scores, bit for bit, on random corpora."""

from __future__ import annotations

import itertools
import random
import threading
from pathlib import Path

import pytest

from edgenode.text.index import TextIndex
from edgenode.text.models import TextSpec
from edgenode.text.query import check, free_words
from edgenode.text.scoring import WEIGHT_SETS, Mode

VOCAB = [f"w{i}" for i in range(60)] + ["running", "runs", "café", "Cafe", "the", "Zoë"]


def _text(rng: random.Random) -> str | None:
    if rng.random() < 0.05:
        return None
    # Skewed: some words in most rows (low or clamped IDF), most in few; lengths from 0 to 40, and
    # a few long rows (sizes past 127 take two bytes in FTS5's varints).
    n = rng.randrange(0, 40) if rng.random() < 0.95 else rng.randrange(128, 400)
    return " ".join(VOCAB[min(int(rng.expovariate(0.08)), len(VOCAB) - 1)] for _ in range(n))


def _rows(rng: random.Random, rowids: list[int], columns: int) -> list[tuple[int, list[object] | None]]:
    return [(r, [_text(rng) for _ in range(columns)]) for r in rowids]


def _index(tmp_path: Path, columns: int, tokenizer: str = "unicode61") -> TextIndex:
    spec = TextSpec(table="t", columns=[f"c{i}" for i in range(columns)], tokenizer=tokenizer)  # type: ignore[arg-type]
    index = TextIndex(tmp_path / "index.sqlite", spec, "test")
    assert index.scorer is not None
    index.scorer.rebuild_seconds = 0.0  # every search after a write reads a fresh snapshot
    return index


def _queries(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        words = [rng.choice(VOCAB) for _ in range(rng.randrange(1, 7))]
        if rng.random() < 0.2:
            words.append(words[0])  # a repeated word is two phrases: bm25() counts both
        out.append(" ".join(words))
    return out


def _assert_same(index: TextIndex, q: str, mode: Mode, weights: list[float], limit: int, offset: int) -> None:
    syntax = "any" if mode == "any" else "plain"
    match = check(q, syntax)
    words = free_words(q)
    conn, tokenizer = index._scoring_reader()
    assert index.scorer is not None
    fast = index.scorer.rank(conn, tokenizer, words, mode, weights, limit, offset)
    assert fast is not None, "the in-memory path declined a query it covers"
    assert fast == index.rank_fts5(match, limit, offset, weights, None, q), (q, mode, weights)


@pytest.mark.parametrize(("columns", "tokenizer"), [(1, "unicode61"), (3, "unicode61"), (2, "porter")])
def test_scores_and_order_equal_fts5s_bm25_on_random_corpora_under_inserts_updates_and_deletes(
    tmp_path: Path, columns: int, tokenizer: str
) -> None:
    rng = random.Random(columns * 7 + len(tokenizer))
    index = _index(tmp_path, columns, tokenizer)
    rowids = rng.sample(range(1, 10**9), 400)
    index.apply_rows(_rows(rng, rowids, columns), None)
    weight_sets = [[1.0] * columns, [rng.choice([0.0, 0.1, 0.3, 1.0, 2.5, 7.0]) for _ in range(columns)]]
    for step in range(4):
        for q in _queries(rng, 25):
            for mode in ("any", "all"):
                for weights in weight_sets:
                    _assert_same(index, q, mode, weights, rng.choice([1, 10, 1000]), rng.choice([0, 0, 3, 50]))
        # Updates (new text under old rowids), deletes, and new rows: the scores of every row
        # move (row count, average length), so a snapshot from before must not answer.
        changed = rng.sample(rowids, 60)
        deleted = rng.sample([r for r in rowids if r not in changed], 40)
        added = rng.sample(range(10**9, 2 * 10**9), 50)
        index.apply_rows(_rows(rng, changed + added, columns) + [(r, None) for r in deleted], step)
        rowids = [r for r in rowids if r not in deleted] + added
        # the next snapshot patches the sizes of the rows written into the last one's: as a full read
        conn, _ = index._scoring_reader()
        assert index.scorer is not None
        snap = index.scorer.snapshot(conn)
        assert snap is not None
        full_ids, full_lengths = index.scorer._sizes(conn, None)
        assert snap.rowids.tolist() == full_ids.tolist() == sorted(rowids)
        assert snap.lengths.tolist() == full_lengths.tolist()
    index.close()


def test_words_that_are_not_one_token_and_trigram_collections_are_ranked_by_fts5(tmp_path: Path) -> None:
    index = _index(tmp_path, 1)
    index.apply_rows([(1, ["foo bar baz"]), (2, ["foo_bar"]), (3, ["bar"])], None)
    conn, tokenizer = index._scoring_reader()
    assert index.scorer is not None
    # unicode61 splits foo_bar into two tokens: the phrase "foo_bar" is FTS5's to rank.
    assert index.scorer.rank(conn, tokenizer, ["foo_bar", "baz"], "any", [1.0], 10, 0) is None
    q = "foo_bar baz"
    assert index.rank(check(q, "any"), 10, 0, [1.0], None, q, (free_words(q), "any")) == index.rank_fts5(
        check(q, "any"), 10, 0, [1.0], None, q
    )
    index.close()
    trigram = TextIndex(tmp_path / "tri.sqlite", TextSpec(table="t", columns=["c"], tokenizer="trigram"), "test")
    assert trigram.scorer is None
    trigram.close()


def test_a_snapshot_is_never_read_while_a_write_is_under_way_nor_used_after_it(tmp_path: Path) -> None:
    index = _index(tmp_path, 1)
    index.apply_rows([(1, ["alpha beta"]), (2, ["alpha"])], None)
    conn, tokenizer = index._scoring_reader()
    scorer = index.scorer
    assert scorer is not None
    before = scorer.rank(conn, tokenizer, ["alpha"], "any", [1.0], 10, 0)
    assert before is not None and [r for r, _ in before] == [2, 1]
    scorer.begin_write()  # what apply_rows does before its transaction
    assert scorer.rank(conn, tokenizer, ["alpha"], "any", [1.0], 10, 0) is None
    scorer.end_write(None, [])
    index.apply_rows([(3, ["alpha alpha"])], None)
    after = scorer.rank(conn, tokenizer, ["alpha"], "any", [1.0], 10, 0)
    assert after == index.rank_fts5('"alpha"', 10, 0, [1.0], None, "alpha") and after is not None
    assert after[0][0] == 3
    # Within the rebuild interval a changed index is FTS5's to rank (exact too), not a stale snapshot's.
    scorer.rebuild_seconds = 3600.0
    index.apply_rows([(4, ["alpha alpha alpha"])], None)
    assert scorer.rank(conn, tokenizer, ["alpha"], "any", [1.0], 10, 0) is None
    assert index.rank('"alpha"', 10, 0, [1.0], None, "alpha", (["alpha"], "any"))[0][0] == 4
    index.close()


def test_searches_on_several_threads_during_writes_answer_a_state_of_the_index(tmp_path: Path) -> None:
    rng = random.Random(5)
    index = _index(tmp_path, 1)
    index.apply_rows(_rows(rng, list(range(1, 301)), 1), None)
    errors: list[BaseException] = []
    stop = threading.Event()

    def search() -> None:
        try:
            while not stop.is_set():
                q = "w1 w2 w3"
                ranked = index.rank(check(q, "any"), 20, 0, [1.0], None, q, (free_words(q), "any"))
                assert len(ranked) == 20 and all(a[1] >= b[1] for a, b in itertools.pairwise(ranked))
        except BaseException as exc:  # handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    for step in range(30):
        index.apply_rows(_rows(rng, rng.sample(range(1, 301), 20), 1), step)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    for q in _queries(rng, 20):
        _assert_same(index, q, "any", [1.0], 10, 0)
    index.close()


@pytest.mark.parametrize("columns", [1, 3])
def test_snippets_from_the_words_each_row_holds_equal_the_whole_querys(tmp_path: Path, columns: int) -> None:
    rng = random.Random(11 + columns)
    index = _index(tmp_path, columns)
    index.apply_rows(_rows(rng, list(range(1, 301)), columns), None)
    assert index.scorer is not None
    for q in _queries(rng, 60):
        for syntax, mode in (("any", "any"), ("plain", "all")):
            match, words = check(q, syntax), free_words(q)
            ranked = index.rank(match, 10, 0, [1.0] * columns, None, q, (words, mode))  # type: ignore[arg-type]
            rowids = [r for r, _ in ranked]
            if not rowids:
                continue
            held = index.scorer.words_in_rows(words, rowids)
            assert held is not None and all(held[r] for r in rowids)
            for tokens in (1, 4, 16):
                assert index.snippets(match, rowids, tokens, q, words) == index.snippets(match, rowids, tokens, q)
    index.close()


def test_scores_kept_per_word_are_bounded_however_many_weight_sets_requests_choose(tmp_path: Path) -> None:
    index = _index(tmp_path, 2)
    index.apply_rows([(i, [f"alpha w{i}", "alpha beta"]) for i in range(1, 50)], None)
    for i in range(40):
        _assert_same(index, "alpha beta", "any", [1.0 + i / 7, 0.5], 10, 0)
    assert index.scorer is not None and index.scorer._snapshot is not None
    assert all(len(e.scores) <= WEIGHT_SETS for e in index.scorer._snapshot.words.values() if e is not None)
    index.close()


def test_the_first_in_memory_answer_is_checked_against_bm25_and_a_disagreement_turns_the_path_off(
    tmp_path: Path,
) -> None:
    q = "alpha beta"
    for disagree in (False, True):
        (tmp_path / str(disagree)).mkdir()
        index = _index(tmp_path / str(disagree), 1)
        index.apply_rows([(i, [f"alpha {'beta ' * (i % 3)}w{i}"]) for i in range(1, 40)], None)
        conn, _ = index._scoring_reader()
        assert index.scorer is not None
        snap = index.scorer.snapshot(conn)
        assert snap is not None
        if disagree:  # what a SQLite build with other floating-point rounding would look like
            snap.scale *= 1.0 + 1e-12
        exact = index.rank_fts5(check(q, "any"), 10, 0, [1.0], None, q)
        assert index.rank(check(q, "any"), 10, 0, [1.0], None, q, (free_words(q), "any")) == exact
        assert index._checked and index._scorer_agrees is not disagree
        assert index.rank(check(q, "any"), 10, 0, [1.0], None, q, (free_words(q), "any")) == exact
        index.close()


def test_a_write_rereads_only_the_words_its_rows_held_before_or_after(tmp_path: Path) -> None:
    index = _index(tmp_path, 1)
    index.apply_rows([(i, [f"common w{i % 7} x{i % 5}"]) for i in range(1, 200)], None)
    assert index.scorer is not None
    words = ["common", "w1", "w2", "x3", "x4"]
    for w in words:
        _assert_same(index, w, "any", [1.0], 1000, 0)
    before = index.scorer._snapshot
    assert before is not None
    # Row 8 held "common w1 x3": it is rewritten to "common w2 y", row 9 ("common w2 x4") deleted.
    index.apply_rows([(8, ["common w2 y"]), (9, None)], 1)
    for w in [*words, "y"]:
        _assert_same(index, w, "any", [1.0], 1000, 0)
    after = index.scorer._snapshot
    assert after is not None and after is not before
    assert after.carried == {}  # every word searched was in row 8 or 9, before or after
    index.apply_rows([(500, ["w5 only"])], 2)
    for w in ["common", "w1", "w5", "x3"]:
        _assert_same(index, w, "any", [1.0], 1000, 0)
    third = index.scorer._snapshot
    assert third is not None
    # postings not reread: the carried words share their arrays with the snapshot before
    assert third.words["common"].docs is after.words["common"].docs  # type: ignore[union-attr]
    assert third.words["w1"].docs is after.words["w1"].docs  # type: ignore[union-attr]
    assert third.words["w5"] is not None and 500 in third.words["w5"].docs.tolist()
    index.close()
