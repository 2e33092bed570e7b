"""VectorManager over a real standalone LocalDatabase: feed, persistence, rebuilds, planner."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from edgenode.feed import CHANGES_TABLE, compact_statements, head
from edgenode.vectors import VectorManager
from edgenode.vectors.models import CollectionSpec, Filter, SearchRequest
from edgenode.vectors.planner import PlannerSettings
from tests.test_vectors_support import blob, clustered, exact_topk, insert_items, make_items, open_db, run

DIM = 16
SPEC = CollectionSpec(table="items", column="emb", dim=DIM, filter_columns=["cat", "price"])
ANN = PlannerSettings(exact_threshold=0)


async def _setup(tmp_path: Path, n: int = 2000, planner: PlannerSettings = ANN, **kw) -> tuple:
    db = await open_db(tmp_path)
    base = clustered(n, DIM)
    await make_items(db, base)
    manager = VectorManager(db, tmp_path, planner=planner, **kw)
    await manager.start()
    status, _ = await manager.put_collection("items", SPEC)
    assert status == 202
    await manager.wait_ready("items")
    return db, manager, base


async def _eventually(check: Callable[[], Awaitable[bool]], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"condition not met after {seconds}s"
        await asyncio.sleep(0.02)


async def _ids(manager: VectorManager, vector: np.ndarray, k: int = 10, **kw) -> list[int]:
    result = await manager.search("items", SearchRequest(vector=vector.tolist(), k=k, **kw))
    return [h.rowid for h in result.results]


def test_ann_recall_at_10_is_at_least_095_against_exact_on_generated_data(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, base = await _setup(tmp_path, n=5000)
        ids = np.arange(1, len(base) + 1)
        queries = clustered(100, DIM, seed=7)
        hits = 0
        for q in queries:
            got = await _ids(manager, q, mode="ann")
            hits += len(set(got) & set(exact_topk(base, ids, q, 10)))
            assert await _ids(manager, q, mode="exact") == exact_topk(base, ids, q, 10)
        assert hits / (10 * len(queries)) >= 0.95
        await manager.stop()
        await db.stop()

    run(main())


def test_inserts_updates_and_deletes_are_reflected_after_the_next_write(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, base = await _setup(tmp_path)
        probe = clustered(1, DIM, seed=99)[0]
        await insert_items(db, probe[None, :], start_id=10_000)
        assert (await _ids(manager, probe, k=1)) == [10_000]
        assert (await _ids(manager, probe, k=1, mode="exact")) == [10_000]
        # update: move row 10_000 away and row 5 onto the probe
        await db.write(
            [
                ("UPDATE items SET emb = ? WHERE id = 10000", [blob(-probe)]),
                ("UPDATE items SET emb = ? WHERE id = 5", [blob(probe)]),
            ]
        )
        assert (await _ids(manager, probe, k=1)) == [5]
        assert 10_000 not in await _ids(manager, probe, k=50)
        await db.write([("DELETE FROM items WHERE id = 5", [])])
        assert 5 not in await _ids(manager, probe, k=50)
        assert 5 not in await _ids(manager, probe, k=50, mode="exact")
        info = manager.get("items").info()
        assert info.size == len(base) and info.position == await head(db)
        await manager.stop()
        await db.stop()

    run(main())


def test_restart_loads_the_persisted_index_without_rebuilding(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, base = await _setup(tmp_path)
        q = base[3]
        before = await _ids(manager, q)
        await manager.stop()
        await insert_items(db, q[None, :], start_id=20_000)  # written while no index was running
        again = VectorManager(db, tmp_path, planner=ANN)
        await again.start()
        await again.wait_ready("items")
        info = again.get("items").info()
        assert info.loaded_from_disk and info.builds == 0
        assert info.size == len(base) + 1  # caught up from the feed
        got = await _ids(again, q, k=11)
        assert set(got) == {20_000, *before}
        await again.stop()
        await db.stop()

    run(main())


def _index_files(tmp_path: Path) -> tuple[Path, Path]:
    (directory,) = [p for p in (tmp_path / "vectors").iterdir() if p.is_dir()]
    gen = json.loads((directory / "current.json").read_text())["gen"]
    return directory / f"index-{gen}.hnsw", directory / f"sidecar-{gen}.sqlite"


def test_a_corrupt_index_file_is_rebuilt_from_the_sidecar(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, base = await _setup(tmp_path)
        expected = await _ids(manager, base[0], mode="exact")
        await manager.stop()
        index_path, _ = _index_files(tmp_path)
        data = bytearray(index_path.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
        index_path.write_bytes(bytes(data))
        again = VectorManager(db, tmp_path, planner=ANN)
        await again.start()
        await again.wait_ready("items")
        info = again.get("items").info()
        assert not info.loaded_from_disk and info.builds == 1 and info.size == len(base)
        assert (await _ids(again, base[0]))[:5] == expected[:5]
        await again.stop()
        await db.stop()

    run(main())


def _copy(source: Path, target: Path) -> None:
    for suffix in ("", ".json"):
        Path(str(target) + suffix).write_bytes(Path(str(source) + suffix).read_bytes())


def test_an_index_file_from_another_collection_or_primary_is_not_trusted(tmp_path: Path) -> None:
    async def main() -> None:
        other = tmp_path / "other"
        db2, manager2, _ = await _setup(other)  # same shape, another database (another uid)
        await manager2.stop()
        await db2.stop()
        node = tmp_path / "node"
        db, manager, base = await _setup(node)
        await manager.stop()
        foreign_index, _ = _index_files(other)
        mine, _ = _index_files(node)
        _copy(foreign_index, mine)
        again = VectorManager(db, node, planner=ANN)
        await again.start()
        await again.wait_ready("items")
        info = again.get("items").info()
        assert not info.loaded_from_disk and info.builds == 1
        ids = np.arange(1, len(base) + 1)
        assert (await _ids(again, base[9], k=3)) == exact_topk(base, ids, base[9], 3)
        await again.stop()
        await db.stop()

    run(main())


def test_a_corrupt_sidecar_means_a_full_rebuild_from_the_database(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, base = await _setup(tmp_path)
        await manager.stop()
        _, sidecar = _index_files(tmp_path)
        for p in sidecar.parent.glob(sidecar.name + "*"):
            p.write_bytes(b"not a database" * 100)
        again = VectorManager(db, tmp_path, planner=ANN)
        await again.start()
        await again.wait_ready("items")
        info = again.get("items").info()
        assert info.builds == 1 and info.size == len(base) and info.state == "ready"
        await again.stop()
        await db.stop()

    run(main())


def test_filtered_ann_returns_k_results_when_k_rows_match(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, base = await _setup(tmp_path, n=5000)
        ids = np.arange(1, len(base) + 1)
        cats = np.array(["abcdefghij"[i % 10] for i in ids])
        for q in clustered(10, DIM, seed=3):
            # ~1% selectivity: category 'c' (10%) and price below 500 (10%)
            flt = Filter(sql="cat = ? AND price < ?", params=["c", 500])
            result = await manager.search("items", SearchRequest(vector=q.tolist(), k=10, filter=flt, mode="ann"))
            mask = (cats == "c") & (ids < 500)
            want = exact_topk(base[mask], ids[mask], q, 10)
            assert [h.rowid for h in result.results] == want
            # a broad filter is answered by HNSW with over-fetch
            broad = await manager.search(
                "items", SearchRequest(vector=q.tolist(), k=10, filter=Filter(sql="price >= 0"), mode="ann")
            )
            assert broad.mode == "ann" and len(broad.results) == 10
        await manager.stop()
        await db.stop()

    run(main())


def test_the_feed_is_compacted_and_an_index_behind_the_compacted_range_is_rebuilt(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, _ = await _setup(tmp_path, n=500, compact_threshold=300, compact_retain=100)
        await insert_items(db, clustered(400, DIM, seed=5), start_id=50_000)

        async def compacted() -> bool:
            return (await db.read(f"SELECT count(*) FROM {CHANGES_TABLE}")).rows[0][0] <= 300

        await _eventually(compacted)
        assert (await db.read(f"SELECT count(*) FROM {CHANGES_TABLE}")).rows[0][0] <= 300
        await manager.stop()
        # while the node is down, more changes arrive and another node compacts past our position
        await insert_items(db, clustered(50, DIM, seed=6), start_id=60_000)
        await db.write(compact_statements(await head(db)))
        again = VectorManager(db, tmp_path, planner=ANN)
        await again.start()
        await again.wait_ready("items")
        info = again.get("items").info()
        assert info.builds == 1 and info.size == 950
        await again.stop()
        await db.stop()

    run(main())


def test_many_deletes_trigger_an_index_rebuild_that_drops_deleted_slots(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, base = await _setup(tmp_path, n=3000)
        await db.write([("DELETE FROM items WHERE id % 3 = 0", [])])

        async def rebuilt() -> bool:
            return manager.get("items").info().builds == 2 and not manager.get("items").rebuilding

        await _eventually(rebuilt)
        info = manager.get("items").info()
        assert info.builds == 2 and info.deleted == 0 and info.size == 2000
        assert all(r % 3 for r in await _ids(manager, base[2], k=50))
        await manager.stop()
        await db.stop()

    run(main())


def test_a_definition_written_elsewhere_is_picked_up_by_another_manager(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, base = await _setup(tmp_path / "a")
        other = VectorManager(db, tmp_path / "b", planner=ANN)
        await other.start()  # sees the stored definition and builds its own index
        await other.wait_ready("items")
        assert other.get("items").info().size == len(base)
        await manager.delete_collection("items")  # the write notifies both managers
        assert "items" not in other.collections and "items" not in manager.collections
        triggers = await db.read("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        assert triggers.rows == []
        await other.stop()
        await manager.stop()
        await db.stop()

    run(main())


def test_searches_stay_correct_while_writes_are_applied(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, base = await _setup(tmp_path)
        stop = asyncio.Event()

        async def writer() -> None:
            start = 100_000
            while not stop.is_set():
                await insert_items(db, clustered(50, DIM, seed=start), start_id=start)
                start += 50

        async def reader() -> None:
            for i in range(200):
                q = base[i % 100]
                got = await _ids(manager, q, k=1)
                assert got == [i % 100 + 1]

        task = asyncio.create_task(writer())
        await asyncio.gather(reader(), reader(), reader())
        stop.set()
        await task
        await manager.stop()
        await db.stop()

    run(main())


def test_64_bit_and_negative_rowids_come_back_exactly(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, _ = await _setup(tmp_path, n=300)
        probes = clustered(2, DIM, seed=123)
        big, negative = 2**53 + 1, -(2**40) - 3
        await db.write(
            [
                ("INSERT INTO items(id, emb, cat, price) VALUES (?, ?, 'a', 1)", [big, blob(probes[0])]),
                ("INSERT INTO items(id, emb, cat, price) VALUES (?, ?, 'a', 1)", [negative, blob(probes[1])]),
            ]
        )
        assert (await _ids(manager, probes[0], k=1)) == [big]
        assert (await _ids(manager, probes[1], k=1, mode="exact")) == [negative]
        flt = Filter(sql="rowid = ?", params=[big])
        result = await manager.search("items", SearchRequest(vector=probes[0].tolist(), k=1, filter=flt))
        assert [h.rowid for h in result.results] == [big]
        await manager.stop()
        await db.stop()

    run(main())


def test_inner_product_collections_rank_like_cosine_on_normalised_vectors(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, base = await _setup(tmp_path, n=3000)
        spec = CollectionSpec(table="items", column="emb", dim=DIM, metric="ip", filter_columns=["cat"])
        await manager.put_collection("ipitems", spec)
        await manager.wait_ready("ipitems")
        ids = np.arange(1, len(base) + 1)
        q = clustered(1, DIM, seed=77)[0]
        for mode in ("ann", "exact"):
            result = await manager.search("ipitems", SearchRequest(vector=q.tolist(), k=5, mode=mode))
            assert [h.rowid for h in result.results] == exact_topk(base, ids, q, 5)
            assert abs(result.results[0].distance - (1 - float(base[result.results[0].rowid - 1] @ q))) < 1e-4
        flt = Filter(sql="cat = ?", params=["d"])
        result = await manager.search("ipitems", SearchRequest(vector=q.tolist(), k=5, filter=flt))
        mask = ids % 10 == 3
        assert [h.rowid for h in result.results] == exact_topk(base[mask], ids[mask], q, 5)
        await manager.stop()
        await db.stop()

    run(main())


def test_in_process_query_takes_arrays_and_answers_like_the_json_search(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, base = await _setup(tmp_path, n=2000)
        queries = clustered(5, DIM, seed=31)
        for ef in (None, 8, 200):
            one = await manager.query("items", queries[0], 10, ef=ef)
            assert [h.rowid for h in one[0].results] == await _ids(manager, queries[0], ef=ef)
        many = await manager.query("items", queries.astype(np.float64), 3, filter=Filter(sql="cat = ?", params=["b"]))
        ids = np.arange(1, len(base) + 1)
        mask = ids % 10 == 1
        assert [[h.rowid for h in r.results] for r in many] == [
            exact_topk(base[mask], ids[mask], q, 3) for q in queries
        ]
        await manager.stop()
        await db.stop()

    run(main())


def test_in_process_query_rejects_bad_shapes_and_values_naming_the_problem(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, _ = await _setup(tmp_path, n=300)
        good = clustered(1, DIM, seed=5)[0]
        nan = good.copy()
        nan[3] = np.nan
        cases = {
            "dimension_mismatch": [np.zeros(DIM + 1), np.zeros((2, 3, DIM)), np.zeros((0, DIM))],
            "invalid_vector": [nan, np.zeros(DIM), np.full(DIM, 1e39)],  # 1e39 is beyond float32
        }
        for code, arrays in cases.items():
            for array in arrays:
                try:
                    await manager.query("items", array)
                except Exception as exc:
                    assert getattr(exc, "code", None) == code, (array.shape, exc)
                else:
                    raise AssertionError(f"accepted {array!r}")
        # Huge but finite float32 values overflow a sum of squares; they are still a valid query.
        assert len((await manager.query("items", np.full(DIM, 1e30)))[0].results) == 10
        await manager.stop()
        await db.stop()

    run(main())


async def _keyed_setup(tmp_path: Path, unique: str) -> tuple:
    db = await open_db(tmp_path)
    await db.write(
        [(f"CREATE TABLE keyed(id INTEGER PRIMARY KEY, doc TEXT, model TEXT, emb F32_BLOB({DIM}){unique})", [])]
    )
    base = clustered(200, DIM, seed=4)
    await db.write(
        [
            ("INSERT INTO keyed(id, doc, model, emb) VALUES (?, ?, 'm', ?)", [i + 1, f"doc{i}", blob(v)])
            for i, v in enumerate(base)
        ]
    )
    manager = VectorManager(db, tmp_path, planner=ANN)
    await manager.start()
    await manager.put_collection("keyed", CollectionSpec(table="keyed", column="emb", dim=DIM))
    await manager.wait_ready("keyed")
    return db, manager, base


async def _keyed_ids(manager: VectorManager, vector: np.ndarray, mode: str = "ann") -> list[int]:
    result = await manager.search("keyed", SearchRequest(vector=vector.tolist(), k=20, mode=mode))  # type: ignore[arg-type]
    return [h.rowid for h in result.results]


def test_insert_or_replace_on_a_unique_key_retires_the_replaced_rows_vector(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, base = await _keyed_setup(tmp_path, ", UNIQUE(doc, model)")
        probe = clustered(1, DIM, seed=8)[0]
        # The old row 4 ("doc3") is deleted by the REPLACE without a DELETE trigger firing.
        await db.write([("INSERT OR REPLACE INTO keyed(doc, model, emb) VALUES ('doc3', 'm', ?)", [blob(probe)])])
        new_id = (await db.read("SELECT id FROM keyed WHERE doc = 'doc3'")).rows[0][0]
        assert new_id != 4
        for mode in ("ann", "exact"):
            assert 4 not in await _keyed_ids(manager, base[3], mode)
            assert (await _keyed_ids(manager, probe, mode))[0] == new_id
        # UPDATE OR REPLACE onto another row's key deletes that row too.
        await db.write([("UPDATE OR REPLACE keyed SET doc = 'doc10' WHERE id = 12", [])])
        assert 11 not in await _keyed_ids(manager, base[10])
        assert manager.get("keyed").info().size == len(base) - 1
        await manager.stop()
        await db.stop()

    run(main())


def test_a_unique_index_added_later_is_picked_up_by_the_next_put_or_start(tmp_path: Path) -> None:
    async def main() -> None:
        db, manager, base = await _keyed_setup(tmp_path, "")
        await db.write([("CREATE UNIQUE INDEX keyed_doc ON keyed(doc)", [])])
        await manager.put_collection("keyed", CollectionSpec(table="keyed", column="emb", dim=DIM))  # same spec
        await db.write([("INSERT OR REPLACE INTO keyed(doc, model, emb) VALUES ('doc5', 'x', ?)", [blob(-base[5])])])
        assert 6 not in await _keyed_ids(manager, base[5])
        await manager.stop()
        # Another index added while no node runs: a starting node reinstalls the triggers.
        await db.write([("DROP INDEX keyed_doc", []), ("CREATE UNIQUE INDEX keyed_doc_model ON keyed(doc, model)", [])])
        again = VectorManager(db, tmp_path, planner=ANN)
        await again.start()
        await again.wait_ready("keyed")

        async def healed() -> bool:
            rows = (await db.read("SELECT sql FROM sqlite_master WHERE name = '_edgenode_feed_keyed_ri'")).rows
            return bool(rows) and '"model" = new."model"' in rows[0][0]

        await _eventually(healed, 10)
        await db.write([("INSERT OR REPLACE INTO keyed(doc, model, emb) VALUES ('doc7', 'm', ?)", [blob(-base[7])])])
        assert 8 not in await _keyed_ids(again, base[7])
        survivors = (await db.read("SELECT count(*) FROM keyed")).rows[0][0]
        assert again.get("keyed").info().size == survivors
        await again.stop()
        await db.stop()

    run(main())


async def _interrupted_build(tmp_path: Path, seed: int) -> tuple:
    """A database of 20,000 items whose first build was stopped at 30%, past several checkpoints."""
    db = await open_db(tmp_path)
    base = clustered(20_000, DIM, seed=seed)
    await make_items(db, base)
    manager = VectorManager(db, tmp_path, planner=ANN, build_checkpoint_rows=2000, build_threads=1)
    await manager.start()
    await manager.put_collection("items", SPEC)
    c = manager.get("items")
    deadline = time.monotonic() + 60
    while c.progress < 0.3:
        assert time.monotonic() < deadline and c.state != "ready", c.info()
        await asyncio.sleep(0.001)
    await manager.stop()  # interrupted mid-build, as a shutdown (or a crash after a checkpoint) would
    return db, base


def test_an_interrupted_build_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    async def main() -> None:
        db, base = await _interrupted_build(tmp_path, seed=21)
        # A row changed after the build began reaches the resumed build through the feed.
        probe = clustered(1, DIM, seed=22)[0]
        await db.write([("UPDATE items SET emb = ? WHERE id = 3", [blob(probe)])])

        again = VectorManager(db, tmp_path, planner=ANN, build_checkpoint_rows=2000)
        await again.start()
        await again.wait_ready("items")
        info = again.get("items").info()
        assert info.resumed_from >= 2000 and info.builds == 1 and info.size == len(base)
        ids = np.arange(1, len(base) + 1)
        base[2] = probe
        for q in clustered(20, DIM, seed=23):
            assert await _ids(again, q, mode="exact") == exact_topk(base, ids, q, 10)
        assert (await _ids(again, probe, k=1))[0] == 3
        assert not list((tmp_path / "vectors").glob("*/build.json"))  # the finished build forgets its note
        await again.stop()
        await db.stop()

    run(main())


def test_a_build_whose_feed_start_was_compacted_away_starts_over(tmp_path: Path) -> None:
    async def main() -> None:
        db, base = await _interrupted_build(tmp_path, seed=31)
        # Meanwhile a change lands and another node compacts the feed past it (and past the build's start).
        probe = clustered(1, DIM, seed=32)[0]
        await db.write([("UPDATE items SET emb = ? WHERE id = 5", [blob(probe)])])
        await db.write(compact_statements(await head(db)))

        again = VectorManager(db, tmp_path, planner=ANN, build_checkpoint_rows=2000)
        await again.start()
        await again.wait_ready("items")
        info = again.get("items").info()
        assert info.resumed_from == 0 and info.size == len(base)  # the checkpoint could not be trusted
        assert (await _ids(again, probe, k=1))[0] == 5  # and the compacted change is not lost
        await again.stop()
        await db.stop()

    run(main())
