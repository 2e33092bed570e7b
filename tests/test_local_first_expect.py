"""`expect_rows` on a REST write statement (issue #20 deliverable 4: "a row changed underneath it"), with a
real primary and real nodes: the statement must change exactly that many rows where the write commits.
Forward mode: the primary refuses the write (409, nothing applied). Local-first: checked locally (409 at
once) and again on the primary, where a mismatch makes the queued write a conflict whose local effect
disappears when the node converges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.local_first_support import LF, conflicts, converge, outbox
from tests.procs import Proc
from tests.test_replica_support import (
    AUTH,
    TOKEN,
    eventually,
    primary_rows,
    primary_write,
    rows,
    start_node,
    start_primary,
    wait_ready,
)

SCHEMA = ("CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)", "INSERT INTO kv VALUES ('a', 1), ('b', 1)")


def post(node: Proc, *statements: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    return httpx.post(node.url + "/api/v1/execute", json={"statements": list(statements)}, headers=headers, timeout=10)


def test_a_forwarded_write_whose_statement_changes_other_than_expect_rows_is_refused_whole(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    primary_write(primary, *SCHEMA)
    node = start_node(tmp_path, primary)
    try:
        wait_ready(node)
        for key in (None, "expect-1"):  # the combiner's batch, and a keyed write's own request
            done = post(
                node,
                {"sql": "UPDATE kv SET v = v + 1 WHERE k = 'a'", "expect_rows": 1},
                {"sql": "INSERT INTO kv VALUES (?, 0)", "params": [f"new-{key}"], "expect_rows": 1},
                key=key,
            )
            assert done.status_code == 200, done.text
            assert [r["rows_affected"] for r in done.json()["results"]] == [1, 1]
            first = done.json()["results"]
            stale = post(
                node,
                {"sql": "INSERT INTO kv VALUES (?, 0)", "params": [f"gone-{key}"]},
                {"sql": "UPDATE kv SET v = 9 WHERE k = 'a' AND v = 1", "expect_rows": 1},
                key=f"{key}-stale" if key else None,
            )
            assert stale.status_code == 409, stale.text
            error = stale.json()["error"]
            assert error["code"] == "expect_rows_mismatch" and error["message"].startswith("statements[1]: ")
            assert primary_rows(primary, f"SELECT count(*) FROM kv WHERE k = 'gone-{key}'") == [(0,)]
        assert primary_rows(primary, "SELECT v FROM kv WHERE k = 'a'") == [(3,)]
        # The keyed write's retry is answered from its record, with the primary's counts.
        again = post(
            node,
            {"sql": "UPDATE kv SET v = v + 1 WHERE k = 'a'", "expect_rows": 1},
            {"sql": "INSERT INTO kv VALUES (?, 0)", "params": ["new-expect-1"], "expect_rows": 1},
            key="expect-1",
        )
        assert again.headers["Idempotent-Replayed"] == "true"
        # The record kept the guarded INSERT's rowid too (the guard leaves last_insert_rowid() alone).
        assert again.json()["results"] == first and first[1]["last_insert_rowid"] is not None
        for bad, field in (("one", "expect_rows"), (-1, "expect_rows")):
            refused = post(node, {"sql": "UPDATE kv SET v = 0", "expect_rows": bad})
            assert refused.status_code == 422 and refused.json()["error"]["field"].endswith(field), refused.text
    finally:
        node.stop()
        primary.stop()


def test_a_local_first_write_whose_row_changed_on_the_primary_becomes_a_conflict_and_its_effect_vanishes(
    tmp_path: Path,
) -> None:
    primary = start_primary(tmp_path)
    primary_write(primary, *SCHEMA)
    node = start_node(tmp_path, primary, *LF)
    try:
        wait_ready(node)
        # Checked here first: a mismatch on the node is refused at once and queues nothing.
        local = post(node, {"sql": "UPDATE kv SET v = 5 WHERE k = 'zz'", "expect_rows": 1})
        assert local.status_code == 409 and local.json()["error"]["code"] == "expect_rows_mismatch", local.text
        applied = post(node, {"sql": "UPDATE kv SET v = 2 WHERE k = 'b' AND v = 1", "expect_rows": 1})
        assert applied.status_code == 200 and applied.json()["results"] == [
            {"rows_affected": 1, "last_insert_rowid": None}
        ]
        eventually(lambda: primary_rows(primary, "SELECT v FROM kv WHERE k = 'b'") == [(2,)])
        assert outbox(node)["pending"] == 0 and outbox(node)["failed"] == 0
        entry = httpx.get(f"{node.url}/api/v1/outbox/{applied.json()['write_id']}", headers=AUTH).json()
        # The primary's own counts (from its reply, or from its record when a pull settled the write first:
        # then an UPDATE's rowid reads 0, not null): the check's view, trigger and guard change nothing.
        assert [affected for affected, _ in entry["primary_results"]] == [0, 0, 1, 0]
        # Keep the node from pushing (a wrong token pauses it) while the row changes on the primary.
        node.stop()
        node.args[node.args.index("--primary-token") + 1] = "wrong"
        node.start()
        stale = post(
            node,
            {"sql": "UPDATE kv SET v = 10 WHERE k = 'a' AND v = 1", "expect_rows": 1},
            {"sql": "INSERT INTO kv VALUES ('with-stale', 0)"},
        )
        assert stale.status_code == 200, stale.text
        assert rows(node, "SELECT v FROM kv WHERE k = 'a'") == [[10]]  # the local view holds it meanwhile
        eventually(lambda: outbox(node)["paused"] is not None, timeout=20)
        primary_write(primary, "UPDATE kv SET v = 7 WHERE k = 'a'")
        node.stop()
        node.args[node.args.index("--primary-token") + 1] = TOKEN
        node.start()
        listed = eventually(lambda: conflicts(node), timeout=30)
        assert [c["write_id"] for c in listed] == [stale.json()["write_id"]]
        assert "expect_rows" in listed[0]["error"]["message"]
        converge(primary, node)
        assert rows(node, "SELECT v FROM kv WHERE k = 'a'") == [[7]]
        assert rows(node, "SELECT count(*) FROM kv WHERE k = 'with-stale'") == [[0]]
        assert primary_rows(primary, "SELECT count(*) FROM kv WHERE k = 'with-stale'") == [(0,)]
    finally:
        node.stop()
        primary.stop()


def test_a_checked_write_that_creates_a_table_is_analysed_with_the_check_and_the_new_table() -> None:
    from edgenode.analysis import StatementAnalyzer
    from edgenode.errors import SQLError
    from edgenode.expect import MESSAGE, Expanded, ExpectRowsMismatch
    from edgenode.statements import prepare_writes

    analyzer = StatementAnalyzer(lambda: ["CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER)"])
    expanded = Expanded(
        [("UPDATE kv SET v = 1", None), ("CREATE TABLE made (a)", None), ("INSERT INTO made VALUES (1)", None)],
        [1, None, 1],
    )
    prepared = prepare_writes(analyzer, expanded.statements)  # the fork for CREATE TABLE keeps the check's view
    assert len(prepared) == 7 and expanded.positions == [2, 4, 5]
    assert expanded.results(list("vtUgCIg")) == ["U", "C", "I"]
    mismatch = expanded.error(SQLError(f"statements[6]: {MESSAGE}", index=6))
    assert isinstance(mismatch, ExpectRowsMismatch) and mismatch.status == 409 and mismatch.index == 2
    other = expanded.error(SQLError("statements[5]: UNIQUE constraint failed: made.a", index=5))
    assert str(other) == "statements[2]: UNIQUE constraint failed: made.a" and other.index == 2
