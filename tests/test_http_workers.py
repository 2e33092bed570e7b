"""A node serving HTTP from more than one process (`--http-workers 2`), against real processes and
real clients: every request opens its own connection, so the kernel spreads them over the owner
and the worker; responses a worker sent carry `x-edgenode-worker`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from edgenode.changes.client import parse_sse
from tests.procs import Proc, start

RW, RO = "workers-rw", "workers-ro"
WORKER = "x-edgenode-worker"
TIMEOUT_MS = 2000  # a point read on a machine busy with other work may take most of a second


def _auth(token: str = RW) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _post(url: str, path: str, body: Any, token: str = RW) -> httpx.Response:
    """One request on a connection of its own."""
    return httpx.post(url + path, json=body, headers=_auth(token), timeout=30)


def _query(url: str, sql: str, params: list[Any] | None = None, token: str = RW) -> httpx.Response:
    return _post(url, "/api/v1/query", {"sql": sql, "params": params or []}, token)


def _execute(url: str, *statements: str | tuple[str, list[Any]], token: str = RW) -> httpx.Response:
    body = {"statements": [{"sql": s} if isinstance(s, str) else {"sql": s[0], "params": s[1]} for s in statements]}
    return _post(url, "/api/v1/execute", body, token)


def _pipeline(url: str, requests: list[dict[str, Any]], baton: str | None = None, token: str = RW) -> httpx.Response:
    return _post(url, "/v3/pipeline", {"baton": baton, "requests": requests}, token)


def _stmt(sql: str, *args: Any) -> dict[str, Any]:
    values = [
        {"type": "integer", "value": str(a)} if isinstance(a, int) else {"type": "text", "value": a} for a in args
    ]
    return {"type": "execute", "stmt": {"sql": sql, "args": values}}


CLOSE = {"type": "close"}


def _text(key: int) -> dict[str, str]:
    return {"type": "text", "value": f"v{key}"}


def _until_worker(attempt: Callable[[], httpx.Response], tries: int = 60) -> httpx.Response:
    """Repeat a request (each on a new connection) until a worker process answers it."""
    for _ in range(tries):
        response = attempt()
        if WORKER in response.headers:
            return response
    raise AssertionError(f"no worker answered in {tries} tries")


def _worker_connection(url: str, tries: int = 400) -> httpx.Client:
    """A client whose one keep-alive connection a worker process accepted."""
    for _ in range(tries):
        client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {RW}"}, timeout=60, limits=httpx.Limits(max_connections=1)
        )
        if WORKER in client.post("/api/v1/query", json={"sql": "SELECT 1", "params": []}).headers:
            return client
        client.close()
    raise AssertionError(f"no worker accepted a connection in {tries} tries")


def _served_by(response: httpx.Response) -> str:
    """ "worker" when a worker answered the request itself, else "owner" (directly or forwarded)."""
    header = response.headers.get(WORKER)
    return "worker" if header is not None and "forwarded" not in header else "owner"


def _worker_pids(url: str) -> list[int]:
    response = httpx.get(url + "/api/v1/status", headers=_auth(), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["components"]["http_workers"]["pids"]


def _start(tmp: Path, name: str = "node") -> Proc:
    args = ["serve", "--data-dir", str(tmp / "data"), "--no-migrate", "--http-workers", "2"]
    args += ["--read-connections", "1", "--query-timeout-ms", str(TIMEOUT_MS), "--auth-token", RW, "--read-token", RO]
    proc = start(args, tmp, name, ready_path="/ready")
    _until_worker(lambda: _query(proc.url, "SELECT 1"), tries=400)  # the worker is up
    return proc


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = _start(tmp_path_factory.mktemp("workers"))
    assert _execute(proc.url, "CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)").status_code == 200
    yield proc
    proc.stop()


def test_reads_and_writes_from_many_connections_are_correct_wherever_they_land(node: Proc) -> None:
    failures: list[str] = []
    served_by: dict[str, int] = {}
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(15):
            key = n * 1000 + i
            written = _execute(node.url, ("INSERT INTO kv (k, v) VALUES (?, ?)", [key, f"v{key}"]))
            # Read-your-writes on a new connection, whichever process answers it.
            read = _query(node.url, "SELECT v FROM kv WHERE k = ?", [key])
            hrana = _pipeline(node.url, [_stmt("SELECT v FROM kv WHERE k = ?", key), CLOSE])
            with lock:
                for response in (read, hrana):
                    where = _served_by(response)
                    served_by[where] = served_by.get(where, 0) + 1
            if written.status_code != 200 or read.json().get("rows") != [[f"v{key}"]]:
                failures.append(f"{key}: {written.text} / {read.status_code} {read.headers} {read.text}")
            body = hrana.json()
            results = body["results"]
            rows = results[0].get("response", {}).get("result", {}).get("rows")
            if body["baton"] is not None or [r["type"] for r in results] != ["ok", "ok"] or rows != [[_text(key)]]:
                failures.append(f"{key} (hrana): {hrana.text}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:5]
    assert served_by.get("worker", 0) > 0 and served_by.get("owner", 0) > 0, served_by
    count = _query(node.url, "SELECT count(*) FROM kv WHERE k >= 0 AND k < 8000")
    assert count.json()["rows"] == [[8 * 15]]


def test_a_worker_follows_the_owners_schema_changes_at_once(node: Proc) -> None:
    assert _execute(node.url, "CREATE TABLE evolving (a INTEGER)", ("INSERT INTO evolving VALUES (?)", [1])).is_success
    for _ in range(10):  # the table is known wherever the read lands, right after the acknowledgement
        response = _query(node.url, "SELECT * FROM evolving")
        assert response.status_code == 200, response.text
    assert _execute(node.url, "ALTER TABLE evolving ADD COLUMN b TEXT DEFAULT 'x'").is_success
    response = _until_worker(lambda: _query(node.url, "SELECT * FROM evolving"))
    body = response.json()
    assert body["columns"] == ["a", "b"] and body["decltypes"] == ["INTEGER", "TEXT"], body
    assert _execute(node.url, "DROP TABLE evolving").is_success
    response = _until_worker(lambda: _query(node.url, "SELECT * FROM evolving"))
    assert response.status_code == 400 and "evolving" in response.text, response.text


def test_the_read_only_token_reads_in_a_worker_and_is_refused_every_write(node: Proc) -> None:
    read = _until_worker(lambda: _query(node.url, "SELECT count(*) FROM kv", token=RO))
    assert read.status_code == 200, read.text
    for _ in range(10):
        assert _execute(node.url, ("INSERT INTO kv (k, v) VALUES (?, ?)", [-1, "no"]), token=RO).status_code == 403
        refused = _query(node.url, "INSERT INTO kv (k, v) VALUES (-1, 'no')", token=RO)
        assert refused.status_code in (400, 403), refused.text
        hrana = _pipeline(node.url, [_stmt("INSERT INTO kv (k, v) VALUES (-1, 'no')"), CLOSE], token=RO)
        assert hrana.json()["results"][0]["type"] == "error", hrana.text
    assert _query(node.url, "SELECT count(*) FROM kv WHERE k = -1").json()["rows"] == [[0]]
    assert _query(node.url, "SELECT 1", token="wrong").status_code == 401


def test_a_hrana_transaction_works_whichever_process_each_request_lands_on(node: Proc) -> None:
    landed: set[bool] = set()
    # The kernel hands each new connection to whichever process accepts first: on a busy machine one
    # of them may take a run of them, so rounds go on (up to 40) until both processes were reached.
    for round_ in range(40):
        if round_ >= 6 and landed == {True, False}:
            break
        key = 100_000 + round_
        begun = _pipeline(node.url, [_stmt("BEGIN")])
        baton = begun.json()["baton"]
        assert baton, begun.text
        steps = [
            [_stmt("INSERT INTO kv (k, v) VALUES (?, ?)", key, "in-txn")],
            [_stmt("SELECT v FROM kv WHERE k = ?", key)],
            [_stmt("COMMIT"), CLOSE],
        ]
        for requests in steps:
            response = _pipeline(node.url, requests, baton)
            landed.add(WORKER in response.headers)
            assert _served_by(response) == "owner", "a request on a stream is the owner's to answer"
            results = response.json()["results"]
            assert all(r["type"] == "ok" for r in results), response.text
            baton = response.json()["baton"]
        assert results[0]["response"]["type"] == "execute"
        assert _query(node.url, "SELECT v FROM kv WHERE k = ?", [key]).json()["rows"] == [["in-txn"]]
    assert landed == {True, False}, "expected requests to land on both processes"


def test_change_streams_pass_through_a_worker_over_sse_and_websocket(node: Proc) -> None:
    assert _execute(node.url, "CREATE TABLE watched (id INTEGER PRIMARY KEY, v TEXT)").is_success
    assert httpx.put(node.url + "/api/v1/changes/tables/watched", headers=_auth(), timeout=10).is_success

    with contextlib.ExitStack() as stack:

        def open_sse() -> httpx.Response:
            for _ in range(60):
                client = stack.enter_context(httpx.Client(timeout=30))
                params = {"tables": "watched"}
                request = client.build_request("GET", node.url + "/api/v1/changes", params=params, headers=_auth(RO))
                response = stack.enter_context(contextlib.closing(client.send(request, stream=True)))
                if WORKER in response.headers:
                    return response
                response.close()
            raise AssertionError("no SSE stream landed on a worker")

        def open_ws() -> ClientConnection:
            url = node.url.replace("http", "ws") + "/api/v1/changes/ws?tables=watched"
            for _ in range(60):
                ws = stack.enter_context(ws_connect(url, additional_headers=_auth(RO), max_queue=None))
                if ws.response is not None and ws.response.headers.get(WORKER):
                    return ws
                ws.close()
            raise AssertionError("no WebSocket landed on a worker")

        sse, ws = open_sse(), open_ws()
        time.sleep(0.3)  # both subscribed at the head
        assert _execute(node.url, ("INSERT INTO watched (id, v) VALUES (?, ?)", [1, "hello"])).is_success
        event = next(e for e in parse_sse(sse.iter_lines()) if e.data.get("op") == "insert")
        assert event.data["row"]["v"] == "hello", event
        while (message := json.loads(ws.recv(timeout=10))).get("op") != "insert":
            pass
        assert message["row"]["v"] == "hello", message


def test_a_runaway_read_in_a_worker_is_stopped_at_the_query_timeout(node: Proc) -> None:
    runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    # A keep-alive connection stays with the process that accepted it: find one a worker holds
    # with a cheap read, then send the runaway on it (a retry per runaway could land on the owner
    # many times in a row and wait out its timeout each time).
    client = _worker_connection(node.url)
    try:
        started = time.monotonic()
        response = client.post("/api/v1/query", json={"sql": runaway, "params": []})
        assert WORKER in response.headers, "the keep-alive connection moved to another process"
        assert response.status_code == 408 and "query_timeout" in response.text, response.text
        assert time.monotonic() - started < 10 * (TIMEOUT_MS / 1000 + 1)
        hrana = client.post("/v3/pipeline", json={"baton": None, "requests": [_stmt(runaway), CLOSE]})
        assert WORKER in hrana.headers
        assert hrana.json()["results"][0]["error"]["code"] == "SQLITE_INTERRUPT", hrana.text
    finally:
        client.close()
    # The worker's reader was replaced: the next reads there work.
    assert _until_worker(lambda: _query(node.url, "SELECT 1")).json()["rows"] == [[1]]


def test_kill_9_of_a_worker_keeps_the_node_serving_and_the_worker_comes_back(node: Proc) -> None:
    (pid,) = _worker_pids(node.url)
    os.kill(pid, signal.SIGKILL)
    for i in range(30):  # every request is answered meanwhile: the shared socket stays open
        assert _execute(node.url, ("INSERT INTO kv (k, v) VALUES (?, ?)", [200_000 + i, "after"])).is_success
        assert _query(node.url, "SELECT count(*) FROM kv WHERE k >= 200000").json()["rows"] == [[i + 1]]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = _worker_pids(node.url)
        if pids and pids != [pid]:
            break
        time.sleep(0.1)
    assert pids and pids != [pid]
    response = _until_worker(lambda: _query(node.url, "SELECT count(*) FROM kv WHERE k >= 200000"), tries=400)
    assert response.headers[WORKER] == str(pids[0]) and response.json()["rows"] == [[30]]


def test_kill_9_of_the_owner_stops_its_workers(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    try:
        (pid,) = _worker_pids(proc.url)
        proc.kill()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"worker {pid} outlived its owner")
        assert proc.popen is not None
        left = list(Path(tempfile.gettempdir()).glob(f"edgenode-http-{proc.popen.pid}-*"))
        assert left, "kill -9 leaves the owner's socket directory"
        _start(tmp_path, "restarted").stop()  # a later start removes it
        assert not any(path.exists() for path in left)
    finally:
        proc.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # an exited child of a dead owner stays a zombie until its new parent reaps it
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def test_a_replica_refuses_more_than_one_http_process(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "edgenode", "serve", "--data-dir", str(tmp_path / "data")]
    args += ["--primary-url", "http://127.0.0.1:9", "--http-workers", "2"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--http-workers 2" in done.stderr, done.stderr


def test_a_graceful_stop_ends_the_workers_first_even_with_a_change_stream_open(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    (pid,) = _worker_pids(proc.url)
    assert _execute(proc.url, "CREATE TABLE w (id INTEGER PRIMARY KEY)").is_success
    assert httpx.put(proc.url + "/api/v1/changes/tables/w", headers=_auth(), timeout=10).is_success
    with httpx.Client(timeout=30) as client:
        for _ in range(60):
            request = client.build_request("GET", proc.url + "/api/v1/changes", params={"tables": "w"}, headers=_auth())
            sse = client.send(request, stream=True)
            if WORKER in sse.headers:
                break
            sse.close()
        else:
            raise AssertionError("no SSE stream landed on a worker")
        started = time.monotonic()
        assert proc.stop() in (0, -signal.SIGTERM), proc.log()  # uvicorn re-raises the signal it stopped on
        assert time.monotonic() - started < 8, "a change stream through a worker held the stop"
        sse.close()
    assert not _alive(pid)


def test_a_hrana_read_that_leaves_its_stream_open_ends_it_in_a_worker(node: Proc) -> None:
    response = _until_worker(lambda: _pipeline(node.url, [_stmt("SELECT 42")]))
    assert _served_by(response) == "worker", response.headers
    body = response.json()
    assert body["baton"] is None, "a worker's stream ends with its request: the client opens a new one"
    assert body["results"][0]["response"]["result"]["rows"] == [[{"type": "integer", "value": "42"}]]


def test_the_libsql_client_reads_writes_and_uses_transactions_across_processes(node: Proc) -> None:
    import libsql

    conn = libsql.connect(node.url, auth_token=RW)
    conn.execute("CREATE TABLE remote (id INTEGER PRIMARY KEY, v TEXT)")
    conn.commit()
    for i in range(40):
        conn.execute("INSERT INTO remote (id, v) VALUES (?, ?)", (i, f"r{i}"))
        conn.commit()
        assert conn.execute("SELECT v FROM remote WHERE id = ?", (i,)).fetchall() == [(f"r{i}",)]
        assert conn.execute("SELECT count(*) FROM remote").fetchall() == [(i + 1,)]
    conn.execute("BEGIN")
    conn.execute("INSERT INTO remote (id, v) VALUES (1000, 'rolled back')")
    assert conn.execute("SELECT count(*) FROM remote").fetchall() == [(41,)]
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM remote").fetchall() == [(40,)]


def test_a_cursor_is_streamed_through_a_worker_from_the_owner(node: Proc) -> None:
    batch = {"steps": [{"stmt": {"sql": "SELECT 1 UNION ALL SELECT 2"}}]}
    response = _until_worker(lambda: _post(node.url, "/v3/cursor", {"baton": None, "batch": batch}))
    assert response.status_code == 200 and response.headers[WORKER].endswith("forwarded"), response.text
    entries = [json.loads(line) for line in response.text.splitlines()]
    assert entries[0]["baton"] and [e["type"] for e in entries[1:]][:2] == ["step_begin", "row"], entries


def test_large_and_chunked_request_bodies_are_forwarded_whole(node: Proc) -> None:
    assert _execute(node.url, "CREATE TABLE blobs (id INTEGER PRIMARY KEY, v TEXT)").is_success
    big = "x" * 300_000
    counter = iter(range(1, 1000))

    def sized() -> httpx.Response:
        return _execute(node.url, ("INSERT INTO blobs (id, v) VALUES (?, ?)", [next(counter), big]))

    response = _until_worker(sized)
    assert response.status_code == 200 and response.headers[WORKER].endswith("forwarded"), response.text

    def chunked() -> httpx.Response:
        payload = json.dumps(
            {"statements": [{"sql": "INSERT INTO blobs (id, v) VALUES (?, ?)", "params": [next(counter), big]}]}
        ).encode()
        parts = (payload[i : i + 65_536] for i in range(0, len(payload), 65_536))  # no length: chunked
        headers = {**_auth(), "content-type": "application/json"}
        return httpx.post(node.url + "/api/v1/execute", content=parts, headers=headers, timeout=30)

    response = _until_worker(chunked)
    assert response.status_code == 200, response.text
    lengths = _query(node.url, "SELECT count(*), min(length(v)), max(length(v)) FROM blobs").json()["rows"]
    assert lengths[0][1:] == [300_000, 300_000], lengths


def test_a_worker_reads_an_encrypted_database(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("workers-test-key-0123456789abcdef\n")
    args = ["serve", "--data-dir", str(tmp_path / "data"), "--no-migrate", "--http-workers", "2"]
    args += ["--encryption-key-file", str(key_file), "--allow-plaintext-derived"]
    proc = start(args, tmp_path, "encrypted", ready_path="/ready")
    try:
        assert _execute(proc.url, "CREATE TABLE secret (v TEXT)", ("INSERT INTO secret VALUES (?)", ["s"])).is_success
        response = _until_worker(lambda: _query(proc.url, "SELECT v FROM secret"), tries=400)
        assert response.json()["rows"] == [["s"]], response.text
    finally:
        proc.stop()
    assert b"SQLite format 3" not in (tmp_path / "data" / "edgenode.db").read_bytes()[:16]


def test_a_rotated_jwt_key_is_refused_by_the_workers_too(tmp_path: Path) -> None:
    from edgenode.auth import Access, generate_keypair, mint_token

    old_private, key_file = generate_keypair(tmp_path / "old")
    new_private, new_public = generate_keypair(tmp_path / "new")
    args = ["serve", "--data-dir", str(tmp_path / "data"), "--no-migrate", "--http-workers", "2"]
    args += ["--jwt-key-file", str(key_file), "--changes-heartbeat", "0.3"]
    proc = start(args, tmp_path, "jwt", ready_path="/ready")
    old, new = mint_token(old_private.read_bytes(), Access.READ), mint_token(new_private.read_bytes(), Access.READ)
    try:
        assert _until_worker(lambda: _query(proc.url, "SELECT 1", token=old), tries=400).status_code == 200
        key_file.write_bytes(new_public.read_bytes())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            refused = _until_worker(lambda: _query(proc.url, "SELECT 1", token=old))
            if refused.status_code == 401:
                break
            time.sleep(0.2)
        assert refused.status_code == 401, refused.text
        assert _until_worker(lambda: _query(proc.url, "SELECT 1", token=new)).status_code == 200
    finally:
        proc.stop()
