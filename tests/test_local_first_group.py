"""The local-first push batch (`idempotency.group_steps`) against a real `edgenode primary`: several
queued writes in one transaction, each atomic on its own, each decided exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgenode.errors import DatabaseError
from edgenode.hrana.client import HranaClient
from edgenode.idempotency import PURGE, GroupWrite, fingerprint, lf_key, parse_key, push_group
from tests.procs import Proc
from tests.test_replica_support import TOKEN, primary_rows, primary_write, start_primary


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[Proc]:
    proc = start_primary(tmp_path)
    primary_write(proc, "CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT UNIQUE)", "INSERT INTO kv (v) VALUES ('taken')")
    try:
        yield proc
    finally:
        proc.stop()


def write(seq: int, *statements: tuple[str, list]) -> GroupWrite:
    return GroupWrite(seq, list(statements), fingerprint(list(statements)))


def insert(v: str) -> tuple[str, list]:
    return ("INSERT INTO kv (v) VALUES (?)", [v])


def test_a_refused_write_is_rolled_back_alone_and_a_resent_group_applies_nothing_twice(primary: Proc) -> None:
    client = HranaClient(primary.url, TOKEN, timeout=5)
    group = [
        write(1, insert("a")),
        write(2, insert("b"), insert("taken")),
        write(3, insert("c"), ("UPDATE kv SET v = v WHERE 0", [])),
    ]
    first = push_group(client, "n1", group)
    assert [d.outcome for d in first] == ["applied", "rejected", "applied"]
    assert first[0].results == [(1, 2)] and first[2].results == [(1, 3), (0, None)]
    assert "UNIQUE" in first[1].error["message"] and first[1].statement == 1
    assert not any(d.earlier for d in first)
    # A push whose reply was lost is sent again: every write is found decided, nothing runs twice.
    again = push_group(client, "n1", group)
    assert [(d.outcome, d.earlier) for d in again] == [("applied", True), ("rejected", True), ("applied", True)]
    assert again[0].results == first[0].results and again[2].results == first[2].results
    assert primary_rows(primary, "SELECT v FROM kv ORDER BY k") == [("taken",), ("a",), ("c",)]
    assert primary_rows(primary, "SELECT node_id, seq FROM _edgenode_writers") == [("n1", 3)]
    # The node confirms what it recorded: the next push forgets those keys (and only those).
    push_group(client, "n1", [write(4, insert("d"))], confirmed=3)
    keys = primary_rows(primary, "SELECT key, outcome FROM _edgenode_idempotency ORDER BY key")
    assert [k for k, _ in keys] == [lf_key("n1", 4)]
    assert primary_rows(primary, "SELECT seq FROM _edgenode_writers") == [(4,)]
    client.close()


def test_a_statement_that_ends_the_transaction_is_refused_alone_and_the_others_stay_undecided(primary: Proc) -> None:
    client = HranaClient(primary.url, TOKEN, timeout=5)
    culprit = write(2, ("INSERT OR ROLLBACK INTO kv (v) VALUES ('taken')", []))
    decisions = push_group(client, "n2", [write(1, insert("x")), culprit, write(3, insert("y"))])
    assert [d.outcome for d in decisions] == ["undecided", "rejected", "undecided"]
    assert primary_rows(primary, "SELECT count(*) FROM kv") == [(1,)]
    again = push_group(client, "n2", [write(1, insert("x")), culprit, write(3, insert("y"))])
    assert [(d.outcome, d.earlier) for d in again] == [("applied", False), ("rejected", True), ("applied", False)]
    assert primary_rows(primary, "SELECT v FROM kv ORDER BY k") == [("taken",), ("x",), ("y",)]
    assert primary_rows(primary, "SELECT seq FROM _edgenode_writers WHERE node_id = 'n2'") == [(3,)]
    client.close()


def test_local_first_keys_outlive_the_retention_and_clients_cannot_use_them(primary: Proc) -> None:
    client = HranaClient(primary.url, TOKEN, timeout=5)
    push_group(client, "n3", [write(1, insert("p"))])
    primary_write(primary, (PURGE, [1e12]))  # everything is older than that
    assert primary_rows(primary, "SELECT count(*) FROM _edgenode_idempotency") == [(1,)]
    with pytest.raises(DatabaseError, match="reserved"):
        parse_key("lf/n3/00000000000000000001")
    client.close()
