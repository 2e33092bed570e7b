"""A replica of a primary that has no token (the normal local setup) syncs: the libsql client's empty
`Authorization: Bearer ` header is not forwarded as a malformed header."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.procs import start
from tests.test_replica_support import AUTH, FAST, rows, wait_ready


def test_a_replica_of_a_primary_without_a_token_syncs_and_writes(tmp_path: Path) -> None:
    primary = start(["primary", "--data-dir", str(tmp_path / "p"), "--no-migrate"], tmp_path, "primary")
    node = start(
        ["serve", "--data-dir", str(tmp_path / "n"), "--primary-url", primary.url, *FAST],
        tmp_path,
        "node",
    )
    try:
        wait_ready(node, timeout=30)
        body = {"statements": [{"sql": "create table t(a)"}, {"sql": "insert into t values (1)"}]}
        written = httpx.post(node.url + "/api/v1/execute", json=body, headers=AUTH, timeout=15)
        assert written.status_code == 200, written.text
        assert rows(node, "select a from t") == [[1]]
        assert "LocalProtocolError" not in node.log()
    finally:
        node.stop()
        primary.stop()
