"""Hrana on a standalone node answers autocommit reads on the event loop (no worker-thread hop) and
hands the rest of a pipeline to a worker thread from the first request it cannot answer there:
every result still comes back in order, each seeing the ones before it."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.procs import start


def _execute(sql: str, *args: int) -> dict:
    return {"type": "execute", "stmt": {"sql": sql, "args": [{"type": "integer", "value": str(a)} for a in args]}}


def test_a_pipeline_mixing_loop_reads_and_thread_writes_answers_in_order(tmp_path: Path) -> None:
    node = start(["serve", "--data-dir", str(tmp_path / "data")], tmp_path, name="node")
    try:

        def pipeline(*requests: dict, baton: str | None = None) -> dict:
            response = httpx.post(node.url + "/v3/pipeline", json={"baton": baton, "requests": list(requests)})
            assert response.status_code == 200, response.text
            return response.json()

        pipeline(_execute("CREATE TABLE t (a INTEGER)"), {"type": "close"})
        body = pipeline(
            _execute("SELECT count(*) FROM t"),  # on the loop
            _execute("INSERT INTO t VALUES (?)", 7),  # a write: from here on, a worker thread
            _execute("SELECT a FROM t"),
            _execute("SELECT * FROM missing"),
            {"type": "close"},
        )
        results = body["results"]
        assert body["baton"] is None and [r["type"] for r in results] == ["ok", "ok", "ok", "error", "ok"]
        assert results[0]["response"]["result"]["rows"] == [[{"type": "integer", "value": "0"}]]
        assert results[1]["response"]["result"]["affected_row_count"] == 1
        assert results[2]["response"]["result"]["rows"] == [[{"type": "integer", "value": "7"}]]
        assert "no such table" in results[3]["error"]["message"]
        # A stream kept open across requests: loop reads and its transaction's statements interleave.
        baton = pipeline(_execute("SELECT a FROM t"))["baton"]
        baton = pipeline(_execute("BEGIN"), _execute("INSERT INTO t VALUES (?)", 8), baton=baton)["baton"]
        inside = pipeline(_execute("SELECT count(*) FROM t"), _execute("ROLLBACK"), baton=baton)
        assert inside["results"][0]["response"]["result"]["rows"] == [[{"type": "integer", "value": "2"}]]
        after = pipeline(_execute("SELECT count(*) FROM t"), {"type": "close"}, baton=inside["baton"])
        assert after["results"][0]["response"]["result"]["rows"] == [[{"type": "integer", "value": "1"}]]
    finally:
        node.stop()
