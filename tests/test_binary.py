"""Smoke test of the single-file binary (`make binary`), run as a new user would run it: a clean
environment (`env -i`: no PATH, no HOME, no venv) and a working directory outside the checkout.

Set EDGENODE_BINARY to the file (`.ci/run` builds it and does); without it these tests skip.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from edgenode.cli import LazyGroup
from tests.installed import Installed, descendants, start_dev
from tests.test_process_model import check_dev_leaves_no_child_after, check_serve_leaves_no_child_after_kill_9

BINARY = os.environ.get("EDGENODE_BINARY", "")
pytestmark = pytest.mark.skipif(not BINARY, reason="set EDGENODE_BINARY=dist/edgenode-... (`.ci/run` does)")
TOKEN = "smoke-token-0123456789"


@pytest.fixture
def edgenode(tmp_path: Path) -> Installed:
    return Installed([str(Path(BINARY).resolve())], cwd=tmp_path, env={})


def unpacked_runtimes() -> set[str]:
    """PyInstaller one-file builds unpack to $TMPDIR/_MEI*; this binary must never do so."""
    return {p.name for p in Path("/tmp").glob("_MEI*")}


def test_help_lists_every_command_and_version_carries_the_engines(edgenode: Installed) -> None:
    run = edgenode.run("--help")
    assert run.returncode == 0, run.stderr
    listed = {line.split()[0] for line in run.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == {*LazyGroup.lazy, "version"}
    for command in sorted(listed):
        assert edgenode.run(command, "--help").returncode == 0, command
    versions = dict(line.split(" ", 1) for line in edgenode.run("version").stdout.splitlines())
    assert versions["edgenode"] and "not installed" not in versions.values(), versions


def test_serve_answers_health_ready_a_query_and_an_execute(edgenode: Installed, tmp_path: Path) -> None:
    before = unpacked_runtimes()
    node = edgenode.start("serve", "--data-dir", str(tmp_path / "data"), name="node", ready="/ready")
    try:
        assert httpx.get(node.url + "/health").status_code == 200
        write = {"statements": [{"sql": "INSERT INTO users (id, email) VALUES (?, ?)", "params": ["u1", "a@x"]}]}
        assert httpx.post(node.url + "/api/v1/execute", json=write).status_code == 200
        read = httpx.post(node.url + "/api/v1/query", json={"sql": "SELECT email FROM users"})
        assert read.json()["rows"] == [["a@x"]]
        migrations = httpx.post(node.url + "/api/v1/query", json={"sql": "SELECT count(*) FROM _edgenode_migrations"})
        assert migrations.json()["rows"][0][0] >= 3
    finally:
        node.stop()
    assert unpacked_runtimes() == before


def test_vectors_create_ann_search_and_filtered_exact_search(edgenode: Installed, tmp_path: Path) -> None:
    import base64

    import numpy as np

    node = edgenode.start("serve", "--data-dir", str(tmp_path / "data"), name="node", ready="/ready")
    try:
        rng = np.random.default_rng(5)
        base = rng.standard_normal((300, 8)).astype("<f4")
        rows = [
            {
                "sql": "INSERT INTO docs(id, emb, tag) VALUES (?, ?, ?)",
                "params": [i + 1, {"base64": base64.b64encode(base[i].tobytes()).decode()}, "ab"[i % 2]],
            }
            for i in range(len(base))
        ]
        create = {"sql": "CREATE TABLE docs(id INTEGER PRIMARY KEY, emb F32_BLOB(8), tag TEXT)"}
        r = httpx.post(node.url + "/api/v1/execute", json={"statements": [create, *rows]})
        assert r.status_code == 200, r.text
        vectors = ["vectors", "--url", node.url]
        made = edgenode.run(
            *vectors, "create", "docs", "--table", "docs", "--column", "emb", "--dim", "8", "--filter-column", "tag"
        )
        assert made.returncode == 0, made.stderr
        deadline = time.monotonic() + 60
        while httpx.get(node.url + "/api/v1/collections/docs").json()["state"] != "ready":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        probe = json.dumps(base[7].tolist())
        ann = edgenode.run(*vectors, "search", "docs", "--vector", probe, "-k", "3", "--mode", "ann")
        assert ann.returncode == 0, ann.stderr
        hits = json.loads(ann.stdout)
        assert hits["mode"] == "ann" and hits["results"][0]["rowid"] == 8
        exact = edgenode.run(
            *vectors, "search", "docs", "--vector", probe, "--filter", "tag = ?", "--param", "a", "--mode", "exact"
        )
        assert exact.returncode == 0, exact.stderr
        filtered = json.loads(exact.stdout)
        assert filtered["mode"] == "exact" and len(filtered["results"]) == 10
        assert all(hit["rowid"] % 2 == 1 for hit in filtered["results"])
    finally:
        node.stop()


def _replica_round_trip(edgenode: Installed, tmp_path: Path, token: str | None, ready_timeout: float = 60) -> None:
    auth = ["--auth-token", token] if token else []
    primary = edgenode.start("primary", "--data-dir", str(tmp_path / "primary"), *auth, name="primary")
    try:
        follow = ["--primary-url", primary.url, *(["--primary-token", token] if token else [])]
        data = ["--data-dir", str(tmp_path / "node")]
        node = edgenode.start(
            "serve", *data, *follow, "--sync-interval", "0.2", name="node", ready="/ready", timeout=ready_timeout
        )
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            write = {"statements": [{"sql": "INSERT INTO users (id, email) VALUES (?, ?)", "params": ["r1", "r@x"]}]}
            r = httpx.post(node.url + "/api/v1/execute", json=write, headers=headers, timeout=30)
            assert r.status_code == 200, r.text
            read = httpx.post(node.url + "/api/v1/query", json={"sql": "SELECT email FROM users"}, headers=headers)
            assert read.json()["rows"] == [["r@x"]], read.text
            status = httpx.get(node.url + "/api/v1/status", headers=headers).json()
            assert status["role"] == "replica"
        finally:
            node.stop()
    finally:
        primary.stop()


def test_a_replica_follows_a_primary_with_a_token(edgenode: Installed, tmp_path: Path) -> None:
    _replica_round_trip(edgenode, tmp_path, TOKEN)


def test_a_replica_follows_a_primary_without_a_token(edgenode: Installed, tmp_path: Path) -> None:
    _replica_round_trip(edgenode, tmp_path, None, ready_timeout=30)


def test_dev_starts_and_stops_cleanly(edgenode: Installed, tmp_path: Path) -> None:
    dev = start_dev(edgenode, tmp_path / ".edgenode")
    auth = {"Authorization": f"Bearer {dev.token}"}
    assert httpx.get(dev.node_url + "/ready", headers=auth).status_code == 200
    assert len(descendants(dev.popen.pid)) >= 4
    dev.popen.send_signal(signal.SIGINT)
    assert dev.popen.wait(60) == 0, dev.log.read_text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["sigint", "sigterm", "kill-9"])
def test_no_process_of_dev_outlives_it(edgenode: Installed, tmp_path: Path, signum: int) -> None:
    before = unpacked_runtimes()
    check_dev_leaves_no_child_after(edgenode, tmp_path, signum)
    assert unpacked_runtimes() == before


def test_no_child_of_a_node_outlives_its_kill_9(edgenode: Installed, tmp_path: Path) -> None:
    check_serve_leaves_no_child_after_kill_9(edgenode, tmp_path)


def test_the_first_start_unpacks_once_and_later_starts_reuse_it(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    edgenode = Installed([str(Path(BINARY).resolve())], cwd=tmp_path, env={"EDGENODE_RUNTIME_DIR": str(runtime)})
    assert edgenode.run("version").returncode == 0
    (unpacked,) = runtime.iterdir()
    stamp = unpacked.stat().st_mtime_ns
    for _ in range(2):
        assert edgenode.run("version").returncode == 0
    assert [p.name for p in runtime.iterdir()] == [unpacked.name] and unpacked.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_a_first_start_stopped_mid_unpack_leaves_no_partial_runtime(tmp_path: Path, signum: int) -> None:
    runtime = tmp_path / "runtime"
    env = {"EDGENODE_RUNTIME_DIR": str(runtime)}
    popen = subprocess.Popen([str(Path(BINARY).resolve()), "version"], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not (runtime.exists() and any(runtime.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.005)
    popen.send_signal(signum)
    popen.wait(30)
    if signum == signal.SIGKILL:
        # Nothing runs after a kill -9: the next start removes what it left (and unpacks afresh).
        assert subprocess.run([str(Path(BINARY).resolve()), "version"], env=env, capture_output=True).returncode == 0
    deadline = time.monotonic() + 10
    while [p for p in runtime.iterdir() if p.name.startswith(".unpack")] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p.name for p in runtime.iterdir() if p.name.startswith(".unpack")] == []


def test_a_start_removes_builds_unused_for_30_days_unless_a_process_runs_from_them(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    month_ago = time.time() - 40 * 86400

    def build(name: str, last_used: float) -> Path:
        path = runtime / name
        path.mkdir(parents=True)
        (path / "edgenode").write_text("#!/bin/sh\nsleep 60\n")
        (path / "edgenode").chmod(0o755)
        (path / ".used").touch()
        os.utime(path / ".used", (last_used, last_used))
        return path

    stale, busy, recent = (
        build("0.0.1-stale", month_ago),
        build("0.0.1-busy", month_ago),
        build("0.0.1-recent", time.time()),
    )
    notes = runtime / "notes"
    notes.mkdir()
    os.utime(notes, (month_ago, month_ago))
    env = {"EDGENODE_RUNTIME_DIR": str(runtime)}
    running = subprocess.Popen([str(busy / "edgenode")], start_new_session=True)
    try:
        assert subprocess.run([str(Path(BINARY).resolve()), "version"], env=env, capture_output=True).returncode == 0
        assert not stale.exists()
        assert busy.exists() and recent.exists() and notes.exists()
    finally:
        os.killpg(running.pid, signal.SIGKILL)
        running.wait()
    assert subprocess.run([str(Path(BINARY).resolve()), "version"], env=env, capture_output=True).returncode == 0
    assert not busy.exists() and recent.exists() and notes.exists()
