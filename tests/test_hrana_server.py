"""The Hrana server over a real uvicorn, against a small apsw backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import apsw
import httpx
import msgspec
import pytest

from edgenode.auth import Access
from edgenode.hrana.backend import Backend, DescribeResult, HranaError, Session, StmtResult, Value
from edgenode.hrana.protocol import I64_MAX, I64_MIN
from edgenode.hrana.server import HranaServer
from tests.test_hrana_support import (
    READ_TOKEN,
    ApswBackend,
    Served,
    authenticate,
    execute,
    integer,
    serve,
    stmt,
    text,
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path)


def error_code(body: dict, index: int) -> str:
    result = body["results"][index]
    assert result["type"] == "error", result
    return result["error"]["code"]


def response_of(body: dict, index: int) -> dict:
    result = body["results"][index]
    assert result["type"] == "ok", result
    return result["response"]


def rows(served: Served, sql: str) -> list[list[object]]:
    conn = apsw.Connection(served.backend.path)
    try:
        return [list(row) for row in conn.execute(sql)]
    finally:
        conn.close()


# --- pipeline basics ----------------------------------------------------------------------------


def test_pipeline_executes_and_close_ends_the_stream(served: Served) -> None:
    body = served.ok([execute("select 1 as one, 'x' as two"), {"type": "close"}])
    assert body["baton"] is None
    assert body["base_url"] is None
    result = response_of(body, 0)["result"]
    assert result["cols"] == [{"name": "one", "decltype": None}, {"name": "two", "decltype": None}]
    assert result["rows"] == [[integer(1), text("x")]]
    assert body["results"][1] == {"type": "ok", "response": {"type": "close"}}
    assert served.hrana.open_streams == 0
    assert served.backend.log == ["open rw", "close"]


def test_stream_keeps_its_transaction_across_requests(served: Served) -> None:
    first = served.ok([execute("create table t(a)"), execute("begin"), execute("insert into t values (1)")], version=3)
    assert first["baton"]
    assert rows(served, "select count(*) from t") == [[0]]
    second = served.ok([{"type": "get_autocommit"}, execute("commit"), {"type": "get_autocommit"}], first["baton"], 3)
    assert response_of(second, 0) == {"type": "get_autocommit", "is_autocommit": False}
    assert response_of(second, 2) == {"type": "get_autocommit", "is_autocommit": True}
    assert rows(served, "select a from t") == [[1]]


def test_failing_request_does_not_stop_the_rest_and_codes_are_strings(served: Served) -> None:
    body = served.ok(
        [
            execute("selec 1"),
            execute("select * from nowhere"),
            execute("select 1; select 2"),
            {
                "type": "execute",
                "stmt": {"sql": "select ?", "args": [integer(1)], "named_args": [{"name": "a", "value": integer(2)}]},
            },
            execute("select 42"),
        ]
    )
    assert error_code(body, 0) == "SQL_PARSE_ERROR"
    assert error_code(body, 1) == "SQLITE_UNKNOWN"
    assert "no such table" in body["results"][1]["error"]["message"]
    assert error_code(body, 2) == "SQL_MANY_STATEMENTS"
    assert error_code(body, 3) == "ARGS_BOTH_POSITIONAL_AND_NAMED"
    assert response_of(body, 4)["result"]["rows"] == [[integer(42)]]


def test_constraint_violation_reports_sqlite_constraint(served: Served) -> None:
    body = served.ok(
        [
            execute("create table u(a primary key)"),
            execute("insert into u values (1)"),
            execute("insert into u values (1)"),
        ]
    )
    assert error_code(body, 2) == "SQLITE_CONSTRAINT"


def test_named_args_match_with_or_without_prefix(served: Served) -> None:
    named = [
        {"name": ":a", "value": integer(1)},
        {"name": "b", "value": text("two")},
        {"name": "$c", "value": {"type": "null"}},
    ]
    body = served.ok([{"type": "execute", "stmt": {"sql": "select :a, @b, $c", "named_args": named}}])
    assert response_of(body, 0)["result"]["rows"] == [[integer(1), text("two"), {"type": "null"}]]


def test_affected_rows_and_last_insert_rowid_only_for_dml(served: Served) -> None:
    body = served.ok(
        [
            execute("create table t(id integer primary key, a)"),
            execute("insert into t(a) values (1), (2)"),
            execute("select * from t"),
            execute("update t set a = a + 1"),
        ]
    )
    create, insert, select, update = (response_of(body, i)["result"] for i in range(4))
    assert (create["affected_row_count"], create["last_insert_rowid"]) == (0, None)
    assert (insert["affected_row_count"], insert["last_insert_rowid"]) == (2, "2")
    assert (select["affected_row_count"], select["last_insert_rowid"]) == (0, None)
    assert (update["affected_row_count"], update["last_insert_rowid"]) == (2, None)


def test_want_rows_false_returns_no_rows(served: Served) -> None:
    body = served.ok([execute("select 1", want_rows=False)])
    result = response_of(body, 0)["result"]
    assert result["rows"] == []
    assert result["cols"] == [{"name": "1", "decltype": None}]


def test_sequence_runs_several_statements_and_stops_at_the_first_error(served: Served) -> None:
    body = served.ok(
        [
            {"type": "sequence", "sql": "create table s(a); insert into s values (1); insert into s values (2);"},
            {
                "type": "sequence",
                "sql": "insert into s values (3); insert into nope values (1); insert into s values (4)",
            },
        ]
    )
    assert response_of(body, 0) == {"type": "sequence"}
    assert error_code(body, 1) == "SQLITE_UNKNOWN"
    assert rows(served, "select a from s order by a") == [[1], [2], [3]]


def test_describe_reports_params_cols_and_flags(served: Served) -> None:
    body = served.ok(
        [
            execute("create table d(id integer primary key, name text)"),
            {"type": "describe", "sql": "select id, name as n from d where id = :id and name = ?"},
            {"type": "describe", "sql": "insert into d(name) values (@name)"},
            {"type": "describe", "sql": "explain select 1"},
        ]
    )
    select = response_of(body, 1)["result"]
    assert select == {
        "params": [{"name": ":id"}, {"name": None}],
        "cols": [{"name": "id", "decltype": "INTEGER"}, {"name": "n", "decltype": "TEXT"}],
        "is_explain": False,
        "is_readonly": True,
    }
    insert = response_of(body, 2)["result"]
    assert insert["params"] == [{"name": "@name"}]
    assert insert["is_readonly"] is False
    assert response_of(body, 3)["result"]["is_explain"] is True


def test_store_sql_is_usable_everywhere_until_closed(served: Served) -> None:
    body = served.ok(
        [
            {"type": "store_sql", "sql_id": 1, "sql": "create table k(a)"},
            {"type": "store_sql", "sql_id": 2, "sql": "insert into k values (?)"},
            {"type": "store_sql", "sql_id": 3, "sql": "select count(*) from k"},
            {"type": "sequence", "sql_id": 1},
            {"type": "execute", "stmt": {"sql_id": 2, "args": [integer(7)]}},
            {
                "type": "batch",
                "batch": {"steps": [{"stmt": {"sql_id": 2, "args": [integer(8)]}}, {"stmt": {"sql_id": 3}}]},
            },
            {"type": "describe", "sql_id": 3},
            {"type": "store_sql", "sql_id": 3, "sql": "select 1"},
        ]
    )
    assert [r["type"] for r in body["results"][:7]] == ["ok"] * 7
    assert response_of(body, 5)["result"]["step_results"][1]["rows"] == [[integer(2)]]
    assert error_code(body, 7) == "SQL_STORE_EXISTS"
    # Stored SQL belongs to the stream and survives across its requests, until close_sql.
    later = served.ok(
        [
            {"type": "execute", "stmt": {"sql_id": 3}},
            {"type": "close_sql", "sql_id": 3},
            {"type": "execute", "stmt": {"sql_id": 3}},
        ],
        body["baton"],
    )
    assert response_of(later, 0)["result"]["rows"] == [[integer(2)]]
    assert response_of(later, 1) == {"type": "close_sql"}
    assert error_code(later, 2) == "SQL_NOT_FOUND"
    # ... and is not visible from another stream.
    other = served.ok([{"type": "execute", "stmt": {"sql_id": 2, "args": [integer(1)]}}])
    assert error_code(other, 0) == "SQL_NOT_FOUND"


def test_stmt_with_both_sql_and_sql_id_is_rejected_before_running_anything(served: Served) -> None:
    response = served.pipeline(
        [execute("create table never(a)"), {"type": "execute", "stmt": {"sql": "select 1", "sql_id": 1}}]
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert "sql_id" in response.json()["message"]
    assert rows(served, "select count(*) from sqlite_master where name = 'never'") == [[0]]


# --- batches ------------------------------------------------------------------------------------


def transaction_batch(*statements: str) -> dict:
    """The way the clients wrap a transaction in one batch."""
    steps = [{"stmt": stmt("BEGIN")}]
    for sql in statements:
        steps.append({"stmt": stmt(sql), "condition": {"type": "ok", "step": len(steps) - 1}})
    steps.append({"stmt": stmt("COMMIT"), "condition": {"type": "ok", "step": len(steps) - 1}})
    steps.append(
        {"stmt": stmt("ROLLBACK"), "condition": {"type": "not", "cond": {"type": "ok", "step": len(steps) - 1}}}
    )
    return {"type": "batch", "batch": {"steps": steps}}


def test_transaction_batch_commits_when_every_step_succeeds(served: Served) -> None:
    served.ok([execute("create table b(a unique)")])
    body = served.ok([transaction_batch("insert into b values (1)", "insert into b values (2)")])
    result = response_of(body, 0)["result"]
    assert result["step_errors"] == [None] * 5
    assert [r is None for r in result["step_results"]] == [False, False, False, False, True]
    assert rows(served, "select a from b") == [[1], [2]]


def test_transaction_batch_rolls_back_and_skips_after_a_failure(served: Served) -> None:
    served.ok([execute("create table b(a unique)")])
    body = served.ok(
        [transaction_batch("insert into b values (1)", "insert into b values (1)", "insert into b values (3)")]
    )
    result = response_of(body, 0)["result"]
    assert result["step_errors"][2]["code"] == "SQLITE_CONSTRAINT"
    # Skipped steps are null in both lists; a skipped step is "not ok", so ROLLBACK runs.
    assert result["step_results"][3] is None and result["step_errors"][3] is None
    assert result["step_results"][4] is None and result["step_errors"][4] is None
    assert result["step_results"][5] is not None
    assert rows(served, "select count(*) from b") == [[0]]


def test_batch_conditions_error_and_or_is_autocommit(served: Served) -> None:
    steps = [
        {"stmt": stmt("select nonsense_fn()")},
        {"stmt": stmt("select 'after error'"), "condition": {"type": "error", "step": 0}},
        {
            "stmt": stmt("select 'and'"),
            "condition": {"type": "and", "conds": [{"type": "ok", "step": 1}, {"type": "error", "step": 0}]},
        },
        {
            "stmt": stmt("select 'or'"),
            "condition": {"type": "or", "conds": [{"type": "ok", "step": 0}, {"type": "ok", "step": 2}]},
        },
        {"stmt": stmt("select 'skipped'"), "condition": {"type": "ok", "step": 0}},
        {"stmt": stmt("select 'error of skipped'"), "condition": {"type": "error", "step": 4}},
        {"stmt": stmt("select 'autocommit'"), "condition": {"type": "is_autocommit"}},
    ]
    body = served.ok([{"type": "batch", "batch": {"steps": steps}}], version=3)
    result = response_of(body, 0)["result"]
    ran = [r is not None or e is not None for r, e in zip(result["step_results"], result["step_errors"], strict=True)]
    assert ran == [True, True, True, True, False, False, True]


@pytest.mark.parametrize("step", [1, 2, 5])
def test_condition_on_a_step_that_is_not_earlier_rejects_the_whole_request(served: Served, step: int) -> None:
    steps = [
        {"stmt": stmt("create table never(a)")},
        {"stmt": stmt("select 1"), "condition": {"type": "not", "cond": {"type": "ok", "step": step}}},
    ]
    response = served.pipeline([execute("create table never2(a)"), {"type": "batch", "batch": {"steps": steps}}])
    assert response.status_code == 400
    assert response.json()["code"] == "PROTOCOL_ERROR"
    assert rows(served, "select count(*) from sqlite_master where name like 'never%'") == [[0]]


# --- batons -------------------------------------------------------------------------------------


def test_baton_is_single_use(served: Served) -> None:
    first = served.ok([execute("select 1")])
    second = served.ok([execute("select 2")], first["baton"])
    assert second["baton"] != first["baton"]
    reused = served.pipeline([execute("select 3")], first["baton"])
    assert reused.status_code == 400
    assert reused.headers["content-type"] == "application/json"
    assert reused.json()["code"] == "BATON_REUSED"
    # The stream itself is unharmed: its current baton still works.
    assert served.ok([execute("select 4")], second["baton"])["results"][0]["type"] == "ok"


@pytest.mark.parametrize(
    "mutate", [lambda b: b[:-2] + ("AA" if b[-2:] != "AA" else "BB"), lambda b: "x" + b, lambda _b: "not a baton!"]
)
def test_forged_baton_is_rejected(served: Served, mutate: Callable[[str], str]) -> None:
    baton = served.ok([execute("select 1")])["baton"]
    response = served.pipeline([execute("select 1")], mutate(baton))
    assert response.status_code == 400
    assert response.json()["code"] == "BATON_INVALID"


def test_baton_of_a_closed_stream_is_rejected(served: Served) -> None:
    baton = served.ok([execute("select 1")])["baton"]
    assert served.ok([{"type": "close"}], baton)["baton"] is None
    response = served.pipeline([execute("select 1")], baton)
    assert response.status_code == 400
    assert response.json()["code"] == "STREAM_CLOSED"


def test_baton_from_another_server_process_is_rejected(served: Served, tmp_path: Path) -> None:
    baton = served.ok([execute("select 1")])["baton"]
    (tmp_path / "other").mkdir()
    other = serve(tmp_path / "other")
    with_other = next(other)
    try:
        response = with_other.pipeline([execute("select 1")], baton)
        assert response.status_code == 400
        assert response.json()["code"] == "BATON_INVALID"
    finally:
        other.close()


# --- expiry -------------------------------------------------------------------------------------


@pytest.fixture
def served_idle(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path, idle_timeout=0.3, transaction_timeout=60.0)


@pytest.fixture
def served_txn(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path, idle_timeout=60.0, transaction_timeout=0.3)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_idle_stream_expires_and_rolls_back(served_idle: Served) -> None:
    served = served_idle
    served.ok([execute("create table e(a)")])  # its own stream, left open: it expires too
    baton = served.ok([execute("begin"), execute("insert into e values (1)")])["baton"]
    wait_for(lambda: served.hrana.open_streams == 0)
    response = served.pipeline([execute("commit")], baton)
    assert response.status_code == 400
    assert response.json()["code"] == "STREAM_EXPIRED"
    assert "inactivity" in response.json()["message"]
    assert rows(served, "select count(*) from e") == [[0]]
    assert "rollback" in served.backend.log


def test_stream_in_use_does_not_expire_while_requests_keep_coming(served_idle: Served) -> None:
    baton = served_idle.ok([execute("select 1")])["baton"]
    for _ in range(8):
        time.sleep(0.1)
        baton = served_idle.ok([execute("select 1")], baton)["baton"]
    assert served_idle.hrana.open_streams == 1


def test_transaction_held_too_long_is_rolled_back_and_releases_the_write_lock(served_txn: Served) -> None:
    served = served_txn
    served.ok([execute("create table w(a)"), {"type": "close"}])
    holder = served.ok([execute("begin immediate"), execute("insert into w values (1)")])["baton"]
    # While the transaction is held, another writer cannot get the lock (busy timeout is 200 ms).
    blocked = served.ok([execute("insert into w values (2)"), {"type": "close"}])
    assert error_code(blocked, 0) == "SQLITE_BUSY"
    wait_for(lambda: served.hrana.open_streams == 0)
    after = served.ok([execute("insert into w values (3)"), {"type": "close"}])
    assert response_of(after, 0)["result"]["affected_row_count"] == 1
    assert rows(served, "select a from w") == [[3]]
    response = served.pipeline([execute("commit")], holder)
    assert response.status_code == 400
    assert response.json()["code"] == "STREAM_EXPIRED"
    assert "transaction" in response.json()["message"]


def test_autocommit_stream_is_not_closed_by_the_transaction_timeout(served_txn: Served) -> None:
    baton = served_txn.ok([execute("select 1")])["baton"]
    time.sleep(0.6)
    assert served_txn.ok([execute("select 1")], baton)["results"][0]["type"] == "ok"


# --- cursor -------------------------------------------------------------------------------------


def test_cursor_streams_ndjson_entries_and_continues_the_stream(served: Served) -> None:
    served.ok(
        [execute("create table c(a, b text)"), execute("insert into c values (1, 'x'), (2, 'y')"), {"type": "close"}]
    )
    steps = [
        {"stmt": stmt("select a, b from c order by a")},
        {"stmt": stmt("select * from missing")},
        {"stmt": stmt("select 'skipped'"), "condition": {"type": "ok", "step": 1}},
        {"stmt": stmt("insert into c values (3, 'z')")},
    ]
    response = served.http.post("/v3/cursor", json={"baton": None, "batch": {"steps": steps}})
    assert response.status_code == 200
    lines = [msgspec.json.decode(line) for line in response.content.splitlines()]
    header, entries = lines[0], lines[1:]
    assert header["baton"] and header["base_url"] is None
    assert [e["type"] for e in entries] == [
        "step_begin",
        "row",
        "row",
        "step_end",
        "step_error",
        "step_begin",
        "step_end",
    ]
    assert entries[0] == {
        "type": "step_begin",
        "step": 0,
        "cols": [{"name": "a", "decltype": None}, {"name": "b", "decltype": "TEXT"}],
    }
    assert entries[1] == {"type": "row", "row": [integer(1), text("x")]}
    assert entries[3]["affected_row_count"] == 0
    assert entries[4]["step"] == 1 and entries[4]["error"]["code"] == "SQLITE_UNKNOWN"
    assert entries[5]["step"] == 3
    assert entries[6]["affected_row_count"] == 1 and entries[6]["last_insert_rowid"] == "3"
    after = served.ok([{"type": "get_autocommit"}, {"type": "close"}], header["baton"], version=3)
    assert response_of(after, 0)["is_autocommit"] is True


def test_cursor_baton_waits_until_the_body_is_finished(served: Served) -> None:
    steps = [
        {
            "stmt": stmt(
                "with recursive n(i) as (select 1 union all select i + 1 from n where i < 20000) select i from n"
            )
        }
    ]
    with served.http.stream("POST", "/v3/cursor", json={"baton": None, "batch": {"steps": steps}}) as response:
        lines = response.iter_lines()
        baton = msgspec.json.decode(next(lines))["baton"]
        count = sum(1 for line in lines if '"row"' in line)
    assert count == 20000
    assert served.ok([execute("select 1")], baton)["results"][0]["type"] == "ok"


# --- v1 -----------------------------------------------------------------------------------------


def test_v1_execute_and_batch(served: Served) -> None:
    created = served.http.post(
        "/v1/execute", json={"stmt": {"sql": "create table v(a)", "args": [], "named_args": [], "want_rows": True}}
    )
    assert created.status_code == 200
    assert created.json()["result"]["affected_row_count"] == 0
    batch = {
        "steps": [
            {"stmt": stmt("BEGIN")},
            {"stmt": stmt("insert into v values (?)", integer(5)), "condition": {"type": "ok", "step": 0}},
            {"stmt": stmt("COMMIT"), "condition": {"type": "ok", "step": 1}},
        ]
    }
    response = served.http.post("/v1/batch", json={"batch": batch})
    assert response.status_code == 200
    assert response.json()["result"]["step_errors"] == [None, None, None]
    selected = served.http.post("/v1/execute", json={"stmt": stmt("select a from v")})
    assert selected.json()["result"]["rows"] == [[integer(5)]]
    assert served.hrana.open_streams == 0


def test_v1_execute_error_is_an_http_error_with_hrana_error_body(served: Served) -> None:
    response = served.http.post("/v1/execute", json={"stmt": stmt("select * from nowhere")})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == "SQLITE_UNKNOWN"
    assert "no such table" in response.json()["message"]


# --- values -------------------------------------------------------------------------------------


def test_values_round_trip_exactly(served: Served) -> None:
    values = [
        integer(I64_MAX),
        integer(I64_MIN),
        integer(0),
        {"type": "float", "value": 1.5},
        {"type": "float", "value": 3},
        text("héllo ✓"),
        {"type": "blob", "base64": "AAEC/w=="},
        {"type": "blob", "base64": "AAEC/w"},
        {"type": "blob", "base64": ""},
        {"type": "null"},
    ]
    body = served.ok([execute("select " + ", ".join("?" * len(values)), *values)])
    row = response_of(body, 0)["result"]["rows"][0]
    assert row == [
        integer(I64_MAX),
        integer(I64_MIN),
        integer(0),
        {"type": "float", "value": 1.5},
        {"type": "float", "value": 3.0},
        text("héllo ✓"),
        {"type": "blob", "base64": "AAEC/w"},
        {"type": "blob", "base64": "AAEC/w"},
        {"type": "blob", "base64": ""},
        {"type": "null"},
    ]


def test_big_integers_are_stored_exactly(served: Served) -> None:
    big = 9007199254740993  # 2**53 + 1: a float would round it
    body = served.ok(
        [
            execute("create table i(a integer)"),
            execute("insert into i values (?)", integer(big)),
            execute("select a, typeof(a) from i"),
        ]
    )
    assert response_of(body, 2)["result"]["rows"] == [[integer(big), text("integer")]]


@pytest.mark.parametrize(
    "value",
    [
        integer(I64_MAX + 1),
        integer(I64_MIN - 1),
        {"type": "integer", "value": "12x"},
        {"type": "blob", "base64": "!!"},
        {"type": "weird"},
    ],
)
def test_invalid_values_are_rejected_with_400(served: Served, value: dict) -> None:
    response = served.pipeline([execute("select ?", value)])
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == "PROTOCOL_ERROR"


# --- HTTP surface -------------------------------------------------------------------------------


def test_version_probes(served: Served) -> None:
    assert served.http.get("/v2").status_code == 200
    assert served.http.get("/v3").status_code == 200
    protobuf = served.http.get("/v3-protobuf")
    assert protobuf.status_code == 404
    assert protobuf.headers["content-type"] == "application/json"


@pytest.mark.parametrize("body", [b"{not json", b'{"requests": 5}', b'{"requests": [{"type": "nope"}]}', b"[]"])
def test_malformed_bodies_get_400_naming_the_problem(served: Served, body: bytes) -> None:
    response = served.http.post("/v2/pipeline", content=body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["message"].startswith("invalid request body")


@pytest.mark.parametrize("path", ["/v2/pipeline", "/v3/pipeline", "/v3/cursor", "/v1/execute", "/v1/batch"])
@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": "Bearer None"}])
def test_bad_credentials_get_401_json(served: Served, path: str, headers: dict) -> None:
    response = httpx.post(served.url + path, json={}, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "invalid token"


def test_read_only_access_reaches_the_backend_which_refuses_writes(served: Served) -> None:
    served.ok([execute("create table r(a)")])
    read = httpx.Client(base_url=served.url, headers={"authorization": f"Bearer {READ_TOKEN}"})
    body = read.post(
        "/v2/pipeline",
        json={"baton": None, "requests": [execute("select count(*) from r"), execute("insert into r values (1)")]},
    ).json()
    assert response_of(body, 0)["result"]["rows"] == [[integer(0)]]
    assert error_code(body, 1) == "SQLITE_READONLY"
    # A read-only caller cannot take over a read-write stream with a stolen baton.
    baton = served.ok([execute("select 1")])["baton"]
    stolen = read.post("/v2/pipeline", json={"baton": baton, "requests": [execute("insert into r values (1)")]})
    assert stolen.status_code == 400


def test_counters_and_hooks_track_requests_errors_and_streams(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    gen = serve(
        tmp_path, on_request=lambda e: seen.append(("request", e)), on_error=lambda c: seen.append(("error", c))
    )
    served = next(gen)
    try:
        served.ok([execute("select 1")])
        served.ok([execute("selec")], version=3)
        served.pipeline([execute("select 1")], baton="forged")
        assert served.hrana.request_counts == {"v2/pipeline": 2, "v3/pipeline": 1}
        assert served.hrana.error_counts == {"SQL_PARSE_ERROR": 1, "BATON_INVALID": 1}
        assert served.hrana.open_streams == 2
        assert ("error", "SQL_PARSE_ERROR") in seen and ("request", "v3/pipeline") in seen
    finally:
        gen.close()


def test_late_second_release_of_a_cursor_does_not_free_the_next_request(tmp_path: Path) -> None:
    # A cursor releases its stream when its body ends and again when its response finishes; the client
    # may have acquired the stream with the new baton in between. The late release must be a no-op.
    hrana = HranaServer(ApswBackend(tmp_path / "db"), authenticate)

    async def scenario() -> None:
        stream = await hrana._acquire(None, Access.WRITE)
        cursor_lease = stream.seq
        baton = hrana._release(stream, cursor_lease)
        assert baton is not None
        again = await hrana._acquire(baton, Access.WRITE)
        assert hrana._release(stream, cursor_lease) is None
        assert again.busy
        assert hrana._release(again, again.seq) is not None

    try:
        anyio.run(scenario)
    finally:
        hrana.close()


class _FailingBackend(ApswBackend):
    def __init__(self, path: Path, failure: Exception):
        super().__init__(path)
        self.failure = failure

    def open_session(self, access: Access) -> Session:
        raise self.failure


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (HranaError("primary unreachable", "PRIMARY_UNAVAILABLE"), 503, "PRIMARY_UNAVAILABLE"),
        (RuntimeError("boom"), 500, "INTERNAL_ERROR"),
    ],
)
def test_backend_failing_to_open_a_session_gets_a_json_http_error(
    tmp_path: Path, failure: Exception, status: int, code: str
) -> None:
    gen = serve(tmp_path, _FailingBackend(tmp_path / "db", failure))
    served = next(gen)
    try:
        response = served.pipeline([execute("select 1")])
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == code
        assert served.hrana.open_streams == 0
    finally:
        gen.close()


class _CrashingSession(Session):
    def execute(self, sql: str, args: list[Value] | dict[str, Value], want_rows: bool) -> StmtResult:
        raise RuntimeError("backend bug")

    def describe(self, sql: str) -> DescribeResult:
        raise NotImplementedError

    def sequence(self, sql: str) -> None:
        raise NotImplementedError

    def is_autocommit(self) -> bool:
        return True

    def close(self) -> None:
        pass


class _CrashingBackend(Backend):
    def open_session(self, access: Access) -> Session:
        return _CrashingSession()


def test_unexpected_backend_exceptions_become_request_errors(tmp_path: Path) -> None:
    gen = serve(tmp_path, _CrashingBackend())
    served = next(gen)
    try:
        body = served.ok([execute("select 1"), {"type": "describe", "sql": "x"}, {"type": "get_autocommit"}], version=3)
    finally:
        gen.close()
    assert body["results"][0]["error"] == {"message": "backend bug", "code": "SQLITE_UNKNOWN"}
    assert body["results"][1]["error"]["code"] == "SQLITE_UNKNOWN"
    assert body["results"][2]["response"] == {"type": "get_autocommit", "is_autocommit": True}


def test_body_over_the_limit_gets_413_json(tmp_path: Path) -> None:
    gen = serve(tmp_path, max_body_bytes=1000)
    served = next(gen)
    try:
        assert served.pipeline([execute("select ?", text("x" * 100))]).status_code == 200
        response = served.pipeline([execute("select ?", text("x" * 2000))])
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == "BODY_TOO_LARGE"
    finally:
        gen.close()


def test_stream_limit_closes_the_least_recently_used_idle_stream_to_make_room(tmp_path: Path) -> None:
    gen = serve(tmp_path, max_streams=2)
    served = next(gen)
    try:
        old, recent = (served.ok([execute("select 1")])["baton"] for _ in range(2))
        recent = served.ok([execute("select 2")], recent)["baton"]
        old = served.ok([execute("select 3")], old)["baton"]  # now `recent` is the least recently used
        # Clients that never send `close` (stateless requests) must not lock everyone else out.
        for _ in range(5):
            assert served.pipeline([execute("select 1")]).status_code == 200
        assert served.hrana.open_streams == 2
        evicted = served.pipeline([execute("select 1")], recent)
        assert (evicted.status_code, evicted.json()["code"]) == (400, "STREAM_EXPIRED")
    finally:
        gen.close()


def test_stream_limit_and_shutdown_refuse_new_streams_with_503(tmp_path: Path) -> None:
    gen = serve(tmp_path, max_streams=2)
    served = next(gen)
    try:
        # Streams holding a transaction are never closed to make room.
        batons = [served.ok([execute("begin")])["baton"] for _ in range(2)]
        refused = served.pipeline([execute("select 1")])
        assert (refused.status_code, refused.json()["code"]) == (503, "STREAMS_EXHAUSTED")
        served.ok([{"type": "close"}], batons[0])
        assert served.pipeline([execute("select 1")]).status_code == 200
        served.hrana.close()
        assert served.hrana.open_streams == 0
        closed = served.pipeline([execute("select 1")])
        assert (closed.status_code, closed.json()["code"]) == (503, "SHUTTING_DOWN")
    finally:
        gen.close()


def test_cursor_abandoned_mid_body_releases_its_stream(served: Served) -> None:
    big = (
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < 50000) select i, zeroblob(99) from n"
    )
    with httpx.Client(base_url=served.url, headers=served.http.headers, timeout=10) as other:
        with other.stream("POST", "/v3/cursor", json={"baton": None, "batch": {"steps": [{"stmt": stmt(big)}]}}) as r:
            baton = msgspec.json.decode(next(r.iter_lines()))["baton"]
    # The connection is gone; the next request on the stream must not stay stuck behind the cursor.
    response = served.pipeline([execute("select 1"), {"type": "close"}], baton)
    assert response.status_code == 200, response.text
    assert served.hrana.open_streams == 0


def test_many_concurrent_streams_stay_isolated(served: Served) -> None:
    def worker(n: int) -> list[list[dict]]:
        with httpx.Client(base_url=served.url, headers=served.http.headers, timeout=30) as http:
            baton = None
            for i in range(10):
                requests = [execute("create temp table mine(a)")] if i == 0 else []
                requests.append(execute("insert into mine values (?)", integer(n * 100 + i)))
                body = http.post("/v2/pipeline", json={"baton": baton, "requests": requests}).json()
                baton = body["baton"]
            body = http.post(
                "/v2/pipeline",
                json={"baton": baton, "requests": [execute("select sum(a), count(*) from mine"), {"type": "close"}]},
            ).json()
            return response_of(body, 0)["result"]["rows"]

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(worker, range(12)))
    for n, result in enumerate(results):
        assert result == [[integer(sum(n * 100 + i for i in range(10))), integer(10)]]
    assert served.hrana.open_streams == 0


class _InlineOpenBackend(ApswBackend):
    open_session_blocks = False

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.opened_on: list[str] = []

    def open_session(self, access: Access) -> Session:
        self.opened_on.append(threading.current_thread().name)
        return super().open_session(access)


def test_a_backend_whose_open_session_never_blocks_opens_streams_on_the_event_loop(tmp_path: Path) -> None:
    backend = _InlineOpenBackend(tmp_path / "db")
    gen = serve(tmp_path, backend)
    served = next(gen)
    try:
        served.ok([execute("select 1"), {"type": "close"}])
        # Stateless requests then cost one thread hop, not two.
        assert len(backend.opened_on) == 1
        assert "AnyIO worker thread" not in backend.opened_on[0]
    finally:
        gen.close()
