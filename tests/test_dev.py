"""`edgenode dev`: a local primary and a node synced to it, started and stopped as one command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.procs import ROOT, free_port


def _wait_for_line(log: Path, prefix: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line
        if proc.poll() is not None:
            raise AssertionError(f"edgenode dev exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    raise AssertionError(f"no {prefix!r} line within {timeout}s:\n{log.read_text()}")


def test_dev_runs_a_primary_and_a_synced_node_and_sigterm_stops_both(tmp_path: Path) -> None:
    port, primary_port = free_port(), free_port()
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "edgenode", "dev", "--data-dir", str(tmp_path / ".edgenode")),
                *("--port", str(port), "--primary-port", str(primary_port), "--sync-interval", "0.2"),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        token = _wait_for_line(log, "token", proc).split()[1]
        node_line = _wait_for_line(log, "node", proc)
        primary_line = _wait_for_line(log, "primary", proc)
        node_url, primary_url = node_line.split()[1], primary_line.split()[1]
        assert node_url == f"http://127.0.0.1:{port}" and primary_url == f"http://127.0.0.1:{primary_port}"
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(primary_url + "/health").status_code == 200
        assert httpx.get(node_url + "/ready").status_code == 200
        write = httpx.post(
            node_url + "/api/v1/execute",
            headers=auth,
            json={
                "statements": [
                    {"sql": "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)"},
                    {"sql": "INSERT INTO notes(body) VALUES (?)", "params": ["hello from dev"]},
                ]
            },
            timeout=15,
        )
        assert write.status_code == 200, write.text
        read = httpx.post(node_url + "/api/v1/query", headers=auth, json={"sql": "SELECT body FROM notes"})
        assert read.json()["rows"] == [["hello from dev"]]
        # Both halves are really separate: the primary has the row as well.
        assert (tmp_path / ".edgenode" / "primary").is_dir() and (tmp_path / ".edgenode" / "node").is_dir()
        status = httpx.get(node_url + "/api/v1/status", headers=auth).json()
        assert status["role"] == "replica" and status["database"]["primary_url"] == primary_url

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        for url in (node_url, primary_url):
            try:
                httpx.get(url + "/health", timeout=1)
            except httpx.TransportError:
                continue
            raise AssertionError(f"{url} still answers after edgenode dev stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
