"""HranaClient round trips against the HranaServer (real uvicorn, apsw backend)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgenode.hrana.backend import HranaError, StmtResult
from edgenode.hrana.client import (
    BatchStepError,
    HranaClient,
    HranaConnectionError,
    HranaHTTPError,
)
from edgenode.hrana.protocol import I64_MAX, I64_MIN
from tests.test_hrana_support import WRITE_TOKEN, Served, free_port, serve


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path)


@pytest.fixture(params=[2, 3])
def client(served: Served, request: pytest.FixtureRequest) -> Iterator[HranaClient]:
    with HranaClient(served.url, WRITE_TOKEN, timeout=10, version=request.param) as client:
        yield client


def test_execute_round_trips_python_values_exactly(client: HranaClient) -> None:
    values = [I64_MAX, I64_MIN, 2**53 + 1, 1.25, "héllo", b"\x00\x01\xff", b"", None]
    result = client.execute("select " + ", ".join("?" * len(values)), values)
    assert result.rows == [values]
    assert [col.name for col in result.cols] == ["?"] * len(values)


def test_named_args_and_dml_results(client: HranaClient) -> None:
    client.execute("create table t(id integer primary key, name text)")
    inserted = client.execute("insert into t(name) values (:name)", {"name": "a"})
    assert (inserted.affected_row_count, inserted.last_insert_rowid) == (1, 1)
    selected = client.execute("select name from t where id = $id", {"$id": 1})
    assert selected.rows == [["a"]]
    assert selected.last_insert_rowid is None


def test_stream_holds_a_transaction_across_requests(client: HranaClient, served: Served) -> None:
    client.execute("create table t(a)")
    with client.stream() as stream:
        stream.execute("begin")
        stream.execute("insert into t values (1)")
        assert stream.is_autocommit() is False
        stream.execute("commit")
        assert stream.is_autocommit() is True
    assert stream.closed
    assert client.execute("select a from t").rows == [[1]]
    assert served.hrana.open_streams == 0


def test_leaving_a_stream_without_commit_rolls_back(client: HranaClient) -> None:
    client.execute("create table t(a)")
    with client.stream() as stream:
        stream.execute("begin")
        stream.execute("insert into t values (1)")
    assert client.execute("select count(*) from t").rows == [[0]]


def test_statement_errors_raise_hrana_error_and_the_stream_goes_on(client: HranaClient) -> None:
    with client.stream() as stream:
        with pytest.raises(HranaError) as exc:
            stream.execute("select * from nowhere")
        assert exc.value.code == "SQLITE_UNKNOWN"
        assert "no such table" in exc.value.message
        assert stream.execute("select 1").rows == [[1]]


def test_batch_sequence_and_describe(client: HranaClient) -> None:
    with client.stream() as stream:
        stream.sequence("create table t(a integer unique); insert into t values (1);")
        results = stream.batch(
            ["insert into t values (2)", ("insert into t values (?)", [1]), "select count(*) from t"]
        )
        assert isinstance(results[0], StmtResult)
        assert isinstance(results[1], HranaError) and results[1].code == "SQLITE_CONSTRAINT"
        assert isinstance(results[2], StmtResult) and results[2].rows == [[2]]
        described = stream.describe("select a from t where a > :min")
        assert described.params == [":min"]
        assert described.is_readonly


def test_atomic_batch_commits_and_returns_one_result_per_statement(client: HranaClient) -> None:
    client.execute("create table t(a unique)")
    results = client.execute_batch_atomic(
        ["insert into t values (1)", ("insert into t values (?)", [2]), "select count(*) from t"]
    )
    assert [r.affected_row_count for r in results[:2]] == [1, 1]
    assert results[2].rows == [[2]]
    assert client.execute("select count(*) from t").rows == [[2]]


def test_atomic_batch_rolls_back_and_names_the_failing_statement(client: HranaClient) -> None:
    client.execute("create table t(a unique)")
    with pytest.raises(BatchStepError) as exc:
        client.execute_batch_atomic(
            ["insert into t values (1)", "insert into t values (2)", "insert into t values (1)"]
        )
    assert exc.value.index == 2
    assert exc.value.code == "SQLITE_CONSTRAINT"
    assert "statement 2" in exc.value.message
    assert client.execute("select count(*) from t").rows == [[0]]


def test_http_errors_carry_status_and_code(served: Served) -> None:
    with HranaClient(served.url, "wrong-token") as bad:
        with pytest.raises(HranaHTTPError) as exc:
            bad.execute("select 1")
    assert exc.value.status == 401
    assert exc.value.code == "UNAUTHORIZED"
    assert "invalid token" in exc.value.message


def test_expired_stream_raises_stream_expired(tmp_path: Path) -> None:
    gen = serve(tmp_path, idle_timeout=0.2)
    served = next(gen)
    try:
        with HranaClient(served.url, WRITE_TOKEN) as client:
            stream = client.stream()
            stream.execute("select 1")
            time.sleep(0.6)
            with pytest.raises(HranaHTTPError) as exc:
                stream.execute("select 1")
            assert (exc.value.status, exc.value.code) == (400, "STREAM_EXPIRED")
            assert stream.closed
            stream.close()  # nothing left to close: no second error
    finally:
        gen.close()


def test_unreachable_server_raises_connection_error() -> None:
    with HranaClient(f"http://127.0.0.1:{free_port()}", WRITE_TOKEN, timeout=2) as client:
        with pytest.raises(HranaConnectionError):
            client.execute("select 1")


def test_closed_stream_refuses_requests(client: HranaClient) -> None:
    stream = client.stream()
    stream.execute("select 1")
    stream.close()
    stream.close()
    with pytest.raises(HranaError) as exc:
        stream.execute("select 1")
    assert exc.value.code == "STREAM_CLOSED"


def test_v3_stream_knows_its_autocommit_state_without_extra_round_trips(served: Served) -> None:
    with HranaClient(served.url, WRITE_TOKEN, version=3) as client, client.stream() as stream:
        assert stream.is_autocommit() is True
        stream.execute("begin")
        before = served.hrana.request_counts["v3/pipeline"]
        assert stream.is_autocommit() is False
        stream.execute("rollback")
        assert stream.is_autocommit() is True
        assert served.hrana.request_counts["v3/pipeline"] == before + 1


def test_client_follows_the_base_url_the_server_hands_out(served: Served) -> None:
    served.hrana.base_url = served.url.replace("127.0.0.1", "localhost") + "/"
    with HranaClient(served.url, WRITE_TOKEN) as client, client.stream() as stream:
        stream.execute("select 1")
        assert stream._base_url == served.url.replace("127.0.0.1", "localhost")
        assert stream.execute("select 2").rows == [[2]]
