"""The change stream (`GET /api/v1/changes`, `/api/v1/changes/ws`) against real node processes,
with real HTTP (httpx) and WebSocket (websockets) clients: every subscriber gets exactly its
events in commit order, resumes with its cursor, across `kill -9`, on a replica too; a slow one is
cut off; an expired cursor or token ends the stream explicitly.

Scale with CHANGES_TEST_WRITES and CHANGES_TEST_SUBSCRIBERS (the issue's run: 10000 and 50).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from edgenode.auth import Access, generate_keypair, mint_token
from edgenode.changes.client import parse_sse
from edgenode.hrana.client import HranaClient
from tests.procs import Proc, start
from tests.test_replica_support import FAST, NODE_TOKEN, TOKEN, eventually, primary_write, start_primary

RW, RO = "changes-rw", "changes-ro"
WRITES = int(os.environ.get("CHANGES_TEST_WRITES", "2000"))
SUBSCRIBERS = int(os.environ.get("CHANGES_TEST_SUBSCRIBERS", "20"))
TABLES = ("a", "b", "c")
SCHEMA = [f"CREATE TABLE {t} (id INTEGER PRIMARY KEY, k INTEGER, v TEXT, f REAL, x BLOB)" for t in TABLES] + [
    f"CREATE INDEX {t}_k ON {t}(k)" for t in TABLES
]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("jwt"))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("changes")
    args = ["serve", "--data-dir", str(tmp / "data"), "--no-migrate", "--auth-token", RW, "--read-token", RO]
    args += ["--jwt-key-file", str(keys[1]), "--changes-buffer", "100", "--changes-heartbeat", "1"]
    proc = start(args, tmp, "node", ready_path="/ready")
    with httpx.Client(base_url=proc.url, headers=_auth(RW), timeout=30) as client:
        _execute(client, *SCHEMA)
        for table in TABLES:
            response = client.put(f"/api/v1/changes/tables/{table}")
            assert response.status_code == 200, response.text
    yield proc
    proc.stop()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _execute(client: httpx.Client, *statements: str | tuple[str, list[Any]]) -> httpx.Response:
    body = {"statements": [{"sql": s} if isinstance(s, str) else {"sql": s[0], "params": s[1]} for s in statements]}
    response = client.post("/api/v1/execute", json=body)
    assert response.status_code == 200, response.text
    return response


def _position(url: str) -> int:
    response = httpx.get(url + "/api/v1/changes/tables", headers=_auth(RO), timeout=10)
    assert response.status_code == 200, response.text
    return int(response.json()["position"])


# -- a workload whose events are known in advance ------------------------------------------------


@dataclass
class Workload:
    """Transactions of inserts, updates and deletes; `events` is what the stream must say."""

    transactions: list[list[tuple[str, list[Any]]]] = field(default_factory=list)
    events: list[list[tuple[str, str, int, dict[str, Any] | None]]] = field(default_factory=list)

    @classmethod
    def make(cls, writes: int, seed: int = 7, id_base: int = 0) -> Workload:
        rnd = random.Random(seed)
        work = cls()
        rows: dict[str, dict[int, dict[str, Any]]] = {t: {} for t in TABLES}
        next_id = id_base + 1
        while sum(len(t) for t in work.transactions) < writes:
            statements, events = [], []
            for _ in range(rnd.choice((1, 1, 1, 2, 3))):
                table = rnd.choice(TABLES)
                live = rows[table]
                choice = rnd.random()
                if choice < 0.6 or not live:
                    row = {
                        "id": next_id,
                        "k": rnd.randrange(5),
                        "v": rnd.choice(["plain", "it's", "é ✓", ""]) + str(next_id),
                        "f": rnd.choice([0.1, 1e300, -2.5, 1 / 3]),
                        "x": rnd.randbytes(4),
                    }
                    next_id += 1
                    live[row["id"]] = row
                    statements.append(
                        (
                            f"INSERT INTO {table} (id, k, v, f, x) VALUES (?, ?, ?, ?, ?)",
                            [row["id"], row["k"], row["v"], row["f"], {"base64": _b64(row["x"])}],
                        )
                    )
                    events.append((table, "insert", row["id"], dict(row)))
                elif choice < 0.85:
                    rid = rnd.choice(list(live))
                    live[rid] = {**live[rid], "k": rnd.randrange(5), "v": f"upd{rid}-{len(work.transactions)}"}
                    big = rnd.choice([2**63 - 1, -(2**63), 2**53 + 1])
                    live[rid]["f"] = float(big)
                    statements.append(
                        (
                            f"UPDATE {table} SET k = ?, v = ?, f = ? WHERE id = ?",
                            [live[rid]["k"], live[rid]["v"], big, rid],
                        )
                    )
                    events.append((table, "update", rid, dict(live[rid])))
                else:
                    rid = rnd.choice(list(live))
                    old = live.pop(rid)
                    statements.append((f"DELETE FROM {table} WHERE id = ?", [rid]))
                    events.append((table, "delete", rid, old))  # the filter judges the deleted row
            work.transactions.append(statements)
            work.events.append(events)
        return work

    def expected(self, tables: set[str], where: tuple[str, Any] | None, commits: bool = True) -> list[tuple]:
        """(table, op, rowid, row) per change, ("commit",) after each transaction it saw part of."""
        out: list[tuple] = []
        for events in self.events:
            taken = [e for e in events if e[0] in tables and (where is None or (e[3] or {}).get(where[0]) == where[1])]
            out += [(t, op, rid, None if op == "delete" else _jsonable(row)) for t, op, rid, row in taken]
            if taken and commits:
                out.append(("commit",))
        return out


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _jsonable(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: {"base64": _b64(v)} if isinstance(v, bytes) else v for k, v in row.items()}


def _as_tuple(data: dict[str, Any]) -> tuple:
    if data["op"] == "commit":
        return ("commit",)
    return (data["table"], data["op"], data["rowid"], data["row"])


def _write_all(client: httpx.Client, work: Workload) -> None:
    for statements in work.transactions:
        _execute(client, *statements)


# -- subscribers -------------------------------------------------------------------------------


@dataclass
class Subscriber:
    """Follows the stream until it has `want` events; reconnects now and then with its cursor."""

    url: str
    tables: set[str]
    where: tuple[str, Any] | None
    after: int
    want: int
    websocket: bool = False
    reconnect_every: int = 0  # reconnect after about this many events (0: never by choice)
    token: str = RO
    got: list[tuple] = field(default_factory=list)
    cursors: list[int] = field(default_factory=list)
    reconnects: int = 0
    cut_off: int = 0
    dropped: int = 0
    error: str | None = None

    def params(self) -> dict[str, str]:
        params = {"tables": ",".join(sorted(self.tables)), "after": str(self.after)}
        if self.where:
            params["where"] = f"{self.where[0]}={self.where[1]}"
        return params

    def run(self, deadline: float) -> None:
        rnd = random.Random(hash((self.after, tuple(sorted(self.tables)), self.websocket)))
        try:
            while len(self.got) < self.want and time.monotonic() < deadline:
                quota = rnd.randrange(1, 2 * self.reconnect_every) if self.reconnect_every else None
                try:
                    (self._ws if self.websocket else self._sse)(quota, deadline)
                except (httpx.TransportError, ConnectionClosed, OSError):
                    self.dropped += 1  # the node went away (kill -9): come back with the cursor
                    time.sleep(0.1)
                self.reconnects += 1
        except Exception as exc:  # reported by the test, with the subscriber that failed
            self.error = f"{type(exc).__name__}: {exc}"

    def _take(self, data: dict[str, Any]) -> None:
        self.got.append(_as_tuple(data))
        self.cursors.append(int(data["cursor"]))
        self.after = int(data["cursor"])

    def _sse(self, quota: int | None, deadline: float) -> None:
        headers = _auth(self.token)
        with httpx.stream("GET", self.url + "/api/v1/changes", params=self.params(), headers=headers, timeout=30) as r:
            assert r.status_code == 200, r.read()
            taken = 0
            for event in parse_sse(r.iter_lines()):
                if event.event != "message":
                    assert event.data["reason"] == "slow_subscriber", event
                    self.cut_off += 1
                    return
                assert event.id == str(event.data["cursor"])
                self._take(event.data)
                taken += 1
                if len(self.got) >= self.want or (quota and taken >= quota) or time.monotonic() > deadline:
                    return

    def _ws(self, quota: int | None, deadline: float) -> None:
        url = self.url.replace("http://", "ws://") + "/api/v1/changes/ws?" + urlencode(self.params())
        # max_queue=None: websockets' sync client stops reading the socket once 16 messages wait
        # unread, so closing mid-stream (the reconnects here) would not see the node's close frame
        # behind the buffered events and would sit out its 10 s close timeout each time.
        with ws_connect(url, additional_headers=_auth(self.token), open_timeout=30, max_queue=None) as ws:
            taken = 0
            while True:
                data = json.loads(ws.recv(timeout=30))
                if "event" in data:
                    assert data["reason"] == "slow_subscriber", data
                    self.cut_off += 1
                    return
                self._take(data)
                taken += 1
                if len(self.got) >= self.want or (quota and taken >= quota) or time.monotonic() > deadline:
                    return


def _check(sub: Subscriber, expected: list[tuple]) -> None:
    assert sub.error is None, sub.error
    assert sub.cursors == sorted(set(sub.cursors)), "a cursor came twice or out of order"
    assert len(sub.got) == len(expected), f"{len(sub.got)} events, expected {len(expected)}"
    for index, (got, want) in enumerate(zip(sub.got, expected, strict=True)):
        assert got == want, f"event {index}: {got} != {want}"


# -- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("websockets", [False, True], ids=["sse", "sse-and-websocket"])
def test_every_subscriber_gets_exactly_its_changes_in_order_while_reconnecting(node: Proc, websockets: bool) -> None:
    work = Workload.make(WRITES, id_base=2_000_000 if websockets else 0)  # both variants share the node
    start_at = _position(node.url)
    kinds: list[tuple[set[str], tuple[str, Any] | None]] = [
        (set(TABLES), None),
        ({"a"}, None),
        ({"b", "c"}, None),
        ({"a", "b", "c"}, ("k", 3)),
        ({"c"}, ("k", 0)),
    ]
    subs = []
    for i in range(SUBSCRIBERS):
        tables, where = kinds[i % len(kinds)]
        want = len(work.expected(tables, where))
        subs.append(
            Subscriber(
                node.url,
                tables,
                where,
                start_at,
                want,
                websocket=websockets and i % 3 == 2,
                reconnect_every=[0, 150, 40][i % 3] if i % 4 else 0,
            )
        )
    deadline = time.monotonic() + 120
    threads = [threading.Thread(target=s.run, args=(deadline,), daemon=True) for s in subs]
    for t in threads:
        t.start()
    with httpx.Client(base_url=node.url, headers=_auth(RW), timeout=30) as client:
        _write_all(client, work)
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    for sub in subs:
        _check(sub, work.expected(sub.tables, sub.where))
    assert sum(s.reconnects for s in subs) > SUBSCRIBERS  # some did come back with their cursor


def test_subscriptions_are_checked_against_the_schema_and_the_token(node: Proc, keys: tuple[Path, Path]) -> None:
    url = node.url + "/api/v1/changes"

    def get(params: dict[str, str], token: str | None = RO) -> httpx.Response:
        return httpx.get(url, params=params, headers=_auth(token) if token else {}, timeout=10)

    cases = [
        ({}, "invalid_request"),
        ({"tables": "nope"}, "unknown_table"),
        ({"tables": "a", "where": "nope=1"}, "invalid_filter"),
        ({"tables": "a", "where": "k=abc"}, "invalid_filter"),
        ({"tables": "a", "where": "x=00"}, "invalid_filter"),
        ({"tables": "a", "where": "k"}, "invalid_filter"),
        ({"tables": "a", "after": "-3"}, "invalid_cursor"),
    ]
    for params, code in cases:
        response = get(params)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["error"]["code"] == code, (params, response.text)
    with httpx.Client(base_url=node.url, headers=_auth(RW), timeout=10) as client:
        _execute(client, "CREATE TABLE IF NOT EXISTS uncaptured (id INTEGER PRIMARY KEY)")
    assert get({"tables": "uncaptured"}).json()["error"]["code"] == "table_not_captured"
    assert get({"tables": "a"}, token=None).status_code == 401
    ro_put = httpx.put(node.url + "/api/v1/changes/tables/a", headers=_auth(RO), timeout=10)
    assert ro_put.status_code == 403
    ws_url = node.url.replace("http://", "ws://") + "/api/v1/changes/ws?tables=a"
    with ws_connect(ws_url, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["reason"] == "unauthorized"

    # A JWT that expires ends the stream at its expiry, saying so.
    token = mint_token(keys[0].read_bytes(), Access.READ, ttl_seconds=2)
    started = time.monotonic()
    with httpx.stream("GET", url, params={"tables": "a"}, headers=_auth(token), timeout=30) as response:
        assert response.status_code == 200
        events = list(parse_sse(response.iter_lines()))
    assert [(e.event, e.data["reason"]) for e in events] == [("error", "token_expired")]
    assert time.monotonic() - started < 8


def test_capture_refuses_tables_its_triggers_would_break_and_takes_the_schemas_spelling(node: Proc) -> None:
    with httpx.Client(base_url=node.url, headers=_auth(RW), timeout=30) as client:
        _execute(
            client,
            "CREATE TABLE IF NOT EXISTS keyed (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID",
            "CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(body)",
            "CREATE VIEW IF NOT EXISTS a_view AS SELECT id FROM a",
            "CREATE TABLE IF NOT EXISTS Mixed (id INTEGER PRIMARY KEY, v TEXT)",
            'CREATE TABLE IF NOT EXISTS "with space" (id INTEGER PRIMARY KEY)',
            "CREATE TABLE IF NOT EXISTS shadowed (rowid TEXT, v TEXT)",
        )
        # Once captured, a WITHOUT ROWID table refused every write (no new.rowid); the writer
        # process crashed on a write to an FTS5 table whose shadow table was captured.
        for table, says in [
            ("keyed", "WITHOUT ROWID"),
            ("docs_fts", "virtual table"),
            ("docs_fts_data", "shadow table"),
            ("a_view", "a view"),
            ("with space", "letters, digits and _"),
            ("SQLITE_SCHEMA", "internal"),
            ("shadowed", "column named rowid"),  # new.rowid read it: a NULL there failed every insert
        ]:
            response = client.put(f"/api/v1/changes/tables/{table}")
            assert response.status_code == 400, (table, response.text)
            assert says in response.json()["error"]["message"], (table, response.text)
        _execute(
            client,
            ("INSERT INTO keyed VALUES (?, ?)", ["k", "v"]),
            ("INSERT INTO docs_fts VALUES (?)", ["x"]),
            ("INSERT INTO shadowed (v) VALUES (?)", ["x"]),
        )

        # SQLite names are case-insensitive: any spelling captures (and follows) the schema's one.
        for spelling in ("mixed", "MIXED"):
            response = client.put(f"/api/v1/changes/tables/{spelling}")
            assert response.status_code == 200, response.text
            assert response.json()["table"] == "Mixed"
        captured = client.get("/api/v1/changes/tables").json()["tables"]
        assert "Mixed" in captured and "mixed" not in captured and "MIXED" not in captured
        start_at = _position(node.url)
        _execute(client, ("INSERT INTO mixed (id, v) VALUES (?, ?)", [1, "one"]))
    sub = Subscriber(node.url, {"mIxEd"}, None, start_at, want=2, token=RO)
    sub.run(time.monotonic() + 20)
    assert sub.error is None, sub.error
    assert sub.got == [("Mixed", "insert", 1, {"id": 1, "v": "one"}), ("commit",)]


def test_a_subscriber_that_stops_reading_is_cut_off_while_writes_keep_flowing(node: Proc) -> None:
    """The stalled client's socket buffers fill, its queue of 100 fills, it is cut off; writes and
    a reading subscriber go on meanwhile."""
    start_at = _position(node.url)
    stalled = socket.create_connection(("127.0.0.1", node.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = f"GET /api/v1/changes?tables=a&after={start_at} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {RO}\r\n\r\n"
    stalled.sendall(request.encode())
    big = "z" * 20_000
    writes = 400
    reader = Subscriber(node.url, {"a"}, None, start_at, want=2 * writes)
    thread = threading.Thread(target=reader.run, args=(time.monotonic() + 90,), daemon=True)
    thread.start()
    latencies = []
    with httpx.Client(base_url=node.url, headers=_auth(RW), timeout=30) as client:
        for i in range(writes):
            began = time.perf_counter()
            _execute(client, ("INSERT INTO a (id, k, v) VALUES (?, 1, ?)", [10_000_000 + i, big]))
            latencies.append(time.perf_counter() - began)
    thread.join(90)
    assert reader.error is None and len(reader.got) == 2 * writes
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.5, latencies[len(latencies) // 2]
    # The stalled connection was cut off: counted, and no longer a subscriber (reading what it
    # still has buffered through a 4 KiB window would take minutes, so it is not read).
    status = httpx.get(node.url + "/api/v1/status", headers=_auth(RO), timeout=10).json()["components"]["changes"]
    assert status["cut_off"] >= 1
    _wait_subscribers(node, 0)
    stalled.close()


def _wait_subscribers(node: Proc, count: int) -> None:
    deadline = time.monotonic() + 15
    while True:
        status = httpx.get(node.url + "/api/v1/status", headers=_auth(RO), timeout=10).json()
        if status["components"]["changes"]["subscribers"] == count:
            return
        assert time.monotonic() < deadline, f"{status['components']['changes']} never had {count} subscribers"
        time.sleep(0.1)


def test_kill_9_mid_stream_then_resume_from_cursors_and_expired_cursors_get_resync(tmp_path: Path) -> None:
    args = ["serve", "--data-dir", str(tmp_path / "data"), "--no-migrate", "--changes-retention", "100"]
    proc = start(args, tmp_path, "node", ready_path="/ready")
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            _execute(client, *SCHEMA)
            for table in TABLES:
                assert client.put(f"/api/v1/changes/tables/{table}").status_code == 200
        work = Workload.make(400, seed=11)
        expected = work.expected(set(TABLES), None)
        sub = Subscriber(proc.url, set(TABLES), None, _position(proc.url), want=len(expected))
        thread = threading.Thread(target=sub.run, args=(time.monotonic() + 25,), daemon=True)
        thread.start()
        acknowledged = 0
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            for statements in work.transactions[:200]:
                _execute(client, *statements)
                acknowledged += 1
        proc.kill()  # mid-stream: the subscriber's connection drops
        proc.start(ready_path="/ready")
        _wait_subscribers(proc, 1)  # it came back before the feed moves on
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            for statements in work.transactions[200:]:
                _execute(client, *statements)
        thread.join(30)
        _check(sub, expected)
        assert sub.dropped >= 1
        # A cursor older than what the node keeps (100 entries) gets an explicit resync.
        with httpx.stream("GET", proc.url + "/api/v1/changes", params={"tables": "a", "after": "1"}) as response:
            events = list(parse_sse(response.iter_lines()))
        assert [(e.event, e.data["reason"]) for e in events] == [("resync", "cursor_expired")]
        ws_url = proc.url.replace("http://", "ws://") + "/api/v1/changes/ws?tables=a&after=1"
        with ws_connect(ws_url, open_timeout=10) as ws:
            message = json.loads(ws.recv(timeout=10))
        assert message["event"] == "resync" and message["oldest"] > 1
        # A cursor past every change this standalone node made (a restored or replaced database)
        # is refused the same way, never waited on in silence.
        ahead = str(_position(proc.url) + 1000)
        with httpx.stream("GET", proc.url + "/api/v1/changes", params={"tables": "a", "after": ahead}) as response:
            events = list(parse_sse(response.iter_lines()))
        assert [(e.event, e.data["reason"]) for e in events] == [("resync", "cursor_ahead")]
        # A graceful stop does not wait for open streams (their clients resume from their cursors).
        holder = Subscriber(proc.url, {"a"}, None, _position(proc.url), want=10**9)
        threading.Thread(target=holder.run, args=(time.monotonic() + 5,), daemon=True).start()
        _wait_subscribers(proc, 1)
        began = time.monotonic()
        assert proc.stop() in (0, -signal.SIGTERM)  # not -SIGKILL after a 15 s wait
        assert time.monotonic() - began < 10
    finally:
        proc.stop()


def test_a_replicas_subscribers_see_writes_made_on_the_primary(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    replica = None
    try:
        primary_write(primary, *SCHEMA)
        args = ["serve", "--data-dir", str(tmp_path / "replica"), "--auth-token", NODE_TOKEN]
        args += ["--primary-url", primary.url, "--primary-token", TOKEN, *FAST]
        replica = start(args, tmp_path, "replica", ready_path="/ready")
        headers = {"Authorization": f"Bearer {NODE_TOKEN}"}
        for table in TABLES:  # forwarded to the primary: the triggers live there
            response = httpx.put(f"{replica.url}/api/v1/changes/tables/{table}", headers=headers, timeout=30)
            assert response.status_code == 200, response.text
        work = Workload.make(150, seed=5)
        deadline = time.monotonic() + 40
        start_at = 0
        # The primary's transactions carry commit markers (edgenode.commit_marks), so the replica's
        # subscribers see a commit event after each.
        everything = work.expected(set(TABLES), None)
        some = work.expected({"b"}, ("k", 2))
        subs = [
            Subscriber(replica.url, set(TABLES), None, start_at, len(everything), token=NODE_TOKEN),
            Subscriber(replica.url, {"b"}, ("k", 2), start_at, len(some), websocket=True, token=NODE_TOKEN),
        ]
        threads = [threading.Thread(target=s.run, args=(deadline,), daemon=True) for s in subs]
        for t in threads:
            t.start()
        for statements in work.transactions:
            primary_write(primary, *[(sql, [_plain(p) for p in params]) for sql, params in statements])
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        _check(subs[0], everything)
        _check(subs[1], some)
        # Writes the replica forwards: a REST batch (the combiner's savepoint per write) and a
        # Hrana interactive transaction each end with a commit event.
        after = subs[0].after
        with httpx.Client(base_url=replica.url, headers=headers, timeout=30) as client:
            _execute(client, "INSERT INTO a (id, k) VALUES (50000001, 1)", "INSERT INTO a (id, k) VALUES (50000002, 1)")
        _hrana_transaction(replica.url, NODE_TOKEN, 50_000_003)
        _check_ops(replica.url, after, ["insert", "insert", "commit", "insert", "update", "commit"], NODE_TOKEN)
    finally:
        if replica is not None:
            replica.stop()
        primary.stop()


def _hrana_transaction(url: str, token: str, rowid: int) -> None:
    """BEGIN, an insert and an update of table a, COMMIT: one interactive Hrana transaction."""
    with HranaClient(url, token) as client, client.stream() as stream:
        stream.execute("BEGIN")
        stream.execute("INSERT INTO a (id, k) VALUES (?, 1)", [rowid])
        stream.execute("UPDATE a SET v = 'in the transaction' WHERE id = ?", [rowid])
        stream.execute("COMMIT")


def _check_ops(url: str, after: int, ops: list[str], token: str = RO) -> None:
    sub = Subscriber(url, {"a"}, None, after, want=len(ops), token=token)
    sub.run(time.monotonic() + 20)
    assert sub.error is None, sub.error
    assert [g[1] if g[0] != "commit" else "commit" for g in sub.got] == ops


def test_a_standalone_nodes_hrana_transactions_end_with_a_commit_event(node: Proc) -> None:
    start_at = _position(node.url)
    _hrana_transaction(node.url, RW, 60_000_001)
    # A savepoint is a unit of its own; one rolled back to leaves nothing to mark.
    with HranaClient(node.url, RW) as client, client.stream() as stream:
        for sql in ("SAVEPOINT s", "INSERT INTO a (id) VALUES (60000002)", "RELEASE s"):
            stream.execute(sql)
        for sql in ("BEGIN", "SAVEPOINT n", "INSERT INTO a (id) VALUES (60000003)", "ROLLBACK TO n", "RELEASE n"):
            stream.execute(sql)
        stream.execute("INSERT INTO a (id) VALUES (60000004)")
        stream.execute("COMMIT")
    _check_ops(node.url, start_at, ["insert", "update", "commit", "insert", "commit", "insert", "commit"])


def _plain(value: Any) -> Any:
    import base64

    return base64.b64decode(value["base64"]) if isinstance(value, dict) else value


def test_the_cli_prints_the_stream_one_json_object_a_line(node: Proc) -> None:
    import subprocess
    import sys

    from tests.procs import ROOT

    start_at = _position(node.url)
    args = ["changes", "--tables", "b", "--after", str(start_at), "--url", node.url, "--token", RO]
    cli = subprocess.Popen(
        [sys.executable, "-m", "edgenode", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(base_url=node.url, headers=_auth(RW), timeout=30) as client:
            _execute(client, ("INSERT INTO b (id, k, v) VALUES (?, 9, 'from the cli test')", [20_000_000]))
        assert cli.stdout is not None
        first = json.loads(cli.stdout.readline())
        assert (first["table"], first["op"], first["rowid"], first["row"]["v"]) == (
            "b",
            "insert",
            20_000_000,
            "from the cli test",
        )
        assert json.loads(cli.stdout.readline())["op"] == "commit"
    finally:
        cli.kill()
        cli.wait(10)


def test_values_round_trip_exactly(node: Proc) -> None:
    start_at = _position(node.url)
    text = "quote ' double \" newline \n tab \t nul-free é ✓ 𝄞"
    blob = bytes(range(256))
    with httpx.Client(base_url=node.url, headers=_auth(RW), timeout=30) as client:
        _execute(
            client,
            (
                "INSERT INTO c (id, k, v, f, x) VALUES (?, ?, ?, ?, ?)",
                [30_000_000, 2**63 - 1, text, 5e-324, {"base64": _b64(blob)}],
            ),
            ("UPDATE c SET k = ?, f = ? WHERE id = ?", [-(2**63), 1.7976931348623157e308, 30_000_000]),
        )
    sub = Subscriber(node.url, {"c"}, None, start_at, want=3)
    sub.run(time.monotonic() + 20)
    assert sub.error is None and [g[1] for g in sub.got[:2]] == ["insert", "update"] and sub.got[2] == ("commit",)
    inserted, updated = sub.got[0][3], sub.got[1][3]
    assert inserted == {"id": 30_000_000, "k": 2**63 - 1, "v": text, "f": 5e-324, "x": {"base64": _b64(blob)}}
    assert (updated["k"], updated["f"]) == (-(2**63), 1.7976931348623157e308)


def test_an_eventsource_reconnecting_to_its_after_url_resumes_from_its_last_event_id(node: Proc) -> None:
    """EventSource reconnects to the URL it was opened with, `?after=` and all, adding the newer
    `Last-Event-ID`: that one wins, or the events between would come twice."""
    start_at = _position(node.url)
    with httpx.Client(base_url=node.url, headers=_auth(RW), timeout=30) as client:
        for rowid in (40_000_001, 40_000_002):
            _execute(client, ("INSERT INTO b (id, k) VALUES (?, 1)", [rowid]))
    first = Subscriber(node.url, {"b"}, None, start_at, want=2)  # the first insert and its commit
    first.run(time.monotonic() + 20)
    assert first.error is None and first.got[0][2] == 40_000_001
    headers = {**_auth(RO), "Last-Event-ID": str(first.cursors[-1])}
    params = {"tables": "b", "after": str(start_at)}
    with httpx.stream("GET", node.url + "/api/v1/changes", params=params, headers=headers, timeout=30) as response:
        event = next(iter(parse_sse(response.iter_lines())))
    assert (event.data["op"], event.data["rowid"]) == ("insert", 40_000_002)


def test_a_cursor_this_subscription_would_not_take_opens_no_transaction(node: Proc) -> None:
    """Resuming inside a transaction ends it with its commit event; a cursor from another table's
    change, or one this filter rejects, is no such resume: its commit event came alone before."""
    start_at = _position(node.url)
    with httpx.Client(base_url=node.url, headers=_auth(RW), timeout=30) as client:
        _execute(client, ("INSERT INTO a (id, k) VALUES (?, 1)", [50_000_001]))  # a change, then its marker
        _execute(
            client,
            ("INSERT INTO c (id, k) VALUES (?, 1)", [50_000_002]),
            ("INSERT INTO c (id, k) VALUES (?, 2)", [50_000_003]),
        )
    of_a = Subscriber(node.url, {"a"}, None, start_at, want=2)
    of_a.run(time.monotonic() + 20)
    assert of_a.error is None and of_a.got[1] == ("commit",)
    a_change = of_a.cursors[0]

    def ops(tables: set[str], where: tuple[str, Any] | None, after: int, want: int) -> list[tuple]:
        sub = Subscriber(node.url, tables, where, after, want=want)
        sub.run(time.monotonic() + 20)
        assert sub.error is None, sub.error
        return [g[:3] for g in sub.got]

    # Another table's change: the stream starts with c's transaction, no lone commit of a's.
    assert ops({"c"}, None, a_change, 3) == [("c", "insert", 50_000_002), ("c", "insert", 50_000_003), ("commit",)]
    # The same table's change, which the filter rejects (k is 1): nothing of a's either.
    with httpx.Client(base_url=node.url, headers=_auth(RW), timeout=30) as client:
        _execute(client, ("INSERT INTO a (id, k) VALUES (?, 2)", [50_000_004]))
    assert ops({"a"}, ("k", 2), a_change, 2) == [("a", "insert", 50_000_004), ("commit",)]
    # Its own change inside a transaction: the rest of it, then its commit event.
    c_sub = Subscriber(node.url, {"c"}, None, a_change, want=1)
    c_sub.run(time.monotonic() + 20)
    assert ops({"c"}, None, c_sub.cursors[0], 2) == [("c", "insert", 50_000_003), ("commit",)]


def _query(url: str, sql: str) -> list[list[Any]]:
    response = httpx.post(url + "/api/v1/query", json={"sql": sql}, headers=_auth(RO), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def _captured(url: str) -> list[str]:
    response = httpx.get(url + "/api/v1/changes/tables", headers=_auth(RO), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["tables"]


def test_a_captured_table_renamed_is_followed_under_its_new_name(node: Proc) -> None:
    """ALTER TABLE ... RENAME kept the triggers firing with the old name written into the feed: the
    listing showed a phantom table and a capture of the new name recorded every change twice."""
    start_at = _position(node.url)
    with httpx.Client(base_url=node.url, headers=_auth(RW), timeout=30) as client:
        _execute(client, "CREATE TABLE rn (id INTEGER PRIMARY KEY, v TEXT)")
        assert client.put("/api/v1/changes/tables/rn").status_code == 200
        _execute(client, "INSERT INTO rn (id, v) VALUES (1, 'before')")
        old = Subscriber(node.url, {"rn"}, None, start_at, want=2)  # the insert and its commit
        old.run(time.monotonic() + 20)
        assert old.error is None and old.got[0][:3] == ("rn", "insert", 1)
        with httpx.stream("GET", node.url + "/api/v1/changes", params={"tables": "rn"}, headers=_auth(RO)) as stream:
            lines = stream.iter_lines()
            assert next(lines) == ": subscribed"
            _execute(client, "ALTER TABLE rn RENAME TO rn2")
            ended = next(e for e in parse_sse(lines) if e.event != "message")  # the stream of rn ends, saying why
        assert (ended.event, ended.data["reason"], ended.data["renamed_to"]) == ("error", "table_renamed", "rn2")
        assert _captured(node.url).count("rn") == 0 and "rn2" in _captured(node.url)
        # The tryout's step: a capture of the new name once more changes nothing.
        assert client.put("/api/v1/changes/tables/rn2").status_code == 200
        _execute(client, "INSERT INTO rn2 (id, v) VALUES (2, 'after')")
    assert _query(
        node.url, "SELECT count(*) FROM _edgenode_changes WHERE op = 'I' AND rid = 2 AND tbl IN ('rn', 'rn2')"
    ) == [[1]]
    old_triggers = "SELECT count(*) FROM sqlite_master WHERE name IN ('_edgenode_stream_rn_i', '_edgenode_stream_rn_u')"
    assert _query(node.url, old_triggers) == [[0]]
    # Resuming on the new name from before the rename: the table's whole history, once each.
    new = Subscriber(node.url, {"rn2"}, None, start_at, want=4)
    new.run(time.monotonic() + 20)
    assert new.error is None, new.error
    assert [g[:3] for g in new.got] == [("rn2", "insert", 1), ("commit",), ("rn2", "insert", 2), ("commit",)]


def test_a_replica_follows_a_table_renamed_on_its_primary(tmp_path: Path) -> None:
    """The rename reaches the replica by sync; its hub moves the triggers through the primary."""
    primary = start_primary(tmp_path)
    replica = None
    try:
        primary_write(primary, "CREATE TABLE rn (id INTEGER PRIMARY KEY, v TEXT)")
        args = ["serve", "--data-dir", str(tmp_path / "replica"), "--auth-token", NODE_TOKEN]
        args += ["--primary-url", primary.url, "--primary-token", TOKEN, *FAST]
        replica = start(args, tmp_path, "replica", ready_path="/ready")
        headers = {"Authorization": f"Bearer {NODE_TOKEN}"}
        assert httpx.put(f"{replica.url}/api/v1/changes/tables/rn", headers=headers, timeout=30).status_code == 200
        primary_write(primary, "INSERT INTO rn (id, v) VALUES (1, 'before')", "ALTER TABLE rn RENAME TO rn2")

        def tables() -> list[str]:
            return httpx.get(f"{replica.url}/api/v1/changes/tables", headers=headers, timeout=10).json()["tables"]

        eventually(lambda: tables() == ["rn2"], timeout=30)
        primary_write(primary, "INSERT INTO rn2 (id, v) VALUES (2, 'after')")
        sub = Subscriber(replica.url, {"rn2"}, None, 0, want=3, token=NODE_TOKEN)
        sub.run(time.monotonic() + 30)
        assert sub.error is None, sub.error
        assert [g[:3] for g in sub.got] == [("rn2", "insert", 1), ("commit",), ("rn2", "insert", 2)]
    finally:
        if replica is not None:
            replica.stop()
        primary.stop()


def test_a_websocket_client_that_sends_a_big_message_is_closed_with_1009(node: Proc) -> None:
    url = node.url.replace("http://", "ws://") + f"/api/v1/changes/ws?tables={TABLES[0]}"
    with ws_connect(url, additional_headers=_auth(RO), open_timeout=30) as ws:
        ws.send("small messages are read and ignored")
        ws.send(b"x" * (2 << 20))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, closed.value
