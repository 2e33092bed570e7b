"""Vector search through a real node process over HTTP, and the `edgenode vectors` CLI against it.

Uses `python -m edgenode serve` when the node mounts the vector component; until then the same
node app (edgenode.node.open_database + edgenode.api.create_app) is started with the component
added, by running this module as a script.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.procs import ROOT, Proc, free_port, start
from tests.test_vectors_support import clustered

DIM = 8


def _start(data: Path, tmp_path: Path, name: str) -> Proc:
    proc = start(["serve", "--data-dir", str(data)], tmp_path, name=name)
    if httpx.get(proc.url + "/api/v1/collections").status_code != 404:
        return proc
    proc.stop()
    port = free_port()
    launched = Proc(args=[], port=port, log_path=tmp_path / f"{name}-app.log")
    launched.popen = subprocess.Popen(
        [sys.executable, "-m", "tests.test_vectors_http", str(data), str(port)],
        cwd=ROOT,
        stdout=launched.log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(launched.url + "/health", timeout=1).status_code < 500:
                return launched
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(launched.log())


def _wait_ready(url: str, name: str, seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        info = httpx.get(f"{url}/api/v1/collections/{name}").json()
        if info["state"] == "ready" and info["progress"] >= 1:
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.05)


def _cli(url: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "edgenode", "vectors", "--url", url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Proc, Path]]:
    data = tmp_path / "data"
    proc = _start(data, tmp_path, "node")
    yield proc, data
    proc.stop()


def test_a_node_process_serves_vector_search_and_keeps_its_index_across_restarts(
    node: tuple[Proc, Path], tmp_path: Path
) -> None:
    proc, data = node
    base = clustered(500, DIM)
    rows = [
        {"sql": "INSERT INTO docs(id, emb, tag) VALUES (?, ?, ?)", "params": [i + 1, _b64(base[i]), "ab"[i % 2]]}
        for i in range(len(base))
    ]
    create = {"sql": f"CREATE TABLE docs(id INTEGER PRIMARY KEY, emb F32_BLOB({DIM}), tag TEXT)"}
    r = httpx.post(proc.url + "/api/v1/execute", json={"statements": [create, *rows]})
    assert r.status_code == 200, r.text
    created = json.loads(
        _cli(
            proc.url,
            "create",
            "docs",
            "--table",
            "docs",
            "--column",
            "emb",
            "--dim",
            str(DIM),
            "--filter-column",
            "tag",
        )
    )
    assert created["name"] == "docs"
    _wait_ready(proc.url, "docs")
    assert "docs\tdocs.emb\tdim=8" in _cli(proc.url, "list")
    hits = json.loads(_cli(proc.url, "search", "docs", "--vector", json.dumps(base[7].tolist()), "-k", "3"))
    assert hits["results"][0]["rowid"] == 8
    filtered = json.loads(
        _cli(
            proc.url, "search", "docs", "--vector", json.dumps(base[7].tolist()), "--filter", "tag = ?", "--param", "a"
        )
    )
    assert all(h["rowid"] % 2 == 1 for h in filtered["results"]) and len(filtered["results"]) == 10
    # a write through the REST API is searchable when the response returns
    probe = clustered(1, DIM, seed=42)[0]
    stmt = {"sql": "INSERT INTO docs(id, emb, tag) VALUES (?, ?, 'a')", "params": [9999, _b64(probe)]}
    httpx.post(proc.url + "/api/v1/execute", json={"statements": [stmt]}).raise_for_status()
    search = {"vector": probe.tolist(), "k": 1}
    assert httpx.post(proc.url + "/api/v1/collections/docs/search", json=search).json()["results"][0]["rowid"] == 9999
    bad = httpx.post(proc.url + "/api/v1/collections/docs/search", json={"vector": [1.0, 2.0], "k": 1})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "dimension_mismatch"
    proc.stop()
    again = _start(data, tmp_path, "again")
    try:
        deadline = time.monotonic() + 60
        while httpx.get(again.url + "/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        # ready means the persisted index is loaded: the first search after it is answered
        first = httpx.post(again.url + "/api/v1/collections/docs/search", json=search)
        assert first.status_code == 200 and first.json()["results"][0]["rowid"] == 9999
        info = _wait_ready(again.url, "docs")
        assert info["loaded_from_disk"] and info["builds"] == 0 and info["size"] == 501
        body = httpx.post(again.url + "/api/v1/collections/docs/search", json=search).json()
        assert body["results"][0]["rowid"] == 9999
    finally:
        again.stop()


def _b64(v: np.ndarray) -> dict[str, str]:
    return {"base64": base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()}


def _serve(data_dir: str, port: int) -> None:
    import uvicorn

    from edgenode.api import create_app
    from edgenode.config import Settings
    from edgenode.node import open_database
    from edgenode.vectors import component

    settings = Settings(data_dir=data_dir, port=port)
    db = open_database(settings)
    uvicorn.run(create_app(settings, db, components=[component(settings, db)]), host="127.0.0.1", port=port)


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))


def test_a_build_killed_mid_way_resumes_from_its_checkpoint_after_restart(tmp_path: Path) -> None:
    import libsql

    data = tmp_path / "data"
    data.mkdir()
    n = 120_000  # the node checkpoints a build every 50,000 rows
    base = clustered(n, DIM, seed=5)
    conn = libsql.connect(str(data / "edgenode.db"), isolation_level=None)
    conn.execute(f"CREATE TABLE docs(id INTEGER PRIMARY KEY, emb F32_BLOB({DIM}), tag TEXT)")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO docs(id, emb, tag) VALUES (?, ?, 'a')",
        [(i + 1, base[i].astype("<f4").tobytes()) for i in range(n)],
    )
    conn.execute("COMMIT")
    conn.close()
    proc = _start(data, tmp_path, "first")
    try:
        spec = {"table": "docs", "column": "emb", "dim": DIM}
        assert httpx.put(proc.url + "/api/v1/collections/docs", json=spec, timeout=30).status_code == 202
        deadline = time.monotonic() + 120
        while not list(data.glob("vectors/*/build.json")):  # the first checkpoint is written
            info = httpx.get(proc.url + "/api/v1/collections/docs").json()
            assert time.monotonic() < deadline and info["state"] != "ready", info
            time.sleep(0.01)
    finally:
        proc.kill()  # kill -9 in the middle of the build
    again = _start(data, tmp_path, "again")
    try:
        info = _wait_ready(again.url, "docs", seconds=180)
        assert info["resumed_from"] >= 50_000 and info["size"] == n, info
        search = {"vector": base[77_777].tolist(), "k": 1}
        assert (
            httpx.post(again.url + "/api/v1/collections/docs/search", json=search).json()["results"][0]["rowid"]
            == 77_778
        )
    finally:
        again.stop()
