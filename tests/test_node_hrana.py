"""A standalone node speaks Hrana: the real libSQL clients against `edgenode serve` (a real process),
plus the protocol details they rely on, checked over raw HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgenode.hrana.backend import HranaError
from edgenode.hrana.client import HranaClient
from tests.conftest import RO, RW
from tests.procs import Proc, start
from tests.test_node_hrana_support import (
    check_js_client,
    exercise_libsql_client_v1,
    exercise_libsql_remote,
    needs_node,
    run_js_client,
)


def pipeline(node: Proc, requests: list[dict[str, Any]], token: str | None = RW, baton: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(
        node.url + "/v2/pipeline", json={"baton": baton, "requests": requests}, headers=headers, timeout=30
    )
    return response


def execute(sql: str, *args: dict[str, Any], want_rows: bool = True) -> dict[str, Any]:
    return {"type": "execute", "stmt": {"sql": sql, "args": list(args), "want_rows": want_rows}}


def ok(response: httpx.Response) -> list[Any]:
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    for result in results:
        assert result["type"] == "ok", result
    return [result["response"].get("result") for result in results]


@needs_node
def test_npm_libsql_client_uses_a_standalone_node_like_turso(node: Proc, tmp_path: Path) -> None:
    check_js_client(run_js_client(node.url, RW, RO, "js_standalone", tmp_path))


def test_libsql_remote_mode_writes_reads_rolls_back_and_surfaces_errors(node: Proc) -> None:
    exercise_libsql_remote(node.url, RW, "py_remote")


def test_libsql_client_v1_executes_and_batches(node: Proc) -> None:
    exercise_libsql_client_v1(node.url, RW, "py_v1")


def test_no_token_is_401_and_a_read_token_cannot_write(node: Proc) -> None:
    response = pipeline(node, [execute("select 1")], token=None)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == "UNAUTHORIZED"
    assert pipeline(node, [execute("select 1")], token="wrong").status_code == 401
    ok(pipeline(node, [execute("create table ro_t(a)")]))
    response = pipeline(
        node,
        [
            execute("select count(*) from ro_t"),
            execute("insert into ro_t values (1)"),
            execute("create table ro_u(a)"),
            execute("BEGIN IMMEDIATE"),
            execute("delete from ro_t"),
            execute("ROLLBACK"),
        ],
        token=RO,
    )
    results = response.json()["results"]
    assert results[0]["type"] == "ok"
    for index in (1, 2, 4):
        assert results[index]["error"]["code"] == "SQLITE_READONLY", results[index]
    # A read token's BEGIN opens a read transaction (on a reader), which ROLLBACK ends.
    assert results[3]["type"] == "ok" and results[5]["type"] == "ok"
    v1 = httpx.post(
        node.url + "/v1/execute",
        json={"stmt": {"sql": "insert into ro_t values (2)"}},
        headers={"Authorization": f"Bearer {RO}"},
    )
    assert v1.status_code == 400 and v1.json()["code"] == "SQLITE_READONLY"


def test_statement_results_follow_hrana_rules(node: Proc) -> None:
    big = {"type": "integer", "value": str(2**63 - 1)}
    small = {"type": "integer", "value": str(-(2**63))}
    results = ok(
        pipeline(
            node,
            [
                execute("create table rules(id integer primary key, n integer, b blob)"),
                execute("insert into rules(n, b) values (?, ?)", big, {"type": "blob", "base64": "AAH/"}),
                execute("insert into rules(n) values (?)", small),
                execute("update rules set n = n where id > 0"),
                execute("select id, n, b from rules order by id"),
                execute("select changes()"),
                execute("insert into rules(n) values (1)", want_rows=False),
            ],
        )
    )
    assert results[0]["affected_row_count"] == 0 and results[0]["last_insert_rowid"] is None
    assert results[1]["affected_row_count"] == 1 and results[1]["last_insert_rowid"] == "1"
    assert results[3]["affected_row_count"] == 2 and results[3]["last_insert_rowid"] is None
    rows = results[4]["rows"]
    assert rows[0] == [{"type": "integer", "value": "1"}, big, {"type": "blob", "base64": "AAH/"}]
    assert rows[1][1] == small
    assert results[4]["cols"] == [
        {"name": "id", "decltype": "INTEGER"},
        {"name": "n", "decltype": "INTEGER"},
        {"name": "b", "decltype": "BLOB"},
    ]
    # A SELECT is not DML: its own count is 0 whatever changes() carries over.
    assert results[5]["affected_row_count"] == 0
    assert results[6]["rows"] == [] and results[6]["last_insert_rowid"] == "3"


def test_several_statements_in_one_execute_are_refused_and_sequence_runs_them_all(node: Proc) -> None:
    response = pipeline(
        node,
        [
            execute("create table seq(a); insert into seq values (1)"),
            {"type": "sequence", "sql": "create table seq(a); insert into seq values (1); insert into seq values (2);"},
            execute("select count(*) from seq; -- a trailing comment is fine"),
        ],
    )
    results = response.json()["results"]
    assert results[0]["error"]["code"] == "SQL_MANY_STATEMENTS"
    assert results[1]["type"] == "ok"
    assert results[2]["response"]["result"]["rows"] == [[{"type": "integer", "value": "2"}]]


def test_describe_reports_prefixed_params_declared_types_and_flags(node: Proc) -> None:
    ok(pipeline(node, [execute("create table descr(id integer primary key, name text)")]))
    results = ok(
        pipeline(
            node,
            [
                {"type": "describe", "sql": "select id, name from descr where id = :id and name = @name or ? = $x"},
                {"type": "describe", "sql": "insert into descr(name) values (?)"},
                {"type": "describe", "sql": "explain select 1"},
                {"type": "describe", "sql": "BEGIN TRANSACTION READONLY"},
            ],
        )
    )
    assert [p["name"] for p in results[0]["params"]] == [":id", "@name", None, "$x"]
    assert results[0]["cols"] == [{"name": "id", "decltype": "INTEGER"}, {"name": "name", "decltype": "TEXT"}]
    assert results[0]["is_readonly"] is True and results[0]["is_explain"] is False
    assert results[1]["is_readonly"] is False and results[1]["cols"] == []
    assert results[2]["is_explain"] is True
    assert results[3]["is_readonly"] is True


def test_a_transaction_sees_its_own_ddl_and_others_see_it_after_commit(node: Proc) -> None:
    first = pipeline(
        node,
        [
            execute("BEGIN"),
            execute("create table txddl(a integer)"),
            execute("insert into txddl values (?)", {"type": "integer", "value": "7"}),
            {"type": "describe", "sql": "select a from txddl"},
            {"type": "get_autocommit"},
        ],
    )
    results = ok(first)
    assert results[-1] is None  # get_autocommit has no `result`
    assert first.json()["results"][-1]["response"]["is_autocommit"] is False
    baton = first.json()["baton"]
    committed = ok(pipeline(node, [execute("COMMIT"), {"type": "get_autocommit"}, {"type": "close"}], baton=baton))
    assert committed[0]["affected_row_count"] == 0
    results = ok(pipeline(node, [execute("select a from txddl")]))
    assert results[0]["rows"] == [[{"type": "integer", "value": "7"}]]


def test_a_write_transaction_holds_the_writer_and_is_rolled_back_when_it_expires(tmp_path: Path) -> None:
    proc = start(
        ["serve", "--data-dir", str(tmp_path / "d"), "--auth-token", RW, "--transaction-timeout", "0.5"],
        tmp_path,
        "short",
        ready_path="/ready",
    )
    try:
        ok(pipeline(proc, [execute("create table held(a)")]))
        begun = pipeline(proc, [execute("BEGIN IMMEDIATE"), execute("insert into held values (1)")])
        ok(begun)
        # Another stream's write waits for the writer; the holder expires and is rolled back meanwhile.
        started = time.monotonic()
        results = ok(pipeline(proc, [execute("insert into held values (2)")]))
        assert results[0]["affected_row_count"] == 1
        assert time.monotonic() - started < 5
        late = pipeline(proc, [execute("COMMIT")], baton=begun.json()["baton"])
        assert late.status_code == 400 and late.json()["code"] == "STREAM_EXPIRED"
        rows = ok(pipeline(proc, [execute("select a from held")]))[0]["rows"]
        assert rows == [[{"type": "integer", "value": "2"}]]
        # Autocommit reads never wait for the writer.
        begun = pipeline(proc, [execute("BEGIN IMMEDIATE")])
        started = time.monotonic()
        ok(pipeline(proc, [execute("select count(*) from held")]))
        assert time.monotonic() - started < 0.4
        ok(pipeline(proc, [execute("ROLLBACK"), {"type": "close"}], baton=begun.json()["baton"]))
    finally:
        proc.stop()


def test_a_runaway_read_is_interrupted_at_the_query_timeout_and_its_reader_replaced(tmp_path: Path) -> None:
    proc = start(
        ["serve", "--data-dir", str(tmp_path / "d"), "--auth-token", RW, "--query-timeout-ms", "300"],
        tmp_path,
        "timeout",
        ready_path="/ready",
    )
    runaway = "with recursive n(i) as (select 1 union all select i + 1 from n) select count(*) from n"
    try:
        for _ in range(3):  # more than the pool's readers: replaced ones come back
            started = time.monotonic()
            result = pipeline(proc, [execute(runaway)]).json()["results"][0]
            assert result["error"]["code"] == "SQLITE_INTERRUPT", result
            assert time.monotonic() - started < 3
        deadline = time.monotonic() + 10
        while True:
            response = pipeline(proc, [execute("select 1")]).json()["results"][0]
            if response["type"] == "ok" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert response["type"] == "ok", response
    finally:
        proc.stop()


def test_concurrent_streams_interleave_transactions_without_losing_writes(node: Proc) -> None:
    ok(pipeline(node, [execute("create table counter(n integer)"), execute("insert into counter values (0)")]))
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with HranaClient(node.url, RW, timeout=30) as client:
                for _ in range(10):
                    with client.stream() as stream:
                        stream.execute("BEGIN IMMEDIATE")
                        n = stream.execute("select n from counter").rows[0][0]
                        stream.execute("update counter set n = ?", [n + 1])
                        stream.execute("COMMIT")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert ok(pipeline(node, [execute("select n from counter")]))[0]["rows"] == [[{"type": "integer", "value": "40"}]]


def test_hrana_requests_and_errors_are_counted_in_the_node_metrics(node: Proc) -> None:
    pipeline(node, [execute("select * from metrics_nowhere")])
    text = httpx.get(node.url + "/metrics", headers={"Authorization": f"Bearer {RW}"}).text
    assert 'edgenode_hrana_requests_total{endpoint="v2/pipeline"}' in text
    assert 'edgenode_hrana_errors_total{code="SQLITE_UNKNOWN"}' in text


def test_a_baton_of_another_token_or_a_stale_one_is_refused(node: Proc) -> None:
    first = pipeline(node, [execute("select 1")])
    baton = first.json()["baton"]
    assert pipeline(node, [execute("select 1")], token=RO, baton=baton).json()["code"] == "BATON_INVALID"
    ok(pipeline(node, [execute("select 1")], baton=baton))
    assert pipeline(node, [execute("select 1")], baton=baton).json()["code"] == "BATON_REUSED"


@pytest.fixture
def client(node: Proc) -> Iterator[HranaClient]:
    with HranaClient(node.url, RW, timeout=30) as c:
        yield c


def test_read_transactions_refuse_writes_and_release_their_reader(client: HranaClient) -> None:
    client.execute("create table rtx(a)")
    # More read transactions than readers, one after the other: each gives its reader back.
    for _ in range(5):
        with client.stream() as stream:
            stream.execute("BEGIN TRANSACTION READONLY")
            assert not stream.is_autocommit()
            with pytest.raises(HranaError) as exc:
                stream.execute("insert into rtx values (1)")
            assert exc.value.code == "SQLITE_READONLY"
            stream.execute("select count(*) from rtx")
            stream.execute("COMMIT")
            assert stream.is_autocommit()
