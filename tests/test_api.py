"""The REST API of a standalone node, against a real server process."""

from __future__ import annotations

import base64

import httpx
import pytest
from starlette.responses import Response
from starlette.routing import Route

from edgenode.api.routing import AccessMap, read_route, write_route
from tests.conftest import RO, RW
from tests.procs import Proc


def execute(client: httpx.Client, *statements: tuple[str, list | dict | None]) -> httpx.Response:
    return client.post("/api/v1/execute", json={"statements": [{"sql": s, "params": p} for s, p in statements]})


def query(client: httpx.Client, sql: str, params: list | dict | None = None) -> httpx.Response:
    return client.post("/api/v1/query", json={"sql": sql, "params": params})


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


@pytest.fixture(scope="module", autouse=True)
def scratch_table(rw: httpx.Client) -> None:
    response = execute(rw, ("CREATE TABLE scratch (id INTEGER PRIMARY KEY, big INTEGER, data BLOB, note TEXT)", None))
    assert response.status_code == 200, response.text


def test_health_and_ready_answer_without_a_token(node: Proc) -> None:
    assert httpx.get(node.url + "/health").json() == {"status": "ok"}
    assert httpx.get(node.url + "/ready").json()["status"] == "ready"


def test_status_reports_role_pragmas_migrations_and_versions(ro: httpx.Client) -> None:
    status = ro.get("/api/v1/status").json()
    assert status["role"] == "standalone"
    assert status["database"]["size_bytes"] > 0
    assert status["database"]["pragmas"]["applied"]["journal_mode_wal"] == "wal"
    assert all(m["applied"] for m in status["migrations"]) and len(status["migrations"]) >= 3
    assert status["versions"]["libsql"].startswith("0.1.")
    # The engine's own SQLite, as a statement sees it (the binding's version constant was stale).
    engine_sqlite = ro.post("/api/v1/query", json={"sql": "SELECT sqlite_version()"}).json()["rows"][0][0]
    assert status["versions"]["libsql_sqlite"] == engine_sqlite


def test_execute_is_one_transaction_and_query_reads_it_back(rw: httpx.Client, ro: httpx.Client) -> None:
    response = execute(
        rw,
        ("INSERT INTO users (id, email) VALUES (?, ?)", ["u-api", "api@example.com"]),
        (
            "INSERT INTO prompts (id, user_id, title, content) VALUES (:id, :user, :title, :content)",
            {"id": "p-api", "user": "u-api", "title": "T", "content": "C"},
        ),
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["rows_affected"] for r in results] == [1, 1]
    rows = query(ro, "SELECT p.id, u.email FROM prompts p JOIN users u ON u.id = p.user_id WHERE p.id = ?", ["p-api"])
    assert rows.json()["rows"] == [["p-api", "api@example.com"]]
    assert rows.json()["columns"] == ["id", "email"]
    assert rows.json()["elapsed_ms"] >= 0


def test_failing_statement_names_its_index_and_applies_nothing(rw: httpx.Client, ro: httpx.Client) -> None:
    response = execute(
        rw,
        ("INSERT INTO users (id, email) VALUES ('u-atomic', 'atomic@example.com')", None),
        ("INSERT INTO users (id, email) VALUES ('u-atomic-2', 'atomic@example.com')", None),
    )
    assert response.status_code == 400
    assert response.json()["error"]["index"] == 1
    assert "UNIQUE" in response.json()["error"]["message"]
    assert query(ro, "SELECT count(*) FROM users WHERE id LIKE 'u-atomic%'").json()["rows"] == [[0]]


def test_integers_are_exact_to_64_bits_both_ways(rw: httpx.Client, ro: httpx.Client) -> None:
    for value in (2**53 + 1, 2**63 - 1, -(2**63), 2**31, -(2**31) - 1):
        inserted = execute(rw, ("INSERT INTO scratch (big) VALUES (?)", [value])).json()["results"][0]
        rowid = inserted["last_insert_rowid"]
        rows = query(ro, "SELECT big, typeof(big) FROM scratch WHERE id = ?", [rowid]).json()["rows"]
        assert rows == [[value, "integer"]]
        found = query(ro, "SELECT id FROM scratch WHERE big = ?", [value]).json()["rows"]
        assert [rowid] in found


def test_integer_beyond_64_bits_is_refused(rw: httpx.Client) -> None:
    response = execute(rw, ("INSERT INTO scratch (big) VALUES (?)", [2**64]))
    assert response.status_code == 400
    assert "64 bits" in response.json()["error"]["message"]


def test_blobs_travel_as_base64_both_ways(rw: httpx.Client, ro: httpx.Client) -> None:
    blob = bytes(range(256))
    encoded = base64.b64encode(blob).decode()
    rowid = execute(rw, ("INSERT INTO scratch (data) VALUES (?)", [{"base64": encoded}])).json()["results"][0][
        "last_insert_rowid"
    ]
    rows = query(ro, "SELECT data, length(data) FROM scratch WHERE id = ?", [rowid]).json()["rows"]
    assert rows == [[{"base64": encoded}, 256]]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO scratch (note) VALUES ('x')",
        "WITH t AS (SELECT 1) INSERT INTO scratch (note) SELECT 'x' FROM t",
        "UPDATE scratch SET note = 'x'",
        "DELETE FROM scratch",
        "PRAGMA writable_schema = 1",
        "PRAGMA query_only = 0",
        "PRAGMA foreign_keys = OFF",
        "ATTACH DATABASE ':memory:' AS other",
        "VACUUM INTO '/tmp/edgenode-stolen.db'",
        "CREATE TEMP TABLE t (a)",
        "DROP TABLE scratch",
        "BEGIN",
        "SELECT load_extension('x')",
    ],
)
def test_query_refuses_anything_that_is_not_a_pure_read(ro: httpx.Client, rw: httpx.Client, sql: str) -> None:
    before = query(ro, "SELECT count(*), total(length(note)) FROM scratch").json()["rows"]
    for client in (ro, rw):
        response = query(client, sql)
        assert response.status_code == 403, (sql, response.text)
        assert error_code(response) == "read_only"
    assert query(ro, "SELECT count(*), total(length(note)) FROM scratch").json()["rows"] == before


def test_two_statements_in_one_string_are_refused_not_half_run(ro: httpx.Client, rw: httpx.Client) -> None:
    response = query(ro, "SELECT 1; DELETE FROM scratch")
    assert response.status_code == 400
    assert "several statements" in response.json()["error"]["message"]
    response = execute(rw, ("INSERT INTO scratch (note) VALUES ('a'); INSERT INTO scratch (note) VALUES ('b')", None))
    assert response.status_code == 400
    assert query(ro, "SELECT count(*) FROM scratch WHERE note IN ('a', 'b')").json()["rows"] == [[0]]


def test_reads_that_only_inspect_are_allowed(ro: httpx.Client) -> None:
    assert query(ro, "PRAGMA table_info(users)").status_code == 200
    assert query(ro, "EXPLAIN QUERY PLAN SELECT * FROM prompts WHERE user_id = ?", ["x"]).status_code == 200
    assert query(ro, "SELECT 1 -- trailing comment").json()["rows"] == [[1]]
    assert query(
        ro, "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 5) SELECT sum(n) FROM c"
    ).json()["rows"] == [[15]]


def test_bad_sql_is_400_with_the_engine_message(ro: httpx.Client) -> None:
    response = query(ro, "SELEC 1")
    assert response.status_code == 400 and error_code(response) == "sql_error"
    assert "syntax error" in response.json()["error"]["message"]
    response = query(ro, "SELECT * FROM no_such_table")
    assert response.status_code == 400 and "no such table" in response.json()["error"]["message"]


def test_parameter_mistakes_are_named(ro: httpx.Client) -> None:
    assert "takes 1 parameter" in query(ro, "SELECT ?", []).json()["error"]["message"]
    assert "missing named" in query(ro, "SELECT :a", {"b": 1}).json()["error"]["message"]
    assert "unsupported value" in query(ro, "SELECT ?", [{"x": 1}]).json()["error"]["message"]
    assert query(ro, "SELECT :a, @b", {":a": 1, "b": 2}).json()["rows"] == [[1, 2]]


def test_row_limit_is_a_4xx_naming_the_limit(ro: httpx.Client) -> None:
    sql = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 5000) SELECT n FROM c"
    response = query(ro, sql)
    assert response.status_code == 400
    assert "max_rows=1000" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        (b"", 400, "malformed_json"),
        (b'{"sql": 5}', 422, "invalid_field"),
        (b'{"sql": "SELECT 1", "params": "x"}', 422, "invalid_field"),
        (b'{"sql": "SELECT 1", "extra": 1}', 422, "invalid_field"),
        (b"[1, 2]", 422, "invalid_field"),
    ],
)
def test_malformed_bodies_get_clear_errors(ro: httpx.Client, body: bytes, status: int, code: str) -> None:
    response = ro.post("/api/v1/query", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert error_code(response) == code
    assert response.json()["error"]["message"]


def test_wrong_types_in_execute_name_the_field(rw: httpx.Client) -> None:
    response = rw.post("/api/v1/execute", json={"statements": [{"sql": "SELECT 1"}, {"sql": 3}]})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "$.statements[1].sql"
    response = rw.post("/api/v1/execute", json={"statements": []})
    assert response.status_code == 400


def test_transaction_control_inside_execute_is_refused(rw: httpx.Client) -> None:
    response = execute(rw, ("BEGIN", None))
    assert response.status_code == 400 and "one transaction" in response.json()["error"]["message"]
    response = execute(rw, ("ATTACH DATABASE '/tmp/x.db' AS x", None))
    assert response.status_code == 403


def test_oversized_body_is_413(rw: httpx.Client) -> None:
    big = "x" * 70_000
    response = execute(rw, ("INSERT INTO scratch (note) VALUES (?)", [big]))
    assert response.status_code == 413
    assert "max_body_bytes=65536" in response.json()["error"]["message"]


def test_oversized_chunked_body_is_413(rw: httpx.Client) -> None:
    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(20):
            yield b"x" * 8192

    response = rw.post("/api/v1/query", content=chunks())
    assert response.status_code == 413


def test_unknown_route_and_method_are_json_errors(ro: httpx.Client) -> None:
    response = ro.get("/api/v1/nope")
    assert response.status_code == 404 and error_code(response) == "not_found"
    response = ro.get("/api/v1/query")
    assert response.status_code == 405 and error_code(response) == "method_not_allowed"


@pytest.mark.parametrize(
    ("token", "path", "method", "status"),
    [
        (None, "/api/v1/status", "GET", 401),
        ("wrong", "/api/v1/status", "GET", 401),
        (RO, "/api/v1/status", "GET", 200),
        (RW, "/api/v1/status", "GET", 200),
        (None, "/api/v1/query", "POST", 401),
        ("wrong", "/api/v1/query", "POST", 401),
        (RO, "/api/v1/query", "POST", 200),
        (RW, "/api/v1/query", "POST", 200),
        (None, "/api/v1/execute", "POST", 401),
        (RO, "/api/v1/execute", "POST", 403),
        (RW, "/api/v1/execute", "POST", 200),
        (None, "/metrics", "GET", 401),
        (RO, "/metrics", "GET", 200),
        (None, "/openapi.json", "GET", 401),
        (None, "/health", "GET", 200),
        (None, "/ready", "GET", 200),
    ],
)
def test_auth_matrix(node: Proc, token: str | None, path: str, method: str, status: int) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = None
    if path == "/api/v1/query":
        body = {"sql": "SELECT 1"}
    elif path == "/api/v1/execute":
        body = {"statements": [{"sql": "INSERT INTO scratch (note) VALUES ('auth')"}]}
    response = httpx.request(method, node.url + path, headers=headers, json=body)
    assert response.status_code == status, response.text
    if status == 401:
        assert error_code(response) == "unauthorized"


def test_metrics_count_requests_per_route(ro: httpx.Client) -> None:
    query(ro, "SELECT 1")
    text = ro.get("/metrics").text
    assert 'edgenode_http_requests_total{method="POST",route="/api/v1/query",status="200"}' in text
    assert "edgenode_db_size_bytes" in text
    assert "edgenode_query_duration_seconds_bucket" in text


def test_openapi_covers_every_route(ro: httpx.Client) -> None:
    spec = ro.get("/openapi.json").json()
    for path in ("/health", "/ready", "/api/v1/status", "/api/v1/query", "/api/v1/execute", "/metrics"):
        assert path in spec["paths"]
    assert "QueryRequest" in spec["components"]["schemas"]


def test_read_token_may_search_but_not_change_collections(ro: httpx.Client, rw: httpx.Client) -> None:
    spec = {"table": "prompt_embeddings", "column": "embedding", "dim": 384, "metric": "cosine"}
    refused = ro.put("/api/v1/collections/ro-attempt", json=spec)
    assert refused.status_code == 403 and error_code(refused) == "forbidden"
    assert ro.delete("/api/v1/collections/ro-attempt").status_code == 403
    searched = ro.post("/api/v1/collections/ro-attempt/search", json={"vector": [0.0] * 384, "k": 1})
    assert searched.status_code == 404  # allowed to search; the collection just does not exist
    created = rw.put("/api/v1/collections/prompts_vec", json=spec)
    assert created.status_code in (200, 201, 202), created.text
    assert ro.get("/api/v1/collections/prompts_vec").json()["name"] == "prompts_vec"


def test_routes_declare_the_access_a_token_needs() -> None:
    """The auth middleware asks the routes, not a list of paths: a POST that reads serves the read
    token, a plain route writes unless it is a GET, and a path no route matches needs write access."""

    async def endpoint(_: object) -> Response:
        return Response()

    access = AccessMap(
        [
            read_route("/reads", endpoint, methods=["POST"]),
            read_route("/things/{name}/search", endpoint, methods=["POST"]),
            write_route("/things/{name}", endpoint, methods=["PUT", "DELETE"]),
            Route("/plain", endpoint, methods=["GET", "POST"]),
        ]
    )
    assert not access.needs_write("POST", "/reads")
    assert not access.needs_write("POST", "/things/a/search")
    assert access.needs_write("PUT", "/things/a") and access.needs_write("DELETE", "/things/a")
    assert not access.needs_write("GET", "/plain") and access.needs_write("POST", "/plain")
    assert access.needs_write("POST", "/nowhere") and not access.needs_write("GET", "/nowhere")
