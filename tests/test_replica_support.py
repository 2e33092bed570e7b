"""Helpers for the replica tests: a real `edgenode primary` and real replica nodes on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgenode.primary.client import execute as primary_execute
from tests.procs import Proc, start

TOKEN = "replica-test-token"
NODE_TOKEN = "replica-node-token"
AUTH = {"Authorization": f"Bearer {NODE_TOKEN}"}
PRIMARY_AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Short intervals keep the suite fast; max_lag well above them so a healthy node stays ready.
FAST = ["--sync-interval", "0.2", "--sync-timeout", "3", "--max-lag", "2"]


def start_primary(tmp_path: Path, *extra: str, name: str = "primary", port: int | None = None) -> Proc:
    args = ["primary", "--data-dir", str(tmp_path / name), "--auth-token", TOKEN, "--no-migrate", *extra]
    return start(args, tmp_path, name, port=port)


def start_node(tmp_path: Path, primary: Proc | str, *extra: str, name: str = "node", port: int | None = None) -> Proc:
    url = primary if isinstance(primary, str) else primary.url
    args = ["serve", "--data-dir", str(tmp_path / name), "--auth-token", NODE_TOKEN, "--primary-url", url]
    args += ["--primary-token", TOKEN, *FAST, *extra]
    return start(args, tmp_path, name, ready_path="/health", port=port)


def module_primary_and_node(name: str, *schema: str, node_args: tuple[str, ...] = ()) -> tuple[Any, Any, Any]:
    """Module-scoped fixtures `shared` (a directory), `primary` (`schema` written) and `node` (ready, started
    with `node_args`), for a module whose tests share one primary and one node (each test its own keys):
    process startup dominates. Use: `shared, primary, node = module_primary_and_node(...)`."""

    @pytest.fixture(scope="module")
    def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tmp_path_factory.mktemp(name)

    @pytest.fixture(scope="module")
    def primary(shared: Path) -> Iterator[Proc]:
        proc = start_primary(shared)
        if schema:
            primary_write(proc, *schema)
        yield proc
        proc.stop()

    @pytest.fixture(scope="module")
    def node(shared: Path, primary: Proc) -> Iterator[Proc]:
        proc = start_node(shared, primary, *node_args)
        wait_ready(proc)
        yield proc
        proc.stop()

    return shared, primary, node


def wait_ready(node: Proc, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = httpx.get(node.url + "/ready", timeout=2.0)
        if last.status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"{node.url} not ready after {timeout}s: {last.text if last else None}\n{node.log()[-3000:]}")


def execute(node: Proc, *statements: str | tuple[str, list[Any]], timeout: float = 15.0) -> httpx.Response:
    body = {"statements": [{"sql": s} if isinstance(s, str) else {"sql": s[0], "params": s[1]} for s in statements]}
    return httpx.post(node.url + "/api/v1/execute", json=body, headers=AUTH, timeout=timeout)


def query(node: Proc, sql: str, params: list[Any] | None = None, **fresh: int) -> httpx.Response:
    body: dict[str, Any] = {"sql": sql, "params": params or [], **fresh}
    return httpx.post(node.url + "/api/v1/query", json=body, headers=AUTH, timeout=15.0)


def rows(node: Proc, sql: str, params: list[Any] | None = None, **fresh: int) -> list[list[Any]]:
    response = query(node, sql, params, **fresh)
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def status(node: Proc) -> dict[str, Any]:
    response = httpx.get(node.url + "/api/v1/status", headers=AUTH, timeout=5.0)
    assert response.status_code == 200, response.text
    return response.json()["database"]


def primary_rows(primary: Proc, sql: str) -> list[tuple[Any, ...]]:
    return primary_execute(primary.url, [sql], TOKEN)[0]


def primary_write(primary: Proc, *statements: str | tuple[str, list[Any]]) -> None:
    primary_execute(primary.url, list(statements), TOKEN, transaction=True)


def eventually(check: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        else:
            if result is not False:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
