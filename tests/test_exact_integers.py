"""64-bit integers stay exact on every path into and out of the node and the primary: REST
(`/api/v1/query`, `/api/v1/execute`), Hrana (v2 and v3 pipeline, v3 cursor) and npm
`@libsql/client`, on a standalone node, a replica node and `edgenode primary`; positional and
named parameters; untyped and INTEGER columns and bare expressions, `typeof` included.

The PyPI `libsql` binding the node runs on binds any int beyond 32 bits as REAL (`edgenode.binding`)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.procs import Proc, start
from tests.test_node_hrana_support import JS_DIR, needs_node
from tests.test_replica_support import NODE_TOKEN, TOKEN, start_node, start_primary, wait_ready

VALUES = [2**31, -(2**31), 2**31 - 1, -(2**31) - 1, 2**53 - 1, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63)]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Proc, str]]]:
    tmp = tmp_path_factory.mktemp("ints")
    standalone = start(
        ["serve", "--data-dir", str(tmp / "alone"), "--auth-token", NODE_TOKEN], tmp, "alone", ready_path="/ready"
    )
    primary = start_primary(tmp)
    replica = start_node(tmp, primary)
    try:
        wait_ready(replica)
        yield {"standalone": (standalone, NODE_TOKEN), "replica": (replica, NODE_TOKEN), "primary": (primary, TOKEN)}
    finally:
        for proc in (replica, primary, standalone):
            proc.stop()


def hrana(proc: Proc, token: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(proc.url + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def integer(value: int) -> dict[str, str]:
    return {"type": "integer", "value": str(value)}


@needs_node
@pytest.mark.parametrize("where", ["standalone", "replica", "primary"])
def test_npm_libsql_client_bigints_are_exact_in_every_column_and_expression(
    servers: dict[str, tuple[Proc, str]], where: str, tmp_path: Path
) -> None:
    proc, token = servers[where]
    env = {
        **os.environ,
        "URL": proc.url,
        "TOKEN": token,
        "TABLE": f"js_{where}",
        "VALUES": json.dumps([str(v) for v in VALUES]),
    }
    run = subprocess.run(
        ["node", str(JS_DIR / "scripts" / "exact_integers.cjs")],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    exact = [[str(v), "integer"] for v in VALUES]
    assert out["bare"] == exact
    assert out["named"] == [[str(v), "integer", str(v)] for v in VALUES]
    # 0 - (-2**63) overflows to REAL in SQLite itself, as it would with any binding.
    assert out["minus"][:-1] == [[str(-v), "integer"] for v in VALUES[:-1]]
    assert out["stored"] == exact
    assert out["typed"] == exact
    assert out["where"] == ["1"] * len(VALUES)
    assert out["inTx"] == "0"


@pytest.mark.parametrize("where", ["standalone", "replica", "primary"])
def test_raw_hrana_pipelines_and_cursor_keep_integers_exact(servers: dict[str, tuple[Proc, str]], where: str) -> None:
    proc, token = servers[where]
    table = f"raw_{where}"
    requests: list[dict[str, Any]] = [
        {"type": "execute", "stmt": {"sql": f"create table {table}(k integer primary key, u)"}}
    ]
    for k, value in enumerate(VALUES):
        requests.append(
            {
                "type": "execute",
                "stmt": {"sql": f"insert into {table} values (?, ?)", "args": [integer(k), integer(value)]},
            }
        )
        requests.append(
            {
                "type": "execute",
                "stmt": {
                    "sql": "select :a, typeof(:a), $b - 1",
                    "named_args": [
                        {"name": ":a", "value": integer(value)},
                        {"name": "$b", "value": integer(value)},
                    ],
                },
            }
        )
    for version in ("v2", "v3"):
        response = hrana(proc, token, f"/{version}/pipeline", {"baton": None, "requests": requests})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert all(r["type"] == "ok" for r in results[1:]), results
        selects = [r["response"]["result"]["rows"][0] for r in results[2::2]]
        for value, row in zip(VALUES, selects, strict=True):
            assert row[0] == integer(value) and row[1]["value"] == "integer"
            if value != -(2**63):  # -2**63 - 1 is REAL in SQLite itself
                assert row[2] == integer(value - 1)
        requests = requests[1:]
        requests = [{"type": "execute", "stmt": {"sql": f"delete from {table}"}}, *requests]
    batch = {
        "steps": [
            {"stmt": {"sql": f"select u, typeof(u) from {table} order by k"}},
            {"stmt": {"sql": "select ?, typeof(?)", "args": [integer(-(2**63)), integer(2**63 - 1)]}},
        ]
    }
    response = hrana(proc, token, "/v3/cursor", {"baton": None, "batch": batch})
    assert response.status_code == 200, response.text
    rows = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    cells = [entry["row"] for entry in rows if entry.get("type") == "row"]
    assert cells[: len(VALUES)] == [[integer(v), {"type": "text", "value": "integer"}] for v in VALUES]
    assert cells[len(VALUES)] == [integer(-(2**63)), {"type": "text", "value": "integer"}]


@pytest.mark.parametrize("where", ["standalone", "replica"])
def test_rest_query_and_execute_keep_integers_exact(servers: dict[str, tuple[Proc, str]], where: str) -> None:
    proc, token = servers[where]
    table = f"rest_{where}"
    with httpx.Client(base_url=proc.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        created = client.post(
            "/api/v1/execute", json={"statements": [{"sql": f"create table {table}(k, u, i integer)"}]}
        )
        assert created.status_code == 200, created.text
        statements = [
            {"sql": f"insert into {table} values (?, ?, ?)", "params": [k, v, v]}
            if k % 2
            else {"sql": f"insert into {table} values (:k, :v, :v)", "params": {"k": k, "v": v}}
            for k, v in enumerate(VALUES)
        ]
        written = client.post("/api/v1/execute", json={"statements": statements})
        assert written.status_code == 200, written.text
        for value in VALUES:
            named = client.post("/api/v1/query", json={"sql": "select :a, typeof(:a)", "params": {"a": value}})
            assert named.json()["rows"] == [[value, "integer"]], named.text
            positional = client.post("/api/v1/query", json={"sql": "select ?, typeof(?), 1 - ?", "params": [value] * 3})
            row = positional.json()["rows"][0]
            assert row[:2] == [value, "integer"], positional.text
            if value != -(2**63):
                assert row[2] == 1 - value
            found = client.post(
                "/api/v1/query",
                json={"sql": f"select count(*) from {table} where u = ?1 and i = ?1", "params": [value]},
            )
            assert found.json()["rows"] == [[1]], found.text
        stored = client.post(
            "/api/v1/query", json={"sql": f"select u, typeof(u), i, typeof(i) from {table} order by k"}
        )
        assert stored.json()["rows"] == [[v, "integer", v, "integer"] for v in VALUES]
