"""TextManager beside VectorManager over a real standalone LocalDatabase: the shared feed (its
triggers and compaction), rebuilds, and the query checks and rank fusion on their own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from edgenode.api.errors import ApiError
from edgenode.feed import CHANGES_TABLE, compact_statements, head
from edgenode.text.hybrid import fuse
from edgenode.text.manager import TextManager
from edgenode.text.models import SearchRequest, TextSpec
from edgenode.text.query import check, tokens
from edgenode.vectors import VectorManager
from edgenode.vectors.models import CollectionSpec
from tests.test_vectors_support import blob, clustered, insert_items, make_items, open_db, run

NOTES = TextSpec(table="notes", columns=["body"])


async def _eventually(check: Callable[[], Awaitable[bool]], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"condition not met after {seconds}s"
        await asyncio.sleep(0.02)


async def _hits(text: TextManager, q: str, name: str = "notes") -> list[int]:
    result = await text.search(name, SearchRequest(q=q, k=1000))
    return sorted(h.rowid for h in result.results)


async def _notes(db, start: int, n: int, word: str = "common") -> None:
    await db.write(
        [
            ("INSERT INTO notes(id, body, emb) VALUES (?, ?, ?)", [i, f"{word} n{i}", None])
            for i in range(start, start + n)
        ]
    )


def test_deleting_one_kind_of_collection_keeps_the_feed_triggers_the_other_needs(tmp_path: Path) -> None:
    async def main() -> None:
        db = await open_db(tmp_path)
        await db.write([("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, emb F32_BLOB(4))", [])])
        base = clustered(20, 4)
        await db.write(
            [("INSERT INTO notes(id, body, emb) VALUES (?, ?, ?)", [i, f"w{i}", blob(base[i])]) for i in range(20)]
        )
        vectors = VectorManager(db, tmp_path)
        text = TextManager(db, tmp_path, vectors=vectors)
        await vectors.start()
        await text.start()
        await vectors.put_collection("emb", CollectionSpec(table="notes", column="emb", dim=4))
        await text.put_collection("notes", NOTES)
        await vectors.wait_ready()
        await text.wait_ready()
        await vectors.delete_collection("emb")
        await db.write([("UPDATE notes SET body = 'changed' WHERE id = 3", [])])
        assert await _hits(text, "changed") == [3] and await _hits(text, "w3") == []
        # and the other way round
        await vectors.put_collection("emb", CollectionSpec(table="notes", column="emb", dim=4))
        await vectors.wait_ready()
        await text.delete_collection("notes")
        await db.write([("DELETE FROM notes WHERE id = 4", [])])
        assert vectors.get("emb").info().size == 19
        await text.stop()
        await vectors.stop()
        await db.stop()

    run(main())


def test_a_text_only_feed_is_compacted_and_a_text_index_behind_the_compacted_range_is_rebuilt(tmp_path: Path) -> None:
    async def main() -> None:
        db = await open_db(tmp_path)
        await db.write([("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, emb BLOB)", [])])
        await _notes(db, 0, 100)
        text = TextManager(db, tmp_path, compact_threshold=300, compact_retain=100)
        await text.start()
        await text.put_collection("notes", NOTES)
        await text.wait_ready()
        for start in range(100, 600, 100):
            await _notes(db, start, 100)

        async def compacted() -> bool:
            return (await db.read(f"SELECT count(*) FROM {CHANGES_TABLE}")).rows[0][0] <= 300

        await _eventually(compacted)
        assert len(await _hits(text, "common")) == 600
        assert text.get("notes").info().builds == 1
        await text.stop()
        # while it is down, more changes arrive and another node compacts past its position
        await _notes(db, 600, 50, word="later")
        await db.write(compact_statements(await head(db)))
        again = TextManager(db, tmp_path)
        await again.start()
        await again.wait_ready("notes")
        info = again.get("notes").info()
        assert info.builds == 1 and not info.loaded_from_disk and info.size == 650
        assert len(await _hits(again, "later")) == 50
        await again.stop()
        await db.stop()

    run(main())


def test_vector_compaction_keeps_the_changes_a_text_collection_has_not_applied(tmp_path: Path) -> None:
    async def main() -> None:
        db = await open_db(tmp_path)
        await db.write([("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, emb BLOB)", [])])
        await make_items(db, clustered(50, 4))
        await _notes(db, 0, 10)
        text = TextManager(db, tmp_path)
        await text.start()
        await text.put_collection("notes", NOTES)
        await text.wait_ready()
        await text.stop()
        await db.write([("DROP TABLE notes", [])])
        vectors = VectorManager(db, tmp_path, compact_threshold=100, compact_retain=10)
        await vectors.start()
        await vectors.put_collection("items", CollectionSpec(table="items", column="emb", dim=4))
        await vectors.wait_ready()
        await insert_items(db, clustered(150, 4, seed=1), start_id=1000)
        # the text collection cannot apply the feed (its table is gone): it is not ready, so the
        # vector side must not compact what it has not applied
        stuck = TextManager(db, tmp_path)
        await stuck.start()

        async def failed() -> bool:
            return stuck.get("notes").state == "error"

        await _eventually(failed)
        before = (await db.read(f"SELECT count(*) FROM {CHANGES_TABLE}")).rows[0][0]
        await insert_items(db, clustered(150, 4, seed=2), start_id=2000)
        await asyncio.sleep(0.5)
        assert (await db.read(f"SELECT count(*) FROM {CHANGES_TABLE}")).rows[0][0] == before + 150 > 100
        # once it is gone, compaction goes ahead
        await stuck.delete_collection("notes")
        await insert_items(db, clustered(10, 4, seed=3), start_id=3000)

        async def compacted() -> bool:
            return (await db.read(f"SELECT count(*) FROM {CHANGES_TABLE}")).rows[0][0] < 100

        await _eventually(compacted)
        await stuck.stop()
        await vectors.stop()
        await db.stop()

    run(main())


def test_a_changed_definition_is_rebuilt_and_the_same_one_is_not(tmp_path: Path) -> None:
    async def main() -> None:
        db = await open_db(tmp_path)
        await db.write([("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, emb BLOB)", [])])
        await _notes(db, 0, 10, word="running")
        text = TextManager(db, tmp_path)
        await text.start()
        assert (await text.put_collection("notes", NOTES))[0] == 202
        await text.wait_ready()
        uid = text.get("notes").definition.uid
        assert (await text.put_collection("notes", NOTES))[0] == 200  # same spec: nothing rebuilt
        assert text.get("notes").definition.uid == uid
        assert await _hits(text, "run") == []
        porter = TextSpec(table="notes", columns=["body"], tokenizer="porter")
        assert (await text.put_collection("notes", porter))[0] == 202
        await text.wait_ready()
        assert len(await _hits(text, "run")) == 10  # stemmed: running ~ run
        assert len(list((tmp_path / "text").iterdir())) == 1  # the old definition's files are gone
        await text.stop()
        await db.stop()

    run(main())


def test_a_write_landing_while_a_new_collection_turns_ready_is_applied_without_another_write(tmp_path: Path) -> None:
    """A change committed after a build's last read of the feed's head, but before the collection
    turned ready, was skipped by the change listener and applied by nobody until the next write (a
    write right after a table rename, while its collections rebuilt, stayed unsearchable)."""

    async def main() -> None:
        db = await open_db(tmp_path)
        await db.write([("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, emb F32_BLOB(4))", [])])
        base = clustered(4000, 4)

        def insert(i: int) -> tuple[str, list]:
            return ("INSERT INTO notes(id, body, emb) VALUES (?, ?, ?)", [i, f"common n{i}", blob(base[i])])

        async def write_until(ready: Callable[[], bool], i: int) -> int:
            """One write at a time (each awaits the change listeners) up to the moment it is ready."""
            while not ready():
                await db.write([insert(i)])
                i += 1
            return i

        await db.write([insert(i) for i in range(2000)])
        vectors = VectorManager(db, tmp_path)
        text = TextManager(db, tmp_path, vectors=vectors)
        await vectors.start()
        await text.start()
        await text.put_collection("notes", NOTES)
        n = await write_until(lambda: text.get("notes").state == "ready", 2000)
        await text.wait_ready()
        # No write since it turned ready: the last ones landed while it did.
        assert text.get("notes").size == n and await _hits(text, f"n{n - 1}") == [n - 1]
        await vectors.put_collection("emb", CollectionSpec(table="notes", column="emb", dim=4))
        n = await write_until(lambda: vectors.get("emb").state == "ready", n)
        await vectors.wait_ready()
        assert vectors.get("emb").info().size == n
        await text.stop()
        await vectors.stop()
        await db.stop()

    run(main())


def test_the_query_lexer_names_the_character_fts5_cannot_read() -> None:
    assert [t.text for t in tokens('title:"a ""b""" AND (c* OR ^d) NOT e')] == [
        "title", ":", '"a ""b"""', "AND", "(", "c", "*", "OR", "^", "d", ")", "NOT", "e",
    ]  # fmt: skip
    for q, where in [('ab "cd', 3), ("a (b", 2), ("a) b", 1), ("a.b", 1), ("x & y", 2)]:
        with pytest.raises(ApiError) as err:
            check(q, "fts5")
        assert f"character {where}" in err.value.message and err.value.code == "invalid_query", q
    assert check("The Vector, and search!", "plain") == '"Vector" "search"'
    assert check("the vector search", "any") == '"vector" OR "search"'
    assert check("the and", "any") == '"the" OR "and"'  # only stopwords: kept


def test_rank_fusion_adds_the_arms_shares_and_breaks_ties_by_rowid() -> None:
    hits = fuse([(1, 9.0, "s1"), (2, 8.0, "s2")], [(2, 0.1), (3, 0.2)], weight=0.5, rank_constant=60)
    assert [h.rowid for h in hits] == [2, 1, 3]
    assert hits[0].arms == ["text", "vector"] and hits[0].text_rank == 2 and hits[0].vector_rank == 1
    assert hits[0].score == pytest.approx(0.5 / 62 + 0.5 / 61)
    assert hits[1].arms == ["text"] and hits[2].arms == ["vector"] and hits[2].snippet is None
    assert [h.rowid for h in fuse([(5, 1.0, None)], [(4, 0.0)], 0.5, 60)] == [4, 5]  # equal scores
    assert [h.rowid for h in fuse([(1, 1.0, None)], [(2, 0.0)], 1.0, 60)] == [2, 1]
