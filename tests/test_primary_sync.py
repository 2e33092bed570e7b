"""`edgenode primary` against real PyPI `libsql` 0.1.x embedded replicas, over loopback."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import httpx
import libsql
import pytest

from edgenode.primary.client import HranaClientError, execute
from edgenode.primary.wal import FRAME_SIZE
from tests.procs import ROOT, Proc, start

TOKEN = "test-rw-token"
READ_TOKEN = "test-ro-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start_primary(tmp_path: Path, *extra: str, name: str = "primary") -> Proc:
    args = ["primary", "--data-dir", str(tmp_path / "primary"), "--auth-token", TOKEN, "--read-token", READ_TOKEN]
    return start([*args, *extra], tmp_path, name)


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[Proc]:
    proc = start_primary(tmp_path)
    yield proc
    proc.stop()


def replica(url: str, path: Path, token: str = TOKEN, **kwargs: object) -> libsql.Connection:
    conn = libsql.connect(str(path), sync_url=url, auth_token=token, **kwargs)
    conn.sync()
    return conn


def write(url: str, *statements: str | tuple[str, list[object]]) -> None:
    execute(url, list(statements), TOKEN, transaction=True)


def rows(url: str, sql: str) -> list[tuple[object, ...]]:
    return execute(url, [sql], TOKEN)[0]


def test_fresh_replica_bootstraps_and_reads_what_the_primary_has(primary: Proc, tmp_path: Path) -> None:
    write(primary.url, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO kv(v) VALUES ('a'), ('b')")
    conn = replica(primary.url, tmp_path / "r.db")
    assert conn.execute("SELECT v FROM kv ORDER BY k").fetchall() == [("a",), ("b",)]
    # The sql/ migrations ran on the primary before anything was served.
    assert conn.execute("SELECT count(*) FROM _edgenode_migrations").fetchall()[0][0] >= 1


def test_rows_written_on_the_primary_appear_after_sync(primary: Proc, tmp_path: Path) -> None:
    write(primary.url, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)")
    conn = replica(primary.url, tmp_path / "r.db")
    assert conn.execute("SELECT count(*) FROM kv").fetchall() == [(0,)]
    for i in range(5):
        write(primary.url, ("INSERT INTO kv(v) VALUES (?)", [f"row{i}"]))
    conn.sync()
    assert conn.execute("SELECT count(*) FROM kv").fetchall() == [(5,)]


def test_writes_through_a_replica_are_delegated_and_visible_locally(primary: Proc, tmp_path: Path) -> None:
    conn = replica(primary.url, tmp_path / "r.db")
    conn.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes(body) VALUES (?)", ("via replica",))
    conn.commit()
    assert conn.execute("SELECT body FROM notes").fetchall() == [("via replica",)]
    assert rows(primary.url, "SELECT body FROM notes") == [("via replica",)]


def test_a_multi_megabyte_transaction_arrives_intact(primary: Proc, tmp_path: Path) -> None:
    write(primary.url, "CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB)")
    conn = replica(primary.url, tmp_path / "r.db")
    statements = [("INSERT INTO blobs(data) VALUES (randomblob(?))", [100_000]) for _ in range(60)]
    write(primary.url, *statements)  # about 6 MB, ~1,500 frames in one transaction
    conn.sync()
    local = conn.execute("SELECT count(*), sum(length(data)), sum(hex(substr(data, 1, 4)) != '') FROM blobs")
    assert local.fetchall() == [(60, 6_000_000, 60)]
    assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    digest = "SELECT group_concat(hex(substr(data, 99990, 8)), ',') FROM blobs ORDER BY id"
    assert conn.execute(digest).fetchall()[0][0] == rows(primary.url, digest)[0][0]


def test_pulls_end_on_commit_frames_and_report_checkpoint_needed(primary: Proc) -> None:
    write(primary.url, "CREATE TABLE t(x)", *[("INSERT INTO t VALUES (randomblob(20000))", []) for _ in range(3)])
    write(primary.url, "INSERT INTO t VALUES (1)")
    response = httpx.get(f"{primary.url}/sync/1/1/3", headers=AUTH)
    assert response.status_code == 200
    body = response.content
    assert len(body) % FRAME_SIZE == 0 and body
    assert int.from_bytes(body[-FRAME_SIZE + 4 : -FRAME_SIZE + 8], "big") > 0
    frame = 1
    while (r := httpx.get(f"{primary.url}/sync/1/{frame}/{frame + 128}", headers=AUTH)).status_code == 200:
        frame += len(r.content) // FRAME_SIZE
    assert r.status_code == 400
    assert r.json() == {"status": "checkpoint_needed", "generation": 1, "max_frame_no": frame - 1, "baton": None}


def test_an_old_replica_crosses_generation_rollovers(primary: Proc, tmp_path: Path) -> None:
    write(primary.url, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO kv(v) VALUES ('g1')")
    conn = replica(primary.url, tmp_path / "r.db")
    write(primary.url, "INSERT INTO kv(v) VALUES ('g1-late')")
    assert httpx.post(f"{primary.url}/rollover", headers=AUTH).json() == {"generation": 2}
    write(primary.url, "INSERT INTO kv(v) VALUES ('g2')")
    assert httpx.post(f"{primary.url}/rollover", headers=AUTH).json() == {"generation": 3}
    write(primary.url, "INSERT INTO kv(v) VALUES ('g3')")
    conn.sync()
    assert [r[0] for r in conn.execute("SELECT v FROM kv ORDER BY k").fetchall()] == ["g1", "g1-late", "g2", "g3"]
    assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]


def test_a_fresh_replica_bootstraps_from_a_later_non_empty_generation(primary: Proc, tmp_path: Path) -> None:
    write(primary.url, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO kv(v) VALUES ('one')")
    httpx.post(f"{primary.url}/rollover", headers=AUTH).raise_for_status()
    write(primary.url, "INSERT INTO kv(v) VALUES ('two')")
    assert httpx.get(f"{primary.url}/info", headers=AUTH).json()["current_generation"] == 2
    conn = replica(primary.url, tmp_path / "fresh.db")
    assert conn.execute("SELECT v FROM kv ORDER BY k").fetchall() == [("one",), ("two",)]
    conn.execute("INSERT INTO kv(v) VALUES ('three')")
    conn.commit()
    assert conn.execute("SELECT count(*) FROM kv").fetchall() == [(3,)]


def test_generations_roll_over_by_size_and_replicas_follow(tmp_path: Path) -> None:
    proc = start_primary(tmp_path, "--generation-max-frames", "60", "--no-migrate")
    try:
        write(proc.url, "CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB)")
        conn = replica(proc.url, tmp_path / "r.db")
        for _ in range(12):
            write(proc.url, *[("INSERT INTO t(data) VALUES (randomblob(3000))", []) for _ in range(10)])
            conn.sync()
        generation = httpx.get(f"{proc.url}/info", headers=AUTH).json()["current_generation"]
        assert generation >= 3
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(120,)]
    finally:
        proc.stop()


def test_a_replica_behind_the_kept_generations_gets_410(tmp_path: Path) -> None:
    proc = start_primary(tmp_path, "--keep-generations", "1", "--no-migrate")
    try:
        write(proc.url, "CREATE TABLE t(x)")
        for _ in range(3):
            httpx.post(f"{proc.url}/rollover", headers=AUTH).raise_for_status()
        assert httpx.get(f"{proc.url}/sync/1/1/129", headers=AUTH).status_code == 410
        assert httpx.get(f"{proc.url}/sync/3/1/129", headers=AUTH).status_code == 400
        assert httpx.get(f"{proc.url}/export/1", headers=AUTH).status_code == 410
    finally:
        proc.stop()


def test_offline_push_is_applied_and_a_push_after_the_primary_moved_on_is_a_conflict(
    primary: Proc, tmp_path: Path
) -> None:
    write(primary.url, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)")
    offline = replica(primary.url, tmp_path / "offline.db", offline=True)
    offline.execute("INSERT INTO kv(v) VALUES ('offline write')")
    offline.execute("INSERT INTO kv(v) SELECT hex(randomblob(2000)) FROM kv")
    offline.commit()
    offline.sync()
    assert rows(primary.url, "SELECT count(*) FROM kv") == [(2,)]
    assert rows(primary.url, "SELECT v FROM kv ORDER BY k LIMIT 1") == [("offline write",)]
    assert rows(primary.url, "PRAGMA quick_check") == [("ok",)]
    # Another replica sees the pushed rows by pulling.
    other = replica(primary.url, tmp_path / "other.db")
    assert other.execute("SELECT count(*) FROM kv").fetchall() == [(2,)]

    stale = replica(primary.url, tmp_path / "stale.db", offline=True)
    write(primary.url, "INSERT INTO kv(v) VALUES ('primary moved on')")
    stale.execute("INSERT INTO kv(v) VALUES ('diverged')")
    stale.commit()
    with pytest.raises(Exception, match="conflict"):
        stale.sync()
    assert rows(primary.url, "SELECT count(*) FROM kv WHERE v = 'diverged'") == [(0,)]
    metrics = httpx.get(f"{primary.url}/metrics", headers=AUTH).text
    assert "edgenode_primary_push_conflicts_total 1.0" in metrics


def test_a_wrong_token_is_refused_with_401_json(primary: Proc, tmp_path: Path) -> None:
    response = httpx.get(f"{primary.url}/info", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and "error" in response.json()
    assert httpx.get(f"{primary.url}/health").status_code == 200
    with pytest.raises(Exception, match=r"(?i)unauthorized|401"):
        replica(primary.url, tmp_path / "r.db", token="nope")


def test_a_read_only_token_can_pull_and_read_but_not_write_or_push(primary: Proc, tmp_path: Path) -> None:
    write(primary.url, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO kv(v) VALUES ('x')")
    conn = replica(primary.url, tmp_path / "r.db", token=READ_TOKEN)
    assert conn.execute("SELECT v FROM kv").fetchall() == [("x",)]
    assert execute(primary.url, ["SELECT v FROM kv"], READ_TOKEN) == [[("x",)]]
    with pytest.raises(HranaClientError) as error:
        execute(primary.url, ["INSERT INTO kv(v) VALUES ('no')"], READ_TOKEN)
    assert error.value.code == "SQLITE_READONLY"
    with pytest.raises(HranaClientError):
        execute(primary.url, ["PRAGMA query_only=0"], READ_TOKEN)
    push = httpx.post(f"{primary.url}/sync/1/1/2", headers={"Authorization": f"Bearer {READ_TOKEN}"}, content=b"")
    assert push.status_code == 403


def test_checkpointing_pragmas_are_refused_over_hrana(primary: Proc) -> None:
    refused = (
        "PRAGMA wal_checkpoint(TRUNCATE)",
        "PRAGMA journal_mode=DELETE",
        "PRAGMA wal_autocheckpoint=10",
        "PRAGMA synchronous=OFF",
    )
    for sql in refused:
        with pytest.raises(HranaClientError) as error:
            execute(primary.url, [sql], TOKEN)
        assert error.value.code == "SQLITE_AUTH"


def test_sixty_four_bit_integers_and_read_only_transactions_over_hrana(primary: Proc) -> None:
    big = 9_007_199_254_740_993
    write(primary.url, "CREATE TABLE n(v INTEGER)", ("INSERT INTO n VALUES (?)", [big]))
    assert rows(primary.url, "SELECT v FROM n") == [(big,)]
    with pytest.raises(HranaClientError) as error:
        execute(primary.url, ["BEGIN TRANSACTION READONLY", "INSERT INTO n VALUES (1)"], TOKEN)
    assert error.value.code == "SQLITE_READONLY"
    write(primary.url, "INSERT INTO n VALUES (2)")  # the stream above was closed; writes work again
    assert rows(primary.url, "SELECT count(*) FROM n") == [(2,)]


def test_jwt_minted_by_edgenode_token_is_accepted(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    minted = subprocess.run(
        [sys.executable, "-m", "edgenode", "token", "--data-dir", str(keys), "--access", "ro"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    proc = start(
        ["primary", "--data-dir", str(tmp_path / "p"), "--jwt-key-file", str(keys / "jwt_public.pem"), "--no-migrate"],
        tmp_path,
        "jwt-primary",
    )
    try:
        headers = {"Authorization": f"Bearer {minted}"}
        assert httpx.get(f"{proc.url}/info", headers=headers).json()["current_generation"] == 1
        assert httpx.post(f"{proc.url}/rollover", headers=headers).status_code == 403
        assert httpx.get(f"{proc.url}/info", headers={"Authorization": "Bearer x.y.z"}).status_code == 401
    finally:
        proc.stop()


def test_a_transaction_larger_than_one_response_arrives_over_several_pulls(primary: Proc, tmp_path: Path) -> None:
    write(primary.url, "CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB)")
    conn = replica(primary.url, tmp_path / "r.db")
    write(primary.url, *[("INSERT INTO blobs(data) VALUES (randomblob(?))", [1_000_000]) for _ in range(20)])
    conn.sync()  # ~4,900 frames: more than one response may carry, so they come in pieces of 128
    assert conn.execute("SELECT count(*), sum(length(data)) FROM blobs").fetchall() == [(20, 20_000_000)]
    assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]


def test_a_waiting_pull_returns_as_soon_as_a_commit_lands(primary: Proc) -> None:
    write(primary.url, "CREATE TABLE t(x)")
    end = httpx.get(f"{primary.url}/sync/1/1/1000", headers=AUTH)
    next_frame = 1 + len(end.content) // FRAME_SIZE
    result: dict[str, httpx.Response] = {}

    def wait() -> None:
        url = f"{primary.url}/sync/1/{next_frame}/{next_frame + 128}?wait_ms=10000"
        result["r"] = httpx.get(url, headers=AUTH, timeout=20)

    waiter = threading.Thread(target=wait)
    started = time.monotonic()
    waiter.start()
    time.sleep(0.3)
    write(primary.url, "INSERT INTO t VALUES (1)")
    waiter.join(15)
    assert result["r"].status_code == 200
    assert time.monotonic() - started < 5


def test_a_rollover_waits_for_an_open_interactive_transaction(primary: Proc, tmp_path: Path) -> None:
    write(primary.url, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)")
    conn = replica(primary.url, tmp_path / "r.db")
    pipeline = f"{primary.url}/v2/pipeline"

    def step(baton: str | None, sql: str) -> str:
        body = {"baton": baton, "requests": [{"type": "execute", "stmt": {"sql": sql}}]}
        response = httpx.post(pipeline, json=body, headers=AUTH).json()
        assert response["results"][0]["type"] == "ok", response
        return response["baton"]

    baton = step(None, "BEGIN")
    baton = step(baton, "INSERT INTO kv(v) VALUES ('in txn')")
    rolled: dict[str, int] = {}
    roller = threading.Thread(
        target=lambda: rolled.update(httpx.post(f"{primary.url}/rollover", headers=AUTH, timeout=20).json())
    )
    roller.start()
    time.sleep(0.3)
    assert not rolled  # blocked behind the open transaction
    step(baton, "COMMIT")
    roller.join(15)
    assert rolled == {"generation": 2}
    conn.sync()
    assert conn.execute("SELECT v FROM kv").fetchall() == [("in txn",)]


def test_metrics_report_frames_exports_and_generation(primary: Proc, tmp_path: Path) -> None:
    write(primary.url, "CREATE TABLE t(x)", "INSERT INTO t VALUES (1)")
    replica(primary.url, tmp_path / "r.db")
    httpx.post(f"{primary.url}/rollover", headers=AUTH).raise_for_status()
    text = httpx.get(f"{primary.url}/metrics", headers=AUTH).text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"}
    assert values["edgenode_primary_frames_served_total"] > 0
    assert values["edgenode_primary_bytes_exported_total"] >= 4096
    assert values["edgenode_primary_generation"] == 2
    assert any(k.startswith("edgenode_primary_hrana_requests_total") for k in values)


def test_sigterm_stops_cleanly_and_a_restart_keeps_everything(tmp_path: Path) -> None:
    proc = start_primary(tmp_path)
    write(proc.url, "CREATE TABLE kv(v TEXT)", "INSERT INTO kv VALUES ('kept')")
    conn = replica(proc.url, tmp_path / "r.db")
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status still says why it ended.
    assert proc.stop() in (0, -15)
    assert "Application shutdown complete" in proc.log()
    proc = start(proc.args, tmp_path, "primary-again", port=proc.port)
    try:
        write(proc.url, "INSERT INTO kv VALUES ('after restart')")
        conn.sync()
        assert conn.execute("SELECT v FROM kv").fetchall() == [("kept",), ("after restart",)]
    finally:
        proc.stop()


def test_an_offline_push_can_open_a_fresh_generation(primary: Proc, tmp_path: Path) -> None:
    write(primary.url, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)")
    httpx.post(f"{primary.url}/rollover", headers=AUTH).raise_for_status()  # generation 2 starts with an empty WAL
    offline = replica(primary.url, tmp_path / "offline.db", offline=True)
    offline.execute("INSERT INTO kv(v) VALUES ('first frame of generation 2')")
    offline.commit()
    offline.sync()
    write(primary.url, "INSERT INTO kv(v) VALUES ('then the primary writes')")
    assert rows(primary.url, "SELECT v FROM kv ORDER BY k") == [
        ("first frame of generation 2",),
        ("then the primary writes",),
    ]
    assert rows(primary.url, "PRAGMA quick_check") == [("ok",)]
    offline.sync()
    assert offline.execute("SELECT count(*) FROM kv").fetchall() == [(2,)]
    other = replica(primary.url, tmp_path / "other.db")
    assert other.execute("SELECT count(*) FROM kv").fetchall() == [(2,)]


def test_an_offline_transaction_spanning_several_push_batches_is_applied_whole(primary: Proc, tmp_path: Path) -> None:
    write(primary.url, "CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB)")
    offline = replica(primary.url, tmp_path / "offline.db", offline=True)
    offline.execute("INSERT INTO blobs(data) SELECT randomblob(100000) FROM json_each('[1,2,3,4,5,6,7,8,9,10,11,12]')")
    offline.commit()  # ~300 frames: pushed 128 at a time, the transaction's commit frame in the last batch
    offline.sync()
    assert rows(primary.url, "SELECT count(*), sum(length(data)) FROM blobs") == [(12, 1_200_000)]
    digest = "SELECT group_concat(hex(substr(data, 50000, 8)), ',') FROM blobs ORDER BY id"
    assert rows(primary.url, digest) == offline.execute(digest).fetchall()
    assert rows(primary.url, "PRAGMA quick_check") == [("ok",)]


def test_a_database_checkpointed_behind_the_primarys_back_starts_a_new_generation(tmp_path: Path) -> None:
    proc = start_primary(tmp_path, "--no-migrate")
    write(proc.url, "CREATE TABLE kv(v TEXT)", "INSERT INTO kv VALUES ('before')")
    old = replica(proc.url, tmp_path / "old.db")
    proc.stop()
    # A plain SQLite connection checkpoints (and removes the WAL) when it closes.
    conn = apsw.Connection(str(tmp_path / "primary" / "primary.db"))
    conn.execute("INSERT INTO kv VALUES ('outside')")
    conn.close()
    proc = start(proc.args, tmp_path, "primary-again", port=proc.port)
    try:
        assert httpx.get(f"{proc.url}/info", headers=AUTH).json()["current_generation"] == 2
        with pytest.raises(ValueError, match="410"):
            old.sync()
        fresh = replica(proc.url, tmp_path / "fresh.db")
        assert fresh.execute("SELECT v FROM kv").fetchall() == [("before",), ("outside",)]
    finally:
        proc.stop()


def test_an_abandoned_transaction_is_rolled_back_and_stops_blocking_rollovers_and_writers(tmp_path: Path) -> None:
    proc = start_primary(tmp_path, "--no-migrate", "--transaction-timeout", "1")
    try:
        write(proc.url, "CREATE TABLE kv(v TEXT)")
        body = {"baton": None, "requests": [{"type": "execute", "stmt": {"sql": "BEGIN IMMEDIATE"}}]}
        body["requests"].append({"type": "execute", "stmt": {"sql": "INSERT INTO kv VALUES ('abandoned')"}})
        assert httpx.post(f"{proc.url}/v2/pipeline", json=body, headers=AUTH).status_code == 200
        started = time.monotonic()
        assert httpx.post(f"{proc.url}/rollover", headers=AUTH, timeout=20).json() == {"generation": 2}
        write(proc.url, "INSERT INTO kv VALUES ('later')")
        assert time.monotonic() - started < 8
        assert rows(proc.url, "SELECT v FROM kv") == [("later",)]
    finally:
        proc.stop()


def test_a_slow_export_with_a_rollover_and_pulls_waiting_behind_it_does_not_wedge(primary: Proc) -> None:
    write(primary.url, "CREATE TABLE b(x BLOB)", "INSERT INTO b SELECT randomblob(1000000) FROM json_each('[1,2,3]')")
    httpx.post(f"{primary.url}/rollover", headers=AUTH).raise_for_status()
    write(primary.url, "INSERT INTO b SELECT randomblob(1000000) FROM json_each('[1,2,3,4,5,6,7,8,9,10]')")
    httpx.post(f"{primary.url}/rollover", headers=AUTH).raise_for_status()  # the blobs are now in the base file
    generation = httpx.get(f"{primary.url}/info", headers=AUTH).json()["current_generation"]
    results: list[int] = []
    pull_url = f"{primary.url}/sync/{generation}/1/9"

    def later(method: str, url: str) -> threading.Thread:
        thread = threading.Thread(
            target=lambda: results.append(httpx.request(method, url, headers=AUTH, timeout=30).status_code)
        )
        thread.start()
        return thread

    export_url = f"{primary.url}/export/{generation}"
    with httpx.Client(headers=AUTH, timeout=30) as client, client.stream("GET", export_url) as export:
        assert export.status_code == 200
        chunks = export.iter_bytes(65536)
        received = len(next(chunks))
        # The export holds the shared lock; the rollover queues for it, and pulls queue behind the rollover.
        threads = [later("POST", f"{primary.url}/rollover")]
        time.sleep(0.2)
        threads += [later("GET", pull_url) for _ in range(12)]
        time.sleep(0.3)
        started = time.monotonic()
        received += sum(len(c) for c in chunks)
        assert time.monotonic() - started < 5
        for thread in threads:
            thread.join(15)
    assert received > 13_000_000
    # The rollover went through, and every pull got an answer (no frames yet, or the next generation).
    assert len(results) == 13 and set(results) <= {200, 400}


def test_a_vacuum_that_shrinks_the_database_replicates(primary: Proc, tmp_path: Path) -> None:
    write(primary.url, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)")
    write(primary.url, ("INSERT INTO kv(v) SELECT hex(randomblob(2000)) FROM json_each(?)", [str(list(range(300)))]))
    conn = replica(primary.url, tmp_path / "r.db")
    write(primary.url, "DELETE FROM kv WHERE k > 10")
    execute(primary.url, ["VACUUM"], TOKEN)
    conn.sync()
    assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    assert conn.execute("SELECT count(*) FROM kv").fetchall() == [(10,)]
    assert conn.execute("PRAGMA page_count").fetchall() == rows(primary.url, "PRAGMA page_count")
