"""`edgenode backup` / `edgenode restore` / `POST /api/v1/backup` against real node processes, with
real kill -9 of the backup and restore commands."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import apsw
import httpx
import pytest

from edgenode.backup import RESTORE_MARKER, verify
from edgenode.primary.client import execute as primary_execute
from tests.conftest import RO, RW, data_dir
from tests.procs import ROOT, Proc, start

TOKEN = "backup-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def edgenode(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgenode", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgenode", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def make_database(path: Path, rows: int, size: int = 4000) -> dict[str, int]:
    """A WAL-mode database like a node's, `rows` rows of `size` random bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB)")
    conn.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)")
    with conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO t(id, data) SELECT i, randomblob(?) FROM n",
            (rows, size),
        )
        conn.execute("INSERT INTO notes(body) VALUES ('a'), ('b')")
    conn.close()
    return {"notes": 2, "t": rows}


def ids_in(path: Path) -> set[int]:
    conn = apsw.Connection(f"file:{path}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM t")}
    finally:
        conn.close()


class HttpWriteLoad:
    """Inserts one row per request through the REST API; remembers when each was acknowledged."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.client = httpx.Client(base_url=url, headers=headers, timeout=10)
        self.acked: list[tuple[int, float]] = []
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> HttpWriteLoad:
        self._thread.start()
        return self

    def _run(self) -> None:
        next_id = 1_000_000
        while not self._stop.is_set():
            sent = time.monotonic()
            r = self.client.post(
                "/api/v1/execute",
                json={
                    "statements": [{"sql": "INSERT INTO t(id, data) VALUES (?, randomblob(200))", "params": [next_id]}]
                },
            )
            assert r.status_code == 200, r.text
            self.acked.append((next_id, time.time()))
            self.latencies.append(time.monotonic() - sent)
            next_id += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()


def test_backup_under_write_load_holds_every_write_acknowledged_before_its_snapshot(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_database(data / "edgenode.db", rows=6000)
    node = start(["serve", "--data-dir", str(data), "--auth-token", TOKEN], tmp_path, "node", ready_path="/ready")
    try:
        load = HttpWriteLoad(node.url, AUTH).start()
        time.sleep(0.5)
        result = edgenode("backup", "--data-dir", str(data), "--to", str(tmp_path / "b.db"), "--json")
        time.sleep(0.3)
        load.stop()
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert "backup:" in result.stderr and "100.0%" in result.stderr  # progress
        assert report["kind"] == "standalone" and report["generation"] is None
        present = ids_in(tmp_path / "b.db")
        before = [i for i, at in load.acked if at < report["snapshot_at"]]
        after = [i for i, at in load.acked if at >= report["snapshot_at"]]
        assert before and after, "the load must run across the backup"
        assert set(before) <= present
        assert report["tables"]["t"] == len(present)
        assert not (tmp_path / ".b.db.partial").exists()
        assert not (tmp_path / "b.db-wal").exists()
    finally:
        node.stop()
    restored = tmp_path / "restored"
    result = edgenode("restore", "--from", str(tmp_path / "b.db"), "--data-dir", str(restored))
    assert result.returncode == 0, result.stderr
    node = start(["serve", "--data-dir", str(restored), "--auth-token", TOKEN], tmp_path, "r", ready_path="/ready")
    try:
        r = httpx.post(node.url + "/api/v1/query", json={"sql": "SELECT count(*) FROM t"}, headers=AUTH)
        assert r.json()["rows"] == [[report["tables"]["t"]]]
    finally:
        node.stop()


class HranaWriteLoad(threading.Thread):
    """Inserts one row per request on the primary; remembers when each was acknowledged."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.acked: list[tuple[int, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        next_id = 1_000
        while not self.stopping.is_set():
            primary_execute(self.url, [("INSERT INTO t(id, data) VALUES (?, randomblob(3000))", [next_id])], TOKEN)
            self.acked.append((next_id, time.time()))
            next_id += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def primary_args(pdir: Path, *extra: str) -> list[str]:
    return ["primary", "--data-dir", str(pdir), "--auth-token", TOKEN, "--no-migrate", *extra]


def test_primary_backup_names_generation_and_frame_and_leaves_the_primary_untouched(tmp_path: Path) -> None:
    pdir = tmp_path / "primary"
    proc = start(primary_args(pdir), tmp_path, "primary")
    try:
        primary_execute(proc.url, ["CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB)"], TOKEN)
        for i in range(1, 51):
            primary_execute(proc.url, [("INSERT INTO t(id, data) VALUES (?, randomblob(3000))", [i])], TOKEN)
        base = (pdir / "primary.db").stat()
        result = edgenode("backup", "--data-dir", str(pdir), "--to", str(tmp_path / "p.db"), "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["kind"] == "primary" and report["generation"] == 1 and report["frame"] > 50
        assert ids_in(tmp_path / "p.db") == set(range(1, 51))
        # The backup never checkpointed: the main file is still generation 1's base.
        after = (pdir / "primary.db").stat()
        assert (after.st_size, after.st_mtime_ns) == (base.st_size, base.st_mtime_ns)
        assert httpx.post(proc.url + "/api/v1/backup").status_code == 401
        over_http = httpx.post(proc.url + "/api/v1/backup", json={"name": "p.db"}, headers=AUTH, timeout=60)
        assert over_http.status_code == 200, over_http.text
        assert over_http.json()["frame"] == report["frame"] and over_http.json()["kind"] == "primary"
        assert ids_in(pdir / "backups" / "p.db") == set(range(1, 51))
        primary_execute(proc.url, [("INSERT INTO t(id, data) VALUES (?, x'00')", [51])], TOKEN)
        assert httpx.get(proc.url + "/health").json()["generation"] == 1
    finally:
        proc.stop()
    # A stopped primary keeps its WAL (it never checkpoints on close): the backup still has every commit.
    result = edgenode("backup", "--data-dir", str(pdir), "--to", str(tmp_path / "stopped.db"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["frame"] > report["frame"]
    assert ids_in(tmp_path / "stopped.db") == set(range(1, 52))
    restored = tmp_path / "restored-primary"
    result = edgenode("restore", "--from", str(tmp_path / "p.db"), "--data-dir", str(restored), "--as", "primary")
    assert result.returncode == 0, result.stderr
    proc = start(primary_args(restored), tmp_path, "p2")
    try:
        assert primary_execute(proc.url, ["SELECT count(*) FROM t"], TOKEN)[0] == [(50,)]
    finally:
        proc.stop()


def test_primary_backup_under_writes_and_rollovers_holds_every_acknowledged_write(tmp_path: Path) -> None:
    pdir = tmp_path / "primary"
    proc = start(primary_args(pdir, "--generation-max-frames", "40"), tmp_path, "primary")
    try:
        primary_execute(proc.url, ["CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB)"], TOKEN)
        load = HranaWriteLoad(proc.url)
        load.start()
        reports = []
        try:
            time.sleep(0.3)
            for n in range(3):
                result = edgenode("backup", "--data-dir", str(pdir), "--to", str(tmp_path / f"p{n}.db"), "--json")
                assert result.returncode == 0, result.stderr
                reports.append(json.loads(result.stdout))
        finally:
            load.stop()
        assert httpx.get(proc.url + "/health").json()["generation"] > 2  # rollovers happened meanwhile
        for n, report in enumerate(reports):
            present = ids_in(tmp_path / f"p{n}.db")
            before = {i for i, at in load.acked if at < report["snapshot_at"]}
            assert before and before <= present
    finally:
        proc.stop()


def test_http_backup_writes_into_the_backups_dir_with_the_write_token(node: Proc) -> None:
    auth_rw, auth_ro = {"Authorization": f"Bearer {RW}"}, {"Authorization": f"Bearer {RO}"}
    httpx.post(
        node.url + "/api/v1/execute",
        json={
            "statements": [
                {"sql": "CREATE TABLE IF NOT EXISTS backup_probe(x)"},
                {"sql": "INSERT INTO backup_probe VALUES (1)"},
            ]
        },
        headers=auth_rw,
    ).raise_for_status()
    assert httpx.post(node.url + "/api/v1/backup", headers=auth_ro).status_code == 403
    bad = httpx.post(node.url + "/api/v1/backup", json={"name": "../escape.db"}, headers=auth_rw)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    unknown = httpx.post(node.url + "/api/v1/backup", json={"to": "/tmp/x"}, headers=auth_rw)
    assert unknown.status_code == 422
    r = httpx.post(node.url + "/api/v1/backup", json={"name": "probe.db"}, headers=auth_rw, timeout=60)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["path"] == str((data_dir(node) / "backups" / "probe.db").resolve())
    assert report["tables"]["backup_probe"] >= 1 and report["kind"] == "standalone"
    assert verify(Path(report["path"]))["backup_probe"] == report["tables"]["backup_probe"]
    again = httpx.post(node.url + "/api/v1/backup", json={"name": "probe.db"}, headers=auth_rw)
    assert again.status_code == 409
    default = httpx.post(node.url + "/api/v1/backup", headers=auth_rw, timeout=60)
    assert default.status_code == 200 and Path(default.json()["path"]).name.startswith("standalone-")
    # Unnamed backups in quick succession each get a name of their own (was: 409 'choose another
    # name' within the same second); an empty name is refused, not taken for no name.
    paths = {default.json()["path"]}
    for _ in range(3):
        more = httpx.post(node.url + "/api/v1/backup", headers=auth_rw, timeout=60)
        assert more.status_code == 200, more.text
        paths.add(more.json()["path"])
    assert len(paths) == 4
    empty = httpx.post(node.url + "/api/v1/backup", json={"name": ""}, headers=auth_rw)
    assert empty.status_code == 400 and "leave it out" in empty.json()["error"]["message"]


def test_restore_refuses_an_existing_database_without_force_and_a_running_one_even_with_it(tmp_path: Path) -> None:
    backup = tmp_path / "b.db"
    make_database(backup, rows=10)
    apsw.Connection(str(backup)).execute("PRAGMA journal_mode=DELETE")
    data = tmp_path / "data"
    make_database(data / "edgenode.db", rows=3)
    (data / "vectors").mkdir()
    refused = edgenode("restore", "--from", str(backup), "--data-dir", str(data))
    assert refused.returncode != 0 and "--force" in refused.stderr
    assert ids_in(data / "edgenode.db") == {1, 2, 3}
    node = start(["serve", "--data-dir", str(data)], tmp_path, "node", ready_path="/ready")
    try:
        live = edgenode("restore", "--from", str(backup), "--data-dir", str(data), "--force")
        assert live.returncode != 0 and "running process" in live.stderr
    finally:
        node.stop()
    forced = edgenode("restore", "--from", str(backup), "--data-dir", str(data), "--force")
    assert forced.returncode == 0, forced.stderr
    assert ids_in(data / "edgenode.db") == set(range(1, 11))
    assert not (data / "vectors").exists() and not (data / "edgenode.db-wal").exists()
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database" * 100)
    bad = edgenode("restore", "--from", str(corrupt), "--data-dir", str(tmp_path / "empty"))
    assert bad.returncode != 0 and "not a" in bad.stderr
    assert not (tmp_path / "empty").exists()
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(backup.read_bytes())
    with open(damaged, "r+b") as f:  # a valid header, a page in the middle overwritten
        f.seek(4096 * 5)
        f.write(b"\xff" * 4096)
    bad = edgenode("restore", "--from", str(damaged), "--data-dir", str(tmp_path / "empty"))
    assert bad.returncode != 0 and "not a usable backup" in bad.stderr, bad.stderr
    assert not (tmp_path / "empty").exists()


def test_kill_9_during_restore_leaves_nothing_or_the_whole_verified_database(tmp_path: Path) -> None:
    backup = tmp_path / "b.db"
    expected = make_database(backup, rows=6000)  # ~25 MB
    apsw.Connection(str(backup)).execute("PRAGMA journal_mode=DELETE")
    data = tmp_path / "data"
    target = data / "edgenode.db"
    started = time.monotonic()
    assert edgenode("restore", "--from", str(backup), "--data-dir", str(data)).returncode == 0
    duration = time.monotonic() - started
    rng = random.Random(18)
    outcomes = {"nothing": 0, "whole": 0, "marker": 0}
    refused_start = False
    for _ in range(22):
        if target.exists() and not (data / RESTORE_MARKER).exists():
            subprocess.run(["rm", "-rf", str(data)], check=True)
        proc = spawn("restore", "--from", str(backup), "--data-dir", str(data))
        time.sleep(rng.uniform(0.2, 1.3) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if target.exists():
            assert verify(target) == expected  # visible means whole and verified
            outcomes["whole"] += 1
        else:
            outcomes["nothing"] += 1
        if (data / RESTORE_MARKER).exists():
            outcomes["marker"] += 1
            if not refused_start:
                refused = edgenode("serve", "--data-dir", str(data), "--port", "1", timeout=30)
                assert refused.returncode != 0
                assert "interrupted restore" in refused.stderr and "edgenode restore" in refused.stderr
                refused_start = True
    assert outcomes["marker"] >= 3 and outcomes["nothing"] >= 3, outcomes
    assert refused_start
    # Running restore again finishes an interrupted one (no --force needed: the marker says so).
    finish = edgenode("restore", "--from", str(backup), "--data-dir", str(data))
    assert finish.returncode == 0 or "already exists" in finish.stderr
    assert verify(target) == expected and not (data / RESTORE_MARKER).exists()


def test_backup_refuses_a_target_that_is_not_a_regular_file_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    # The verified copy is renamed over --to: run as root, `--to /dev/full` replaced the device node.
    data = tmp_path / "data"
    make_database(data / "edgenode.db", rows=10)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.db"
    link.symlink_to(fifo)
    for target in (fifo, link):
        result = edgenode("backup", "--data-dir", str(data), "--to", str(target))
        assert result.returncode == 1 and "not a regular file" in result.stderr, result.stderr
        assert stat.S_ISFIFO(os.stat(fifo).st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "fifo", "link.db"]  # no .partial left


def test_kill_9_or_ctrl_c_during_backup_leaves_no_file_at_the_target(tmp_path: Path) -> None:
    data = tmp_path / "data"
    expected = make_database(data / "edgenode.db", rows=6000)
    dest = tmp_path / "out" / "b.db"
    dest.parent.mkdir()
    started = time.monotonic()
    assert edgenode("backup", "--data-dir", str(data), "--to", str(dest)).returncode == 0
    duration = time.monotonic() - started
    dest.unlink()
    rng = random.Random(81)
    completed = 0
    for _ in range(20):
        proc = spawn("backup", "--data-dir", str(data), "--to", str(dest))
        time.sleep(rng.uniform(0, duration * 1.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if dest.exists():
            assert verify(dest) == expected
            completed += 1
            dest.unlink()
    assert completed < 20
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgenode", "backup", "--data-dir", str(data), "--to", str(dest)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    while "backup:" not in proc.stderr.readline():
        pass
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    if proc.returncode == 130:  # interrupted before it finished
        assert "nothing was written" in err
        assert not dest.exists()
    assert sorted(os.listdir(dest.parent)) in ([], ["b.db"])  # no partial file left behind either
    assert edgenode("backup", "--data-dir", str(data), "--to", str(dest)).returncode in (0,)
    assert verify(dest) == expected


@pytest.mark.parametrize("kind", ["replica"])
def test_replica_backup_says_it_is_the_primarys_database_at_a_position(tmp_path: Path, kind: str) -> None:
    primary = start(
        ["primary", "--data-dir", str(tmp_path / "p"), "--auth-token", TOKEN, "--no-migrate"], tmp_path, "p"
    )
    node: Proc | None = None
    try:
        primary_execute(primary.url, ["CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB)"], TOKEN)
        for i in range(1, 21):
            primary_execute(primary.url, [("INSERT INTO t(id, data) VALUES (?, x'01')", [i])], TOKEN)
        nd = tmp_path / "node"
        node = start(
            ["serve", "--data-dir", str(nd), "--primary-url", primary.url, "--primary-token", TOKEN, "--no-migrate"],
            tmp_path,
            "node",
            ready_path="/ready",
        )
        deadline = time.monotonic() + 15
        while True:
            r = httpx.post(node.url + "/api/v1/query", json={"sql": "SELECT count(*) FROM t"})
            if r.status_code == 200 and r.json()["rows"] == [[20]]:
                break
            assert time.monotonic() < deadline, r.text
            time.sleep(0.1)
        result = edgenode("backup", "--data-dir", str(nd), "--to", str(tmp_path / "r.db"))
        assert result.returncode == 0, result.stderr
        assert "position    generation 1, frame" in result.stdout and "replica's copy" in result.stdout
        over_http = httpx.post(node.url + "/api/v1/backup", json={"name": "r.db"}, timeout=60)
        assert over_http.status_code == 200, over_http.text
        report = over_http.json()
        assert report["kind"] == kind and report["generation"] == 1 and report["frame"] > 0
        assert ids_in(Path(report["path"])) == set(range(1, 21))
    finally:
        if node is not None:
            node.stop()
        primary.stop()
