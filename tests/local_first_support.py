"""Helpers for the local-first tests: table checksums on primary and nodes, outbox polling."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.procs import Proc
from tests.test_replica_support import AUTH, primary_rows, rows

LF = ["--write-mode", "local-first"]


def _digest(table_rows: list[Any]) -> str:
    return hashlib.sha256(json.dumps([list(r) for r in table_rows]).encode()).hexdigest()


def _checksums(query: Callable[[str], list[Any]]) -> dict[str, str]:
    """Each user table's rows in rowid order, hashed, read through `query` (a node's or the primary's)."""
    tables = [r[0] for r in query("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
    return {
        t: _digest(query(f'SELECT * FROM "{t}" ORDER BY rowid'))
        for t in tables
        if not t.startswith("sqlite_") and not t.startswith("_edgenode_idempotency")
    }


def node_checksums(node: Proc) -> dict[str, str]:
    return _checksums(lambda sql: rows(node, sql))


def primary_checksums(primary: Proc) -> dict[str, str]:
    return _checksums(lambda sql: primary_rows(primary, sql))


def outbox(node: Proc) -> dict[str, Any]:
    response = httpx.get(node.url + "/api/v1/outbox", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def conflicts(node: Proc) -> list[dict[str, Any]]:
    response = httpx.get(node.url + "/api/v1/conflicts", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["conflicts"]


def converge(primary: Proc, *nodes: Proc, timeout: float = 60.0) -> dict[str, str]:
    """Wait until every node's outbox is drained and its tables equal the primary's; the checksums."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        states = [outbox(n) for n in nodes]
        if all(s["pending"] == 0 and s["pushed_not_pulled"] == 0 for s in states):
            theirs = primary_checksums(primary)
            mine = [node_checksums(n) for n in nodes]
            if all(m == theirs for m in mine):
                return theirs
            last = (theirs, mine)
        else:
            last = states
        time.sleep(0.2)
    raise AssertionError(f"nodes did not converge in {timeout}s: {last}")
