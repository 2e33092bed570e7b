"""A search filter runs SQL in the node's own process: one that builds huge values or runs long is
a prompt 400 invalid_filter, on a real node, for vector and text collections alike."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.procs import Proc, start

ROWS = 400
TIMEOUT_MS = 300
# Each makes a value far past the filter's 4 MiB bound; before the bound, the first allocated
# 900 MB and held its request for over 10 s.
HUGE = [
    "length(printf('%.*c', 900000000, 'x')) > 0",
    "length(replace(printf('%.*c', 3000000, 'x'), 'x', 'xxxxxxxxxx')) > 0",
    "length(printf('%.*c', 3000000, 'y') || printf('%.*c', 3000000, 'z')) > 0",
]
# Cheap per value, ROWS**4 row visits (no row matches): runs for hours unless interrupted.
SLOW = "EXISTS (SELECT 1 FROM filt a, filt b, filt c, filt d WHERE a.tag || b.tag || c.tag || d.tag = 'zzzz')"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("filter-bounds")
    proc = start(
        ["serve", "--data-dir", str(tmp / "data"), "--query-timeout-ms", str(TIMEOUT_MS)],
        tmp,
        "node",
        ready_path="/ready",
    )
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((ROWS, 4)).astype("<f4")
    rows = [
        {
            "sql": "INSERT INTO docs(id, body, tag, emb) VALUES (?, ?, ?, ?)",
            "params": [i + 1, f"word{i % 7} apple", "abc"[i % 3], {"base64": base64.b64encode(v.tobytes()).decode()}],
        }
        for i, v in enumerate(vectors)
    ]
    create = {"sql": "CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT, tag TEXT, emb F32_BLOB(4))"}
    assert httpx.post(proc.url + "/api/v1/execute", json={"statements": [create, *rows]}, timeout=60).status_code == 200
    vec = {"table": "docs", "column": "emb", "dim": 4, "filter_columns": ["tag"]}
    assert httpx.put(proc.url + "/api/v1/collections/emb", json=vec, timeout=30).status_code == 202
    text = {"table": "docs", "columns": ["body"], "filter_columns": ["tag"]}
    assert httpx.put(proc.url + "/api/v1/text/docs", json=text, timeout=30).status_code == 202
    deadline = time.monotonic() + 60
    for path in ("/api/v1/collections/emb", "/api/v1/text/docs"):
        while httpx.get(proc.url + path, timeout=30).json()["state"] != "ready":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    yield proc
    proc.stop()


def searches(node: Proc, sql: str) -> list[tuple[str, httpx.Response, float]]:
    """The filter in a vector search (exact and planned), a text search and a hybrid search."""
    flt = {"sql": sql}
    bodies = [
        ("vector", "/api/v1/collections/emb/search", {"vector": [1, 0, 0, 0], "k": 5, "filter": flt}),
        (
            "vector-exact",
            "/api/v1/collections/emb/search",
            {"vector": [1, 0, 0, 0], "k": 5, "filter": flt, "mode": "exact"},
        ),
        ("text", "/api/v1/text/docs/search", {"q": "apple", "k": 5, "filter": flt}),
        (
            "hybrid",
            "/api/v1/text/docs/search",
            {"q": "apple", "k": 5, "filter": flt, "vector": [1, 0, 0, 0], "collection": "emb"},
        ),
    ]
    answers = []
    for name, path, body in bodies:
        started = time.monotonic()
        response = httpx.post(node.url + path, json=body, timeout=60)
        answers.append((name, response, time.monotonic() - started))
    return answers


@pytest.mark.parametrize("sql", HUGE, ids=["printf", "replace", "concat"])
def test_a_filter_that_builds_a_huge_value_is_a_prompt_400(node: Proc, sql: str) -> None:
    for name, response, seconds in searches(node, sql):
        assert response.status_code == 400, (name, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_filter" and "value longer than 4194304 bytes" in error["message"], name
        assert seconds < 2, (name, seconds)


def test_a_filter_that_runs_past_query_timeout_ms_is_interrupted_with_a_400(node: Proc) -> None:
    for name, response, seconds in searches(node, SLOW):
        assert response.status_code == 400, (name, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_filter" and f"query_timeout_ms={TIMEOUT_MS}" in error["message"], name
        assert seconds < 3, (name, seconds)


def test_ordinary_filters_still_work_after_a_refused_one(node: Proc) -> None:
    for name, response, _ in searches(node, "tag = 'a' AND length(printf('%.*c', 1000, 'x')) = 1000"):
        assert response.status_code == 200, (name, response.text)
        assert response.json()["results"], name
