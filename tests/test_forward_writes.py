"""Forward-mode writes on a replica node against a real `edgenode primary`: the primary reports each
commit's position (Hrana `replication_index`), and the node's read-your-writes waits for that position."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from edgenode.hrana.backend import HranaError
from edgenode.hrana.client import BatchStepError, HranaClient
from edgenode.replica.combiner import Combiner
from edgenode.results import WritePosition, position_of_index
from tests.procs import Proc
from tests.test_replica_support import (
    NODE_TOKEN,
    PRIMARY_AUTH,
    TOKEN,
    execute,
    module_primary_and_node,
    primary_rows,
    primary_write,
    rows,
)

shared, primary, node = module_primary_and_node(
    "forward-writes", "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT UNIQUE)"
)


def primary_position(primary: Proc) -> WritePosition:
    """The primary's newest commit, as its Hrana results report it (a read in autocommit)."""
    with HranaClient(primary.url, TOKEN) as client:
        position = position_of_index(client.execute("SELECT 1").replication_index)
    assert position is not None
    return position


def test_the_primary_reports_each_commit_position_as_the_replication_index(primary: Proc) -> None:
    with HranaClient(primary.url, TOKEN) as client:
        first = position_of_index(client.execute("INSERT INTO kv(v) VALUES ('p1')").replication_index)
        second = position_of_index(client.execute("INSERT INTO kv(v) VALUES ('p2')").replication_index)
        assert first is not None and second is not None
        assert second.generation == first.generation and second.frame > first.frame
        with client.stream() as stream:
            stream.execute("BEGIN")
            inside = stream.execute("INSERT INTO kv(v) VALUES ('p3')")
            assert inside.replication_index is None  # nothing of the transaction is committed yet
            committed = position_of_index(stream.execute("COMMIT").replication_index)
        assert committed is not None and committed.frame > second.frame
        assert primary_position(primary) == committed
    # On the wire it is a decimal string, as sqld sends it, on the statement and on the batch.
    body = {
        "requests": [
            {"type": "execute", "stmt": {"sql": "INSERT INTO kv(v) VALUES ('p4')"}},
            {"type": "batch", "batch": {"steps": [{"stmt": {"sql": "INSERT INTO kv(v) VALUES ('p5')"}}]}},
            {"type": "close"},
        ]
    }
    response = httpx.post(primary.url + "/v2/pipeline", json=body, headers=PRIMARY_AUTH, timeout=10)
    executed, batched = (r["response"]["result"] for r in response.json()["results"][:2])
    assert isinstance(executed["replication_index"], str)
    assert batched["replication_index"] == batched["step_results"][0]["replication_index"]
    assert int(batched["replication_index"]) > int(executed["replication_index"])
    # A client may send it back in a request (sqld's clients do); it is accepted.
    body = {"requests": [{"type": "execute", "stmt": {"sql": "SELECT 1", "replication_index": "7"}}]}
    response = httpx.post(primary.url + "/v2/pipeline", json=body, headers=PRIMARY_AUTH, timeout=10)
    assert response.json()["results"][0]["type"] == "ok", response.text


def test_a_node_write_answers_with_its_commit_position_and_is_readable_at_once(primary: Proc, node: Proc) -> None:
    for i in range(3):
        response = execute(node, ("INSERT INTO kv(k, v) VALUES (?, ?)", [100 + i, f"n{i}"]))
        assert response.status_code == 200, response.text
        written = response.json()
        commit = primary_position(primary)
        # The response names the write's own commit on the primary, not a later replica position.
        assert (written["generation"], written["frame"]) == (commit.generation, commit.frame)
        assert rows(node, "SELECT v FROM kv WHERE k = ?", [100 + i]) == [[f"n{i}"]]
    # The same through the node's Hrana: an autocommit write and a transaction.
    with HranaClient(node.url, NODE_TOKEN) as client:
        client.execute("INSERT INTO kv(k, v) VALUES (110, 'h1')")
        assert rows(node, "SELECT v FROM kv WHERE k = 110") == [["h1"]]
        with client.stream() as stream:
            stream.execute("BEGIN")
            stream.execute("INSERT INTO kv(k, v) VALUES (111, 'h2')")
            stream.execute("COMMIT")
        assert rows(node, "SELECT v FROM kv WHERE k = 111") == [["h2"]]


def primary_commits(primary: Proc) -> int:
    metrics = httpx.get(primary.url + "/metrics", headers=PRIMARY_AUTH, timeout=10).text
    (line,) = (line for line in metrics.splitlines() if line.startswith("edgenode_primary_commits "))
    return int(float(line.split()[1]))


def test_concurrent_writes_share_primary_commits_and_a_failing_write_fails_alone(primary: Proc, node: Proc) -> None:
    primary_write(primary, "INSERT INTO kv(k, v) VALUES (200, 'taken')")
    before = primary_commits(primary)
    rest_writes: list[list[tuple[str, list[object]]]] = [
        [("INSERT INTO kv(k, v) VALUES (?, ?)", [300 + i, f"g{i}"])] for i in range(24)
    ]
    # Two statements, the second refused: the write's first statement must not stay either.
    rest_writes[5] = [("INSERT INTO kv(k, v) VALUES (305, 'g5')", []), ("INSERT INTO kv(v) VALUES ('taken')", [])]
    # Two statements that both succeed: both land.
    rest_writes[9] = [("INSERT INTO kv(k, v) VALUES (309, 'g9')", []), ("UPDATE kv SET v = 'g9b' WHERE k = 309", [])]
    # A statement that ends the whole transaction when it fails: nothing else may go with it.
    rest_writes[13] = [("INSERT OR ROLLBACK INTO kv(v) VALUES ('taken')", [])]
    hrana_writes = [("INSERT INTO kv(k, v) VALUES (?, ?)", [400 + i, f"hr{i}"]) for i in range(8)]
    hrana_writes[3] = ("INSERT INTO kv(v) VALUES (?)", ["taken"])

    def rest(statements: list[tuple[str, list[object]]]) -> httpx.Response:
        return execute(node, *statements)

    def hrana(statement: tuple[str, list[object]]) -> object:
        with HranaClient(node.url, NODE_TOKEN) as client:
            try:
                return client.execute(*statement)
            except HranaError as exc:
                return exc

    with ThreadPoolExecutor(len(rest_writes) + len(hrana_writes)) as pool:
        rest_futures = [pool.submit(rest, statements) for statements in rest_writes]
        hrana_futures = [pool.submit(hrana, statement) for statement in hrana_writes]
        answers = [f.result() for f in rest_futures]
        hrana_answers = [f.result() for f in hrana_futures]

    for i, response in enumerate(answers):
        if i in (5, 13):
            error = response.json()["error"]
            assert response.status_code == 400 and "UNIQUE constraint failed" in error["message"], response.text
            assert error["message"].startswith("statements[1]" if i == 5 else "statements[0]")
        else:
            assert response.status_code == 200, response.text
    for i, answer in enumerate(hrana_answers):
        if i == 3:
            assert isinstance(answer, HranaError) and answer.code == "SQLITE_CONSTRAINT", answer
        else:
            assert not isinstance(answer, HranaError), answer
    # Every accepted write is on the primary and (read-your-writes) on the node; the refused ones left nothing.
    expected = {300 + i: f"g{i}" for i in range(24) if i not in (5, 13)} | {309: "g9b"}
    expected |= {400 + i: f"hr{i}" for i in range(8) if i != 3}
    on_primary = dict(primary_rows(primary, "SELECT k, v FROM kv WHERE k >= 300"))
    assert on_primary == expected
    assert dict(map(tuple, rows(node, "SELECT k, v FROM kv WHERE k >= 300"))) == expected  # type: ignore[arg-type]
    # Fewer commits (fsyncs) on the primary than writes: they were grouped.
    writes = len(expected)
    commits = primary_commits(primary) - before
    assert commits < writes, f"{commits} primary commits for {writes} writes"


def test_a_group_is_one_primary_commit_and_a_write_that_ends_the_transaction_is_resent_alone(primary: Proc) -> None:
    primary_write(primary, "INSERT INTO kv(k, v) VALUES (500, 'taken5')")
    with HranaClient(primary.url, TOKEN) as client:
        combiner = Combiner(client)
        try:
            before = primary_commits(primary)
            # Holding the queue's lock while submitting puts all the writes into one group.
            with combiner._cond:
                futures = [
                    combiner.submit([("INSERT INTO kv(k, v) VALUES (501, 'a')", [])]),
                    combiner.submit(
                        [("INSERT INTO kv(k, v) VALUES (502, 'b')", []), ("INSERT INTO kv(v) VALUES ('taken5')", [])]
                    ),
                    combiner.submit([("INSERT INTO kv(k, v) VALUES (503, ?)", ["c"])], want_rows=True),
                ]
            first, refused, third = (future.exception(timeout=30) or future.result() for future in futures)
            assert primary_commits(primary) - before == 1 and combiner.groups == 1
            assert isinstance(refused, BatchStepError) and refused.index == 1 and "UNIQUE" in refused.message
            assert first.commit_index == third.commit_index and position_of_index(first.commit_index) is not None
            assert [r.affected_row_count for r in first.results] == [1]
            # INSERT OR ROLLBACK ends the group's transaction: nothing of it commits, so each write is
            # sent again alone and only the culprit fails.
            with combiner._cond:
                futures = [
                    combiner.submit([("INSERT INTO kv(k, v) VALUES (504, 'd')", [])]),
                    combiner.submit([("INSERT OR ROLLBACK INTO kv(v) VALUES ('taken5')", [])]),
                    combiner.submit([("INSERT INTO kv(k, v) VALUES (505, 'e')", [])]),
                ]
            outcomes = [future.exception(timeout=30) for future in futures]
            assert outcomes[0] is None and outcomes[2] is None
            assert isinstance(outcomes[1], BatchStepError) and "UNIQUE" in outcomes[1].message
            assert combiner.groups == 1 + 1 + 3
        finally:
            combiner.close()
    assert primary_rows(primary, "SELECT k, v FROM kv WHERE k > 500 ORDER BY k") == [
        (501, "a"),
        (503, "c"),
        (504, "d"),
        (505, "e"),
    ]
