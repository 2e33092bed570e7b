"""/openapi.json of node and primary: every mounted route is described, and schemathesis (real, from
PyPI) finds no server error and no response that disagrees with the document, on real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import msgspec
import pytest

from edgenode.api import openapi
from edgenode.api.sync import SyncComponent
from edgenode.config import Settings
from edgenode.node import build_node_app
from edgenode.primary.app import create_app as create_primary_app
from tests.procs import start

RW = "schemathesis-rw-token"
SEED = "20261202"
# Per operation; both servers at once: ~1,600 cases in about a minute on this shared 2-core machine
# (the coverage phase alone would take ~70 s per server).
MAX_EXAMPLES = "60"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def documented(document: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, methods in document["paths"].items() for method in methods}


def test_every_mounted_route_of_node_and_primary_is_described(tmp_path: Path) -> None:
    node = build_node_app(Settings(data_dir=str(tmp_path / "node")))
    assert openapi.mounted_operations(node.routes) == documented(node.state.openapi)
    assert ("post", "/api/v1/sync") not in documented(node.state.openapi)  # a standalone node has no sync
    primary = create_primary_app(Settings(data_dir=str(tmp_path / "primary")))
    assert openapi.mounted_operations(primary.routes) == documented(msgspec.json.decode(primary.state.openapi))
    replica_routes = SyncComponent(None).routes()  # type: ignore[arg-type]
    assert openapi.mounted_operations(replica_routes) <= documented(openapi.build(openapi.OPERATIONS))


def test_the_schema_refuses_what_the_server_refuses(tmp_path: Path) -> None:
    node = build_node_app(Settings(data_dir=str(tmp_path / "node")))
    schemas = node.state.openapi["components"]["schemas"]
    assert schemas["QueryRequest"]["properties"]["sql"]["minLength"] == 1
    assert schemas["Statement"]["properties"]["sql"]["minLength"] == 1
    assert schemas["QueryRequest"].get("additionalProperties") is False
    paths = node.state.openapi["paths"]
    for path in ("/api/v1/collections/{name}/search", "/v2/pipeline", "/v3/cursor", "/v1/batch", "/metrics"):
        assert path in paths


def test_the_change_streams_websocket_is_described_and_a_plain_get_of_it_is_426(tmp_path: Path) -> None:
    node = build_node_app(Settings(data_dir=str(tmp_path / "node")))
    described = node.state.openapi["paths"]["/api/v1/changes/ws"]["get"]
    assert {p["name"]: p["required"] for p in described["parameters"]} == {
        "tables": True,
        "where": False,
        "after": False,
        "access_token": False,
    }
    assert "101" in described["responses"] and "426" in described["responses"]
    proc = start(["serve", "--data-dir", str(tmp_path / "data")], tmp_path, "node", ready_path="/ready")
    try:
        response = httpx.get(proc.url + "/api/v1/changes/ws?tables=t", timeout=30)
        assert response.status_code == 426 and response.headers["upgrade"] == "websocket", response.text
        assert response.json()["error"]["code"] == "upgrade_required"
    finally:
        proc.stop()


def test_an_empty_statement_is_refused_as_the_schema_says(tmp_path: Path) -> None:
    proc = start(["serve", "--data-dir", str(tmp_path / "data")], tmp_path, "node", ready_path="/ready")
    try:
        response = httpx.post(proc.url + "/api/v1/query", json={"sql": ""}, timeout=30)
        assert response.status_code == 422 and response.json()["error"]["field"] == "$.sql"
        response = httpx.post(proc.url + "/api/v1/execute", json={"statements": [{"sql": ""}]}, timeout=30)
        assert response.status_code == 422 and response.json()["error"]["field"] == "$.statements[0].sql"
    finally:
        proc.stop()


def schemathesis(url: str, log: Path) -> subprocess.Popen[bytes]:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        "examples,fuzzing",
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        SEED,
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--no-color",
        "--header",
        f"Authorization: Bearer {RW}",
        # Turso Sync's path on the primary answers 501 by design (it names the protocol to use instead).
        "--exclude-path",
        "/pull-updates",
    ]
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=log.parent)


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(tmp_path: Path) -> None:
    token = ["--auth-token", RW]
    node = start(["serve", "--data-dir", str(tmp_path / "node"), *token], tmp_path, "node", ready_path="/ready")
    primary = start(["primary", "--data-dir", str(tmp_path / "primary"), *token], tmp_path, "primary")
    servers = {"node": node, "primary": primary}
    try:
        runs = {name: schemathesis(proc.url, tmp_path / f"{name}.st.log") for name, proc in servers.items()}
        failures = []
        for name, run in runs.items():
            try:
                code = run.wait(240)
            except subprocess.TimeoutExpired:
                run.kill()
                code = "timeout"
            output = (tmp_path / f"{name}.st.log").read_text(errors="replace")
            if code != 0 or "passed" not in output:
                failures.append(f"--- {name}: exit {code}\n{output[-6000:]}")
        assert not failures, "\n".join(failures)
    finally:
        node.stop()
        primary.stop()
    for proc in (node, primary):
        assert "Traceback" not in proc.log(), proc.log()[-4000:]


@pytest.mark.parametrize("path", ["/openapi.json"])
def test_the_primary_serves_its_document_behind_its_token(tmp_path: Path, path: str) -> None:
    proc = start(["primary", "--data-dir", str(tmp_path / "p"), "--auth-token", RW], tmp_path, "primary")
    try:
        assert httpx.get(proc.url + path, timeout=10).status_code == 401
        document = httpx.get(proc.url + path, headers={"Authorization": f"Bearer {RW}"}, timeout=10).json()
        assert "/sync/{generation}/{start}/{end}" in document["paths"] and "/v3/cursor" in document["paths"]
    finally:
        proc.stop()
