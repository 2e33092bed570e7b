"""Turso Sync and libSQL's sync protocol meet: each side says at once which protocol it found.

Real clients and servers: PyPI `pyturso` (`turso.sync`) and npm `@tursodatabase/sync` against
`edgenode primary`; `edgenode serve --primary-url` against `tursodb --sync-server` (npm `turso`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import turso.sync

from tests.procs import ROOT, Proc, free_port, start
from tests.test_node_hrana_support import JS_DIR, needs_node
from tests.test_replica_support import AUTH, FAST, start_node, start_primary, wait_ready

TURSO_BIN = JS_DIR / "node_modules" / ".bin" / "turso"
needs_turso = pytest.mark.skipif(not TURSO_BIN.exists(), reason="npm turso missing (make test installs it)")


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[Proc]:
    proc = start(["primary", "--data-dir", str(tmp_path / "p"), "--no-migrate"], tmp_path, "primary")
    yield proc
    proc.stop()


def assert_names_both_protocols(message: str) -> None:
    assert "501" in message
    assert "edgenode primary" in message and "libSQL's sync protocol" in message
    assert "does not serve Turso Sync" in message


def test_pyturso_sync_gets_a_clear_error_from_the_primary_at_once(primary: Proc, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(Exception) as exc:
        turso.sync.connect(str(tmp_path / "local.db"), primary.url)
    assert time.monotonic() - started < 5
    assert_names_both_protocols(str(exc.value))
    assert primary.log().count("POST /pull-updates") == 1  # asked once, not retried


@needs_node
def test_npm_tursodatabase_sync_gets_a_clear_error_from_the_primary(primary: Proc, tmp_path: Path) -> None:
    env = {**os.environ, "URL": primary.url, "DB_PATH": str(tmp_path / "js.db")}
    run = subprocess.run(
        ["node", str(JS_DIR / "scripts" / "turso_sync_connect.mjs")],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["connected"] is False
    assert_names_both_protocols(out["error"])


@contextlib.contextmanager
def turso_sync_server(tmp_path: Path, port: int | None = None) -> Iterator[str]:
    """`tursodb --sync-server` from npm `turso`, on loopback."""
    port = port or free_port()
    log = (tmp_path / "turso.log").open("ab")
    popen = subprocess.Popen(
        [str(TURSO_BIN), "--sync-server", f"127.0.0.1:{port}", str(tmp_path / "turso.db")],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        # The npm `turso` command is a Node wrapper running the real server as its child: its own
        # process group lets the fixture end both.
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert popen.poll() is None, (tmp_path / "turso.log").read_text()
            try:
                httpx.post(url + "/pull-updates", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "tursodb --sync-server did not start"
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(popen.pid, signal.SIGTERM)
        popen.wait(10)
        log.close()


@pytest.fixture
def turso_server(tmp_path: Path) -> Iterator[str]:
    with turso_sync_server(tmp_path) as url:
        yield url


@needs_turso
def test_a_node_pointed_at_a_turso_sync_server_stops_at_once_saying_so(turso_server: str, tmp_path: Path) -> None:
    args = ["serve", "--data-dir", str(tmp_path / "n"), "--primary-url", turso_server, *FAST]
    args += ["--host", "127.0.0.1", "--port", str(free_port())]
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "edgenode", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    assert time.monotonic() - started < 20
    output = run.stdout + run.stderr
    assert "is a Turso Sync server" in output and "not a libSQL sync primary" in output
    assert output.count("GET /info answered") == 0  # diagnosed on the first answer, no retries


@needs_turso
def test_a_node_whose_primary_url_became_a_turso_sync_server_says_so_on_ready(tmp_path: Path) -> None:
    port = free_port()
    primary = start_primary(tmp_path, port=port)
    node = start_node(tmp_path, primary)
    try:
        wait_ready(node)
    finally:
        node.stop()
        primary.stop()
    # The same URL now answers as a Turso Sync server: the replica keeps serving reads, /ready says why
    # it is not ready, and nothing is retried.
    with turso_sync_server(tmp_path, port) as url:
        assert url == primary.url
        node = start_node(tmp_path, url)
        try:
            deadline = time.monotonic() + 15
            while True:
                ready = httpx.get(node.url + "/ready", timeout=5)
                if "Turso Sync server" in ready.text or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert ready.status_code == 503
            assert "is a Turso Sync server" in ready.json()["reason"], ready.text
            time.sleep(1.5)  # several sync intervals
            status = httpx.get(node.url + "/api/v1/status", headers=AUTH, timeout=5).json()["database"]
            assert status["state"] == "halted" and status["consecutive_failures"] == 1, status
        finally:
            node.stop()
