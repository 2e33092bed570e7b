"""Bootstrap against a real `edgenode primary`: Range requests on /export, and a node that resumes
an interrupted download instead of starting over."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec

from edgenode.replica.bootstrap import PARTIAL, STATE, PartialState
from edgenode.replica.files import ReplicaFiles
from tests.procs import Proc
from tests.test_replica_support import (
    PRIMARY_AUTH,
    primary_write,
    rows,
    start_node,
    start_primary,
    status,
    wait_ready,
)


def _fill(primary: Proc) -> None:
    primary_write(primary, "CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB)")
    primary_write(primary, *[("INSERT INTO blobs(data) VALUES (randomblob(50000))", [])] * 20)
    # A rollover folds the rows into the base file that /export serves.
    httpx.post(primary.url + "/rollover", headers=PRIMARY_AUTH, timeout=30).raise_for_status()


def test_export_serves_ranges_for_resumed_downloads(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    try:
        _fill(primary)
        url = f"{primary.url}/export/2"
        whole = httpx.get(url, headers=PRIMARY_AUTH, timeout=30)
        assert whole.status_code == 200 and len(whole.content) > 1_000_000
        assert whole.headers["accept-ranges"] == "bytes"
        tail = httpx.get(url, headers={**PRIMARY_AUTH, "range": "bytes=100000-"}, timeout=30)
        assert tail.status_code == 206
        assert tail.content == whole.content[100_000:]
        assert tail.headers["content-range"] == f"bytes 100000-{len(whole.content) - 1}/{len(whole.content)}"
        past = httpx.get(url, headers={**PRIMARY_AUTH, "range": f"bytes={len(whole.content)}-"})
        assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(whole.content)}"
    finally:
        primary.stop()


def test_a_node_resumes_an_interrupted_bootstrap_where_it_stopped(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    try:
        _fill(primary)
        whole = httpx.get(f"{primary.url}/export/2", headers=PRIMARY_AUTH, timeout=30).content
        # What a node killed halfway through its download leaves behind.
        files = ReplicaFiles(tmp_path / "node")
        files.staging.mkdir(parents=True)
        half = (len(whole) // 2) // 4096 * 4096
        (files.staging / PARTIAL).write_bytes(whole[:half])
        (files.staging / STATE).write_bytes(msgspec.json.encode(PartialState(primary.url, 2)))
        node = start_node(tmp_path, primary)
        try:
            wait_ready(node)
            bootstrap = status(node)["bootstrap"]
            assert bootstrap["resumed_from_bytes"] == half
            assert bootstrap["bytes_done"] == bootstrap["bytes_total"] == len(whole)
            assert bootstrap["restarted_downloads"] == 0
            assert rows(node, "SELECT count(*), sum(length(data)) FROM blobs") == [[20, 1_000_000]]
            assert not (files.staging / PARTIAL).exists()
        finally:
            node.stop()
    finally:
        primary.stop()
