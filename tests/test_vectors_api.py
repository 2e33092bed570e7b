"""The vector REST routes in a Starlette app (in-process): status codes and every bad input."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from edgenode.vectors import VectorManager, vector_routes
from edgenode.vectors.planner import PlannerSettings
from tests.test_vectors_support import clustered, make_items, open_db

DIM = 8


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path = tmp_path_factory.mktemp("api")
    holder: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = await open_db(path)
        await make_items(db, clustered(600, DIM))
        manager = holder["manager"]
        manager.db.inner = db
        await manager.start()
        yield
        await manager.stop()
        await db.stop()

    manager = VectorManager(None, path, planner=PlannerSettings(exact_threshold=100))  # type: ignore[arg-type]
    holder["manager"] = manager
    app = Starlette(routes=vector_routes(manager), lifespan=lifespan)
    with TestClient(app) as c:
        r = c.put(
            "/api/v1/collections/items",
            json={"table": "items", "column": "emb", "dim": DIM, "filter_columns": ["cat", "price"]},
        )
        assert r.status_code == 202, r.text
        _wait_ready(c, "items")
        yield c


def _wait_ready(client: TestClient, name: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while client.get(f"/api/v1/collections/{name}").json()["state"] != "ready":
        assert time.monotonic() < deadline, f"{name} not ready after {seconds}s"
        time.sleep(0.02)


def _search(client: TestClient, body: Any, name: str = "items") -> Any:
    return client.post(f"/api/v1/collections/{name}/search", json=body)


def _error(response: Any, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    for word in words:
        assert word in error["message"], error


def test_collections_are_listed_and_described(client: TestClient) -> None:
    listed = client.get("/api/v1/collections").json()["collections"]
    assert [c["name"] for c in listed] == ["items"]
    info = client.get("/api/v1/collections/items").json()
    assert info["size"] == 600 and info["state"] == "ready" and info["metric"] == "cosine"
    assert {"position", "build_seconds", "table", "column", "dim"} <= info.keys()


def test_putting_the_same_definition_again_is_200(client: TestClient) -> None:
    r = client.put(
        "/api/v1/collections/items",
        json={"table": "items", "column": "emb", "dim": DIM, "filter_columns": ["cat", "price"]},
    )
    assert r.status_code == 200 and r.json()["state"] == "ready"


def test_search_returns_best_first_with_requested_columns(client: TestClient) -> None:
    q = clustered(600, DIM)[10]
    body = _search(client, {"vector": q.tolist(), "k": 5, "include": ["cat", "price"]}).json()
    assert body["results"][0]["rowid"] == 11 and body["mode"] == "ann"
    assert body["results"][0]["row"] == {"cat": "b", "price": 11.0}
    distances = [h["distance"] for h in body["results"]]
    assert distances == sorted(distances)
    filtered = _search(client, {"vector": q.tolist(), "k": 3, "filter": {"sql": "cat = ?", "params": ["c"]}}).json()
    assert len(filtered["results"]) == 3


def test_batch_search_answers_each_vector(client: TestClient) -> None:
    qs = clustered(600, DIM)[[1, 2, 3]]
    body = _search(client, {"vectors": qs.tolist(), "k": 1}).json()
    assert [r["results"][0]["rowid"] for r in body["batch"]] == [2, 3, 4]


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({"vector": [0.1] * 3, "k": 5}, 400, "dimension_mismatch", ("3 dimensions", "dim 8")),
        ({"vectors": [[0.1] * 8, [0.1] * 9]}, 400, "dimension_mismatch", ("vectors[1]",)),
        ({"vector": [0.1] * 7 + ["x"]}, 422, "invalid_field", ("$.vector[7]",)),
        ({"vector": [0.1] * 7 + [None]}, 422, "invalid_field", ("$.vector[7]",)),
        ({"vector": [0.1] * 7 + [1e39]}, 400, "invalid_vector", ("vector[7]", "finite")),
        ({"vector": [0.0] * 8}, 400, "invalid_vector", ("zero vector",)),
        ({"vector": [0.1] * 8, "k": 0}, 400, "invalid_k", ("k must be",)),
        ({"vector": [0.1] * 8, "k": 100_000}, 400, "invalid_k", ("k must be",)),
        ({"vector": [0.1] * 8, "k": "ten"}, 422, "invalid_field", ("$.k",)),
        ({"vector": [0.1] * 8, "ef": 0}, 400, "invalid_ef", ("ef",)),
        ({"vector": [0.1] * 8, "mode": "fast"}, 422, "invalid_field", ("$.mode",)),
        ({"k": 3}, 400, "invalid_request", ("exactly one",)),
        ({"vector": [0.1] * 8, "vectors": [[0.1] * 8]}, 400, "invalid_request", ("exactly one",)),
        ({"vector": [0.1] * 8, "bogus": 1}, 422, "invalid_field", ("bogus",)),
        ({"vector": [0.1] * 8, "include": ["nope"]}, 400, "unknown_column", ("nope",)),
        ({"vector": [0.1] * 8, "filter": {"sql": "color = 1"}}, 400, "invalid_filter", ("color", "cat, price")),
        ({"vector": [0.1] * 8, "filter": {"sql": "emb IS NULL"}}, 400, "invalid_filter", ("emb",)),
        ({"vector": [0.1] * 8, "filter": {"sql": "1=1; drop table x"}}, 400, "invalid_filter", ("single",)),
        ({"vector": [0.1] * 8, "filter": {"sql": "1=1; DELETE FROM filt"}}, 400, "invalid_filter", ("single",)),
        ({"vector": [0.1] * 8, "filter": {"sql": "cat"}}, 400, "invalid_filter", ("boolean",)),
        ({"vector": [0.1] * 8, "filter": {"sql": "price"}}, 400, "invalid_filter", ("boolean",)),
        ({"vector": [0.1] * 8, "filter": {"sql": "1) , (2"}}, 400, "invalid_filter", ("compile",)),
        ({"vector": [0.1] * 8, "filter": {"sql": "cat = 'a') --"}}, 400, "invalid_filter", ("compile",)),
        (
            {"vector": [0.1] * 8, "filter": {"sql": "(SELECT name FROM sqlite_master LIMIT 1) IS NOT NULL"}},
            400,
            "invalid_filter",
            ("sqlite_master",),
        ),
        (
            {"vector": [0.1] * 8, "filter": {"sql": "cat IN (SELECT name FROM _edgenode_collections)"}},
            400,
            "invalid_filter",
            ("_edgenode_collections",),
        ),
        (
            {"vector": [0.1] * 8, "filter": {"sql": "rowid IN (SELECT rowid FROM vec)"}},
            400,
            "invalid_filter",
            ("vec",),
        ),
        ({"vector": [0.1] * 8, "filter": {"sql": "random() > 0"}}, 400, "invalid_filter", ("random",)),
        ({"vector": [0.1] * 8, "filter": {"sql": "load_extension('x')"}}, 400, "invalid_filter", ("load_extension",)),
        ({"vector": [0.1] * 8, "filter": {"sql": "cat = ?", "params": []}}, 400, "invalid_filter", ("1 ?",)),
        ({"vector": [0.1] * 8, "filter": {"sql": "cat = :c", "params": ["a"]}}, 400, "invalid_filter", ("?",)),
        ({"vector": [0.1] * 8, "filter": {"sql": "  "}}, 400, "invalid_filter", ("empty",)),
    ],
)
def test_bad_search_input_is_a_4xx_naming_the_problem(
    client: TestClient, body: dict[str, Any], status: int, code: str, words: tuple[str, ...]
) -> None:
    _error(_search(client, body), status, code, *words)


def test_nan_and_malformed_json_are_rejected(client: TestClient) -> None:
    r = client.post(
        "/api/v1/collections/items/search",
        content=b'{"vector": [NaN, 0, 0, 0, 0, 0, 0, 0]}',
        headers={"content-type": "application/json"},
    )
    _error(r, 400, "malformed_json", "JSON")


def test_unknown_collection_is_404(client: TestClient) -> None:
    _error(_search(client, {"vector": [0.1] * 8}, name="nope"), 404, "collection_not_found", "nope")
    _error(client.get("/api/v1/collections/nope"), 404, "collection_not_found", "nope")
    _error(client.delete("/api/v1/collections/nope"), 404, "collection_not_found", "nope")


@pytest.mark.parametrize(
    ("name", "body", "status", "code", "words"),
    [
        ("x", {"table": "missing", "column": "emb", "dim": 8}, 400, "unknown_table", ("missing",)),
        ("x", {"table": "items", "column": "nope", "dim": 8}, 400, "unknown_column", ("nope",)),
        ("x", {"table": "items", "column": "emb", "dim": 8, "filter_columns": ["zz"]}, 400, "unknown_column", ("zz",)),
        ("x", {"table": "items", "column": "emb", "dim": 9}, 400, "dimension_mismatch", ("F32_BLOB(8)",)),
        ("x", {"table": "items", "column": "emb", "dim": 8, "metric": "dot"}, 422, "invalid_field", ("$.metric",)),
        ("x", {"table": "items", "column": "emb", "dim": 0}, 422, "invalid_field", ("$.dim",)),
        ("x", {"table": 'items"; drop', "column": "emb", "dim": 8}, 400, "invalid_collection", ("identifier",)),
        ("x", {"table": "_edgenode_changes", "column": "tbl", "dim": 8}, 400, "invalid_collection", ("internal",)),
        ("bad-name", {"table": "items", "column": "emb", "dim": 8}, 400, "invalid_collection_name", ("bad-name",)),
        ("x", {"table": "items", "column": "emb", "dim": 8, "hnsw": {"m": 1}}, 422, "invalid_field", ("$.hnsw.m",)),
    ],
)
def test_bad_collection_definitions_are_a_4xx_naming_the_problem(
    client: TestClient, name: str, body: dict[str, Any], status: int, code: str, words: tuple[str, ...]
) -> None:
    _error(client.put(f"/api/v1/collections/{name}", json=body), status, code, *words)


def test_a_collection_can_be_created_searched_and_deleted(client: TestClient) -> None:
    r = client.put("/api/v1/collections/l2items", json={"table": "items", "column": "emb", "dim": DIM, "metric": "l2"})
    assert r.status_code == 202
    _wait_ready(client, "l2items")
    q = np.asarray(clustered(600, DIM)[20])
    body = _search(client, {"vector": q.tolist(), "k": 2, "mode": "exact"}).json()
    assert body["results"][0]["rowid"] == 21
    body = client.post("/api/v1/collections/l2items/search", json={"vector": (q * 2).tolist(), "k": 1}).json()
    assert body["results"][0]["rowid"] == 21 and abs(body["results"][0]["distance"] - 1.0) < 1e-3
    assert client.post("/api/v1/collections/l2items/rebuild").status_code == 202
    assert client.delete("/api/v1/collections/l2items").json() == {"name": "l2items", "deleted": True}
    _error(client.get("/api/v1/collections/l2items"), 404, "collection_not_found")
