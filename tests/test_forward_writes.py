"""Forward-mode writes on a replica node against a real `edgenode primary`: the primary reports each
commit's position (Hrana `replication_index`), and the node's read-your-writes waits for that position."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgenode.hrana.client import HranaClient
from edgenode.results import WritePosition, position_of_index
from tests.procs import Proc
from tests.test_replica_support import (
    NODE_TOKEN,
    PRIMARY_AUTH,
    TOKEN,
    execute,
    primary_write,
    rows,
    start_node,
    start_primary,
    wait_ready,
)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("forward-writes")


@pytest.fixture(scope="module")
def primary(shared: Path) -> Iterator[Proc]:
    proc = start_primary(shared)
    primary_write(proc, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT UNIQUE)")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def node(shared: Path, primary: Proc) -> Iterator[Proc]:
    proc = start_node(shared, primary)
    wait_ready(proc)
    yield proc
    proc.stop()


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
