"""Time limits on reads, against a node with a short query timeout."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.procs import Proc, start

# Computes for seconds before producing its single row: nothing to interrupt between rows.
SLOW_SQL = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 30000000) SELECT count(*) FROM c"


@pytest.fixture(scope="module")
def slow_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("limits")
    proc = start(
        ["serve", "--data-dir", str(Path(tmp) / "data"), "--query-timeout-ms", "300", "--read-connections", "2"],
        tmp,
        "node",
        ready_path="/ready",
    )
    yield proc
    proc.stop()


def test_a_read_past_the_time_limit_answers_408_on_time(slow_node: Proc) -> None:
    started = time.monotonic()
    response = httpx.post(slow_node.url + "/api/v1/query", json={"sql": SLOW_SQL}, timeout=30)
    assert response.status_code == 408
    assert "query_timeout_ms=300" in response.json()["error"]["message"]
    assert time.monotonic() - started < 2.0


def test_other_reads_keep_working_while_a_slow_one_finishes(slow_node: Proc) -> None:
    httpx.post(slow_node.url + "/api/v1/query", json={"sql": SLOW_SQL}, timeout=30)
    response = httpx.post(slow_node.url + "/api/v1/query", json={"sql": "SELECT 42"}, timeout=30)
    assert response.json()["rows"] == [[42]]


def test_rows_trickling_past_the_limit_stop_with_408(slow_node: Proc) -> None:
    sql = (
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 50000000) "
        "SELECT n FROM c WHERE n % 200000 = 0"
    )
    response = httpx.post(slow_node.url + "/api/v1/query", json={"sql": sql}, timeout=30)
    assert response.status_code == 408
