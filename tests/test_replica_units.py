"""Replica building blocks in-process: the -info file, identity, scheduler, bootstrap download, relay."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import http.server
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import apsw
import httpx
import libsql
import msgspec
import pytest

from edgenode.replica import bootstrap
from edgenode.replica.database import classify
from edgenode.replica.files import InvalidInfo, Position, ReplicaFiles
from edgenode.replica.identity import local_problem, normalize_url, write_identity
from edgenode.replica.relay import FRAME_SIZE, Relay, cut_after_commits
from edgenode.replica.scheduler import Scheduler, SyncFailed, SyncOutcome
from tests.procs import free_port


def make_database(path: Path, rows: int = 50) -> bytes:
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA page_size=4096")
    conn.execute("CREATE TABLE t(x)")
    with conn:
        conn.executemany("INSERT INTO t VALUES (?)", [(f"row {i} " * 20,) for i in range(rows)])
    conn.close()
    return path.read_bytes()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the client's -info file ---------------------------------------------------------------------


def test_an_info_file_we_write_is_accepted_by_the_libsql_client_offline(tmp_path: Path) -> None:
    files = ReplicaFiles(tmp_path)
    files.dir.mkdir(parents=True)
    make_database(files.db)
    files.write_info(Position(generation=3, frame=0))
    assert files.read_info() == Position(3, 0)
    # Both files present: the client opens without contacting the (unreachable) primary.
    conn = libsql.connect(str(files.db), sync_url=f"http://127.0.0.1:{free_port()}", auth_token="x")
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(50,)]
    conn.close()


def test_a_tampered_info_file_is_refused_by_us_and_by_the_client(tmp_path: Path) -> None:
    files = ReplicaFiles(tmp_path)
    files.dir.mkdir(parents=True)
    make_database(files.db)
    files.info.write_text('{"hash": 12345, "version": 0, "durable_frame_num": 7, "generation": 2}')
    with pytest.raises(InvalidInfo, match="checksum"):
        files.read_info()
    with pytest.raises(ValueError, match="hash"):
        libsql.connect(str(files.db), sync_url=f"http://127.0.0.1:{free_port()}", auth_token="x")


def test_local_problems_name_what_is_wrong(tmp_path: Path) -> None:
    files = ReplicaFiles(tmp_path)
    assert local_problem(files, "http://a:1") is None  # nothing there: a fresh bootstrap
    files.dir.mkdir(parents=True)
    make_database(files.db)
    assert "no identity" in (local_problem(files, "http://a:1") or "")
    write_identity(files, "http://a:1/", None, 1)
    assert "invalid local state" in (local_problem(files, "http://a:1") or "")
    files.write_info(Position(1, 4))
    assert local_problem(files, "http://A:1") is None
    assert "belongs to http://a:1" in (local_problem(files, "http://b:1") or "")


def test_urls_of_the_same_primary_compare_equal() -> None:
    assert normalize_url("libsql://db-org.turso.io") == "https://db-org.turso.io"
    assert normalize_url("https://DB-org.turso.io:443/") == "https://db-org.turso.io"
    assert normalize_url("http://127.0.0.1:8081/") == "http://127.0.0.1:8081"
    assert normalize_url("http://127.0.0.1:8081") != normalize_url("http://127.0.0.1:8082")


def test_client_errors_that_need_a_new_bootstrap_are_recognised() -> None:
    assert classify("sync error: failed to pull frame: status=410 Gone, error=...") == "generation_gone"
    assert classify("invalid local state: db file exists but metadata file does not") == "invalid_local_state"
    assert classify("server returned a conflict: sent=3, got=9") == "conflict"
    assert classify("server returned a lower generation than local: local=5, remote=1") == "primary_behind"
    assert classify("failed to pull frame: status=424 Failed Dependency") is None


# -- scheduler -------------------------------------------------------------------------------------


class FakeSync:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False
        self.delay = 0.0

    async def __call__(self) -> SyncOutcome:
        self.calls += 1
        started = time.monotonic()
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("primary unreachable")
        return SyncOutcome(started=started, duration=self.delay, frames=1, changed=True)


@pytest.mark.anyio
async def test_backoff_grows_exponentially_with_jitter_up_to_a_cap() -> None:
    sync = FakeSync()
    scheduler = Scheduler(sync, interval=0.5, timeout=1, max_lag=2, max_backoff=4)
    sync.fail = True
    bases = []
    for _ in range(6):
        await scheduler.run_once()
        bases.append(scheduler._delay(jitter=False))
        jittered = scheduler._delay()
        assert 0.5 * bases[-1] <= jittered <= 1.5 * bases[-1]
    assert bases == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert scheduler.state == "error" and scheduler.last_error == "primary unreachable"
    sync.fail = False
    await scheduler.run_once()
    assert scheduler._delay() == 0.5 and scheduler.state == "synced"


@pytest.mark.anyio
async def test_state_goes_stale_when_lag_exceeds_max_lag() -> None:
    scheduler = Scheduler(FakeSync(), interval=1, timeout=1, max_lag=0.05)
    assert scheduler.state == "stale"  # no sync yet
    await scheduler.run_once()
    assert scheduler.state == "synced"
    await asyncio.sleep(0.1)
    assert scheduler.state == "stale"
    scheduler.phase = "resyncing"
    assert scheduler.state == "resyncing"


@pytest.mark.anyio
async def test_waiters_share_a_sync_and_late_waiters_get_the_next_one() -> None:
    sync = FakeSync()
    sync.delay = 0.05
    scheduler = Scheduler(sync, interval=60, timeout=5, max_lag=10)
    scheduler.start()
    try:
        first = await asyncio.gather(scheduler.sync_after(), scheduler.sync_after(), scheduler.sync_after())
        assert sync.calls == 1 and first[0] is first[1] is first[2]
        # One that asks while a sync runs must wait for a sync that starts after it asked.
        running = asyncio.create_task(scheduler.sync_after())
        await asyncio.sleep(0.01)
        assert scheduler.running
        late = await scheduler.sync_after()
        assert late.started > (await running).started
        sync.fail = True
        with pytest.raises(SyncFailed, match="primary unreachable"):
            await scheduler.sync_after()
    finally:
        await scheduler.stop()


@pytest.mark.anyio
async def test_waiting_for_a_position_reuses_a_sync_that_reaches_it_and_shares_the_next_one() -> None:
    position = [0]  # the frame the fake replica is at; each sync pulls what the "primary" has
    primary = [0]

    async def sync() -> SyncOutcome:
        started, pulled = time.monotonic(), primary[0]
        await asyncio.sleep(0.05)
        position[0] = pulled
        return SyncOutcome(started=started, duration=0.05, frames=1, changed=True)

    scheduler = Scheduler(sync, interval=60, timeout=5, max_lag=10)
    scheduler.start()
    try:
        calls = scheduler.started_count
        await scheduler.sync_until(lambda: position[0] >= 0)  # already there: no sync at all
        assert scheduler.started_count == calls
        # Three writers committed frames 1-3 before asking: one sync serves them all.
        primary[0] = 3
        await asyncio.gather(*(scheduler.sync_until(lambda f=f: position[0] >= f) for f in (1, 2, 3)))
        assert scheduler.started_count == calls + 1
        # A sync running when the write's frame already exists on the primary covers it: no second sync.
        primary[0] = 4
        scheduler.trigger()
        await asyncio.sleep(0.01)
        assert scheduler.running
        await scheduler.sync_until(lambda: position[0] >= 4)
        assert scheduler.started_count == calls + 2 and not scheduler.running
        # One it does not cover is followed by the next sync at once.
        scheduler.trigger()
        await asyncio.sleep(0.01)
        primary[0] = 5
        await scheduler.sync_until(lambda: position[0] >= 5)
        assert scheduler.started_count == calls + 4
    finally:
        await scheduler.stop()


@pytest.mark.anyio
async def test_a_sync_cut_short_does_not_answer_waiters_or_count_as_caught_up() -> None:
    outcomes = [False, False, True]

    async def sync() -> SyncOutcome:
        return SyncOutcome(started=time.monotonic(), duration=0, frames=5, changed=True, complete=outcomes.pop(0))

    scheduler = Scheduler(sync, interval=60, timeout=5, max_lag=10)
    scheduler.start()
    try:
        outcome = await scheduler.sync_after()
        assert outcome.complete and outcomes == []
        assert scheduler.syncs == 3 and scheduler.lag() is not None
    finally:
        await scheduler.stop()


# -- bootstrap download ------------------------------------------------------------------------------


class FlakyExport(http.server.BaseHTTPRequestHandler):
    """/export/1 over real HTTP that breaks off mid-body once, then honours Range (or ignores it)."""

    data = b""
    ranges = True
    stall = False
    requests: list[str | None] = []
    half_sent = threading.Event()
    release = threading.Event()

    def do_GET(self) -> None:
        header = self.headers.get("range")
        self.requests.append(header)
        start = int(header.removeprefix("bytes=").rstrip("-")) if header and self.ranges else 0
        body = self.data[start:]
        self.send_response(206 if start else 200)
        self.send_header("content-length", str(len(body)))
        if start:
            self.send_header("content-range", f"bytes {start}-{len(self.data) - 1}/{len(self.data)}")
        self.end_headers()
        if len(self.requests) == 1:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.half_sent.set()
            if self.stall:
                self.release.wait(30)  # a primary gone silent mid-body
            self.connection.shutdown(socket.SHUT_RDWR)  # the connection breaks mid-body
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def export_server(
    data: bytes, ranges: bool, stall: bool = False, tls: ssl.SSLContext | None = None
) -> Iterator[tuple[str, type[FlakyExport]]]:
    fields = {"data": data, "ranges": ranges, "stall": stall, "requests": []}
    handler = type("Export", (FlakyExport,), {**fields, "half_sent": threading.Event(), "release": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}", handler
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("ranges", [True, False])
@pytest.mark.anyio
async def test_an_interrupted_download_resumes_or_restarts_and_ends_verified(tmp_path: Path, ranges: bool) -> None:
    data = make_database(tmp_path / "source.db", rows=400)
    files = ReplicaFiles(tmp_path / "node")
    with export_server(data, ranges) as (url, handler):
        async with httpx.AsyncClient() as http_client:
            progress = bootstrap.Progress()
            with pytest.raises(bootstrap.BootstrapError, match="ended at"):
                await bootstrap.download(http_client, url, 1, files, progress)
            assert (files.staging / bootstrap.PARTIAL).stat().st_size == len(data) // 2
            progress = bootstrap.Progress()
            partial = await bootstrap.download(http_client, url, 1, files, progress)
    assert partial.read_bytes() == data
    assert handler.requests == [None, f"bytes={len(data) // 2}-"]
    if ranges:
        assert progress.resumed_from == len(data) // 2 and progress.restarted == 0
    else:
        assert progress.resumed_from == 0 and progress.restarted == 1
    status = progress.as_dict()
    assert status["bytes_done"] == status["bytes_total"] == len(data) and status["phase"] == "verifying"


class ForwardProxy(http.server.BaseHTTPRequestHandler):
    """A plain HTTP forward proxy: asked for an absolute URL, it fetches it and relays the answer."""

    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("proxy-authorization")))
        parts = urlsplit(self.path)
        upstream = http.client.HTTPConnection(parts.netloc, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-authorization", "host")}
        upstream.request("GET", parts.path, headers=headers)
        answer = upstream.getresponse()
        body = answer.read()
        self.send_response(answer.status)
        for name in ("content-length", "content-range"):
            if answer.getheader(name):
                self.send_header(name, answer.getheader(name))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.anyio
async def test_a_download_goes_through_the_proxy_the_environment_names_unless_no_proxy_exempts_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_database(tmp_path / "source.db", rows=400)
    handler = type("Proxy", (ForwardProxy,), {"seen": []})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        with export_server(data, ranges=True) as (url, _):
            monkeypatch.setenv("HTTP_PROXY", f"http://user:pa%20ss@127.0.0.1:{proxy.server_address[1]}")
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            async with httpx.AsyncClient() as http_client:
                with pytest.raises(bootstrap.BootstrapError):
                    await bootstrap.download(http_client, url, 1, ReplicaFiles(tmp_path / "a"), bootstrap.Progress())
                partial = await bootstrap.download(
                    http_client, url, 1, ReplicaFiles(tmp_path / "a"), bootstrap.Progress()
                )
                assert partial.read_bytes() == data
                assert [path for path, _ in handler.seen] == [f"{url}/export/1"] * 2
                assert handler.seen[0][1] == "Basic " + base64.b64encode(b"user:pa ss").decode()
                monkeypatch.setenv("NO_PROXY", "127.0.0.1")
                partial = await bootstrap.download(
                    http_client, url, 1, ReplicaFiles(tmp_path / "b"), bootstrap.Progress()
                )
                assert partial.read_bytes() == data and len(handler.seen) == 2
    finally:
        proxy.shutdown()
        proxy.server_close()


@pytest.mark.anyio
async def test_a_download_over_https_checks_the_certificate_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    openssl = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl += ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"]
    await asyncio.to_thread(
        subprocess.run, [*openssl, "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True
    )
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    data = make_database(tmp_path / "source.db", rows=400)
    files = ReplicaFiles(tmp_path / "node")
    with export_server(data, ranges=True, tls=server_tls) as (url, _):
        async with httpx.AsyncClient() as http_client:
            with pytest.raises(bootstrap.BootstrapError, match="certificate verify failed"):
                await bootstrap.download(http_client, url, 1, files, bootstrap.Progress())
            monkeypatch.setattr(bootstrap, "client_context", lambda: ssl.create_default_context(cafile=cert))
            with pytest.raises(bootstrap.BootstrapError, match=r"ended at|broke off"):
                await bootstrap.download(http_client, url, 1, files, bootstrap.Progress())
            progress = bootstrap.Progress()
            partial = await bootstrap.download(http_client, url, 1, files, progress)
    assert partial.read_bytes() == data and 0 < progress.resumed_from <= len(data) // 2


@pytest.mark.anyio
async def test_a_partial_download_of_another_generation_is_not_resumed(tmp_path: Path) -> None:
    data = make_database(tmp_path / "source.db")
    files = ReplicaFiles(tmp_path / "node")
    files.staging.mkdir(parents=True)
    (files.staging / bootstrap.PARTIAL).write_bytes(b"stale bytes of generation 1")
    with export_server(data, ranges=True) as (url, handler):
        handler.requests.append("the first request breaks off; this one stands in for it")
        (files.staging / bootstrap.STATE).write_bytes(msgspec.json.encode(bootstrap.PartialState(url, 1)))
        async with httpx.AsyncClient() as http_client:
            partial = await bootstrap.download(http_client, url, 2, files, bootstrap.Progress())
    assert handler.requests[1:] == [None] and partial.read_bytes() == data


@pytest.mark.anyio
async def test_a_cancelled_download_stops_at_once_keeping_what_arrived_for_the_next_attempt(tmp_path: Path) -> None:
    data = make_database(tmp_path / "source.db", rows=16_000)  # half of it is more than a chunk
    files = ReplicaFiles(tmp_path / "node")
    with export_server(data, ranges=True, stall=True) as (url, handler):
        async with httpx.AsyncClient(timeout=60) as http_client:
            first = bootstrap.Progress()
            task = asyncio.create_task(bootstrap.download(http_client, url, 1, files, first))
            assert await asyncio.to_thread(handler.half_sent.wait, 10)
            for _ in range(1000):  # until the first whole chunk is on disk; the rest hangs
                if first.bytes_done >= bootstrap.CHUNK:
                    break
                await asyncio.sleep(0.01)
            began = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Not the 60 s read timeout: the blocked read was interrupted, and the thread has ended.
            assert time.monotonic() - began < 5
            # Every whole chunk written is kept (the one in the buffer when the read broke off may not be).
            kept = (files.staging / bootstrap.PARTIAL).read_bytes()
            assert bootstrap.CHUNK <= len(kept) <= len(data) // 2 and data.startswith(kept)
            progress = bootstrap.Progress()
            partial = await bootstrap.download(http_client, url, 1, files, progress)
    assert partial.read_bytes() == data and progress.resumed_from == len(kept)


def test_verification_refuses_truncated_or_foreign_files(tmp_path: Path) -> None:
    data = make_database(tmp_path / "source.db", rows=200)
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(data[: len(data) - 4096])
    with pytest.raises(bootstrap.BootstrapError, match="header says"):
        bootstrap.verify(truncated)
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"<html>not a database</html>" * 200)
    with pytest.raises(bootstrap.BootstrapError, match="not a SQLite database"):
        bootstrap.verify(foreign)
    bootstrap.verify(tmp_path / "source.db")


# -- relay -------------------------------------------------------------------------------------------


def test_the_relay_answers_424_fast_when_the_primary_is_down_or_the_deadline_passed() -> None:
    relay = Relay(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    relay.start()
    try:
        began = time.monotonic()
        response = httpx.get(relay.url + "/sync/1/1/129")
        assert response.status_code == 424 and "unreachable" in response.text
        assert time.monotonic() - began < 1
        relay.set_deadline(0.001)
        time.sleep(0.01)
        assert "deadline" in httpx.get(relay.url + "/info").text
    finally:
        relay.stop()
    assert not relay.alive()


@pytest.mark.anyio
async def test_a_dead_relay_or_connection_process_is_replaced_by_the_next_sync(tmp_path: Path) -> None:
    from edgenode.config import load_settings
    from edgenode.errors import Unavailable
    from edgenode.pragmas import select_profile
    from edgenode.replica.database import ReplicaDatabase
    from tests.test_replica_support import TOKEN, primary_write, start_primary

    primary = await asyncio.to_thread(start_primary, tmp_path)
    try:
        await asyncio.to_thread(primary_write, primary, "CREATE TABLE t(x)", "INSERT INTO t VALUES (1)")
        settings = load_settings(
            {"data_dir": str(tmp_path / "node"), "primary_url": primary.url, "primary_token": TOKEN}, env={}
        )
        db = ReplicaDatabase(settings, select_profile("auto"), watch=False)
        await db.start()
        try:
            assert (await db.read("SELECT x FROM t")).rows == [[1]]
            assert db.relay._popen is not None
            db.relay._popen.kill()
            await asyncio.to_thread(db.relay._popen.wait)
            await asyncio.to_thread(primary_write, primary, "INSERT INTO t VALUES (2)")
            await db.scheduler.sync_after()
            assert db.relay.restarts == 1
            assert (await db.read("SELECT count(*) FROM t")).rows == [[2]]

            assert db.owner is not None
            db.owner.kill()
            with pytest.raises(Unavailable, match="restarted"):
                await db.read("SELECT 1")
            await db.scheduler.sync_after()
            assert (await db.read("SELECT count(*) FROM t")).rows == [[2]]
            assert db.resyncs == {}
        finally:
            await db.stop()
    finally:
        await asyncio.to_thread(primary.stop)


def test_the_relay_cuts_pull_responses_after_whole_transactions() -> None:
    def frame(commit: bool) -> bytes:
        return (7).to_bytes(4, "big") + (5 if commit else 0).to_bytes(4, "big") + bytes(FRAME_SIZE - 8)

    body = b"".join(frame(i % 3 == 2) for i in range(30))  # ten 3-frame transactions
    cut = cut_after_commits(body, 4)
    assert len(cut) == 12 * FRAME_SIZE and cut == body[: len(cut)]
    assert cut_after_commits(body, 16) == body


def test_a_read_bound_compares_generation_before_frame() -> None:
    from edgenode.replica.database import position_reached
    from edgenode.replica.files import Position

    written = (3, 5)  # a write acknowledged at generation 3, frame 5
    assert not position_reached(Position(2, 1800), *written)  # more frames, but an older generation
    assert not position_reached(Position(3, 4), *written)
    assert position_reached(Position(3, 5), *written)
    assert position_reached(Position(4, 1), *written)
    assert not position_reached(None, *written)
    assert position_reached(Position(1, 0), None, None)  # no bound
    assert position_reached(Position(2, 9), None, 7)  # frame alone: within the current generation
