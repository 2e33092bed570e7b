"""A standalone node's write path.

Group commit (edgenode.standalone.commits): concurrent autocommit writes share one transaction and
one COMMIT, each still atomic, with its own result or error, acknowledged only once the shared
COMMIT is done; a `kill -9` loses no acknowledged write. And what every write pays besides: no
schema-mirror rebuild and no read for kinds of collections nobody defined."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import libsql
import pytest

from edgenode.errors import SQLError
from edgenode.standalone import LocalDatabase
from tests.procs import start
from tests.test_vectors_support import open_db, run


async def _count(db: LocalDatabase, sql: str, params: list[Any] | None = None) -> int:
    return (await db.read(sql, params)).rows[0][0]


def test_concurrent_writes_share_one_commit_and_each_gets_its_own_result(tmp_path: Path) -> None:
    async def main() -> None:
        db = await open_db(tmp_path)
        await db.write([("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", [])])
        before = db.commits.stats.commits
        results = await asyncio.gather(
            *(
                db.write([("INSERT INTO t (v) VALUES (?)", [f"a{i}"]), ("INSERT INTO t (v) VALUES (?)", [f"b{i}"])])
                for i in range(20)
            )
        )
        assert db.commits.stats.commits - before == 1 and db.commits.stats.largest == 20
        rowids = [r.last_insert_rowid for result in results for r in result.results]
        assert len(set(rowids)) == 40
        # each write's two statements are adjacent: its own rowids, in arrival order
        assert rowids == list(range(1, 41))
        assert await _count(db, "SELECT count(*) FROM t") == 40
        await db.stop()

    run(main())


def test_a_failing_write_is_undone_alone_and_reported_to_its_own_caller(tmp_path: Path) -> None:
    async def main() -> None:
        db = await open_db(tmp_path)
        await db.write([("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)", [])])
        await db.write([("INSERT INTO t (id, v) VALUES (1, 'taken')", [])])

        def insert(v: str) -> Any:
            return db.write([("INSERT INTO t (v) VALUES (?)", [v])])

        outcomes = await asyncio.gather(
            insert("first"),
            # its first statement ran inside the group, then its second failed: both are undone
            db.write([("INSERT INTO t (v) VALUES ('half')", []), ("INSERT INTO t (v) VALUES ('taken')", [])]),
            insert("second"),
            # a conflict clause that ends the whole shared transaction: the writes before it run again
            db.write([("INSERT OR ROLLBACK INTO t (v) VALUES ('taken')", [])]),
            # a protocol stream's statement: its error comes back as its outcome
            db.commit_statement("INSERT INTO t (v) VALUES ('taken')", [], False, True, True, False, 5.0),
            db.commit_statement("INSERT INTO t (v) VALUES ('stream')", [], False, True, True, False, 5.0),
            insert("third"),
            return_exceptions=True,
        )
        first, half, second, rollback, stream_bad, stream_ok, third = outcomes
        assert isinstance(half, SQLError) and half.message.startswith("statements[1]:") and "UNIQUE" in half.message
        assert isinstance(rollback, SQLError) and "UNIQUE" in rollback.message
        assert stream_bad[0] is False and "UNIQUE" in str(stream_bad[1])
        assert stream_ok[0] is True and stream_ok[1].rows_affected == 1
        for ok in (first, second, third):
            assert not isinstance(ok, BaseException) and ok.results[0].rows_affected == 1
        values = {row[0] for row in (await db.read("SELECT v FROM t")).rows}
        assert values == {"taken", "first", "second", "stream", "third"}
        await db.stop()

    run(main())


def test_a_deferred_foreign_key_failing_at_commit_fails_only_its_own_write(tmp_path: Path) -> None:
    async def main() -> None:
        db = await open_db(tmp_path)
        await db.write(
            [
                ("CREATE TABLE p (id INTEGER PRIMARY KEY)", []),
                ("CREATE TABLE c (pid INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)", []),
            ]
        )
        outcomes = await asyncio.gather(
            db.write([("INSERT INTO p (id) VALUES (1)", [])]),
            db.write([("INSERT INTO c (pid) VALUES (99)", [])]),  # no parent: refused at COMMIT
            db.write([("INSERT INTO c (pid) VALUES (1)", [])]),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], SQLError) and "FOREIGN KEY" in outcomes[1].message
        assert not isinstance(outcomes[0], BaseException) and not isinstance(outcomes[2], BaseException)
        assert (await db.read("SELECT pid FROM c")).rows == [[1]]
        await db.stop()

    run(main())


def test_a_read_of_a_missing_table_does_not_rebuild_the_schema_mirror_but_another_connections_table_is_found(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        db = await open_db(tmp_path)
        refreshes = db.schema_refreshes
        for _ in range(3):
            with pytest.raises(SQLError, match="no such table"):
                await db.read("SELECT * FROM nowhere")
        assert db.schema_refreshes == refreshes
        other = libsql.connect(str(db.path))
        other.execute("CREATE TABLE elsewhere (a)")
        other.execute("INSERT INTO elsewhere VALUES (7)")
        other.commit()
        other.close()
        assert (await db.read("SELECT a FROM elsewhere")).rows == [[7]]
        assert db.schema_refreshes == refreshes + 1
        await db.stop()

    run(main())


def test_writes_on_a_node_without_collections_read_nothing_for_them(tmp_path: Path) -> None:
    from edgenode.text.manager import TextManager
    from edgenode.vectors.manager import VectorManager

    async def main() -> None:
        db = await open_db(tmp_path)
        vectors = VectorManager(db, tmp_path)
        text = TextManager(db, tmp_path, vectors=vectors)
        await vectors.start()
        await text.start()
        await db.write([("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", [])])
        reads: list[str] = []
        real_read = db.read

        async def counted(sql: str, *args: Any, **kw: Any) -> Any:
            reads.append(sql)
            return await real_read(sql, *args, **kw)

        db.read = counted  # type: ignore[method-assign]
        refreshes = db.schema_refreshes
        for i in range(5):
            await db.write([("INSERT INTO t (v) VALUES (?)", [str(i)])])
        assert reads == [] and db.schema_refreshes == refreshes
        db.read = real_read  # type: ignore[method-assign]
        await text.stop()
        await vectors.stop()
        await db.stop()

    run(main())


def test_kill_9_during_group_commits_loses_no_acknowledged_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    node = start(["serve", "--data-dir", str(data)], tmp_path, name="node")
    httpx.post(node.url + "/api/v1/execute", json={"statements": [{"sql": "CREATE TABLE k (id TEXT PRIMARY KEY)"}]})
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def rest_writer(worker: int) -> None:
        with httpx.Client(base_url=node.url, timeout=10) as client:
            for n in range(100_000):
                key = f"rest-{worker}-{n}"
                try:
                    response = client.post(
                        "/api/v1/execute", json={"statements": [{"sql": "INSERT INTO k VALUES (?)", "params": [key]}]}
                    )
                except httpx.TransportError:
                    return
                if response.status_code != 200 or stop.is_set():
                    return
                with lock:
                    acked.append(key)

    def hrana_writer(worker: int) -> None:
        try:
            conn = libsql.connect(node.url, isolation_level=None)  # autocommit: each INSERT its own write
            for n in range(100_000):
                key = f"hrana-{worker}-{n}"
                conn.execute("INSERT INTO k VALUES (?)", (key,))
                if stop.is_set():
                    return
                with lock:
                    acked.append(key)
        except Exception:
            return  # the node is gone

    threads = [threading.Thread(target=rest_writer, args=(i,)) for i in range(6)]
    threads += [threading.Thread(target=hrana_writer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if len(acked) >= 300 and any(k.startswith("hrana") for k in acked):
                break
        time.sleep(0.02)
    status = httpx.get(node.url + "/api/v1/status").json()
    node.kill()
    stop.set()
    for thread in threads:
        thread.join(30)
    with lock:
        acknowledged = set(acked)
    assert len(acknowledged) >= 300, node.log()
    assert status["database"]["group_commits"]["largest"] > 1, status["database"]
    node = start(["serve", "--data-dir", str(data)], tmp_path, name="node-again")
    try:
        rows = httpx.post(
            node.url + "/api/v1/query", json={"sql": "SELECT id FROM k", "params": []}, timeout=30
        ).json()["rows"]
        assert acknowledged <= {row[0] for row in rows}
    finally:
        node.stop()
