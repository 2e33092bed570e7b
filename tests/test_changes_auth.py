"""The change stream's auth against a real node process: a browser's token in `?access_token=`
(the change routes only, never in the node's log), and revocation by rotating the JWT key file:
open streams of old tokens end with `token_revoked`, new requests with them get 401, other
streams go on."""

from __future__ import annotations

import json
import os
import shutil
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
from tests.procs import Proc, start

# Distinctive, so finding them in the log means they leaked.
RW, RO = "rw-9c1e5d", "ro-browser-4b7f2a"
HEARTBEAT = 0.3  # the key file is looked at every heartbeat


@dataclass
class Node:
    proc: Proc
    key_file: Path  # the file the node reads; rotate by replacing it
    old: tuple[Path, Path]  # the key pair the node starts with
    new: tuple[Path, Path]  # the key pair a rotation installs


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    old, new = generate_keypair(tmp_path / "old"), generate_keypair(tmp_path / "new")
    key_file = tmp_path / "jwt_key.pem"
    shutil.copy(old[1], key_file)
    args = ["serve", "--data-dir", str(tmp_path / "data"), "--no-migrate", "--auth-token", RW, "--read-token", RO]
    args += ["--jwt-key-file", str(key_file), "--changes-heartbeat", str(HEARTBEAT)]
    proc = start(args, tmp_path, "node", ready_path="/ready")
    with httpx.Client(base_url=proc.url, headers=_auth(RW), timeout=30) as client:
        _execute(client, "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)")
        assert client.put("/api/v1/changes/tables/a").status_code == 200
    yield Node(proc, key_file, old, new)
    proc.stop()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _execute(client: httpx.Client, *sql: str) -> None:
    response = client.post("/api/v1/execute", json={"statements": [{"sql": s} for s in sql]})
    assert response.status_code == 200, response.text


def _insert(node: Node, rowid: int) -> None:
    with httpx.Client(base_url=node.proc.url, headers=_auth(RW), timeout=30) as client:
        _execute(client, f"INSERT INTO a (id, v) VALUES ({rowid}, 'x')")


def _token(pair: tuple[Path, Path], access: Access = Access.READ) -> str:
    return mint_token(pair[0].read_bytes(), access)


def _ws_url(node: Node, **params: str) -> str:
    return node.proc.url.replace("http://", "ws://") + "/api/v1/changes/ws?" + urlencode(params)


def _status(node: Node) -> dict[str, Any]:
    response = httpx.get(node.proc.url + "/api/v1/status", headers=_auth(RO), timeout=10)
    return response.json()["components"]["changes"]


def _wait_subscribers(node: Node, count: int) -> None:
    deadline = time.monotonic() + 15
    while _status(node)["subscribers"] != count:
        assert time.monotonic() < deadline, f"never {count} subscribers: {_status(node)}"
        time.sleep(0.05)


@dataclass
class Stream:
    """One subscription read in a thread: its events (SSE: (event, data); WS: data) and how it ended."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    websocket: bool = False
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int | None = None
    close_code: int | None = None
    error: str | None = None
    thread: threading.Thread | None = None

    def start(self) -> Stream:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            if self.websocket:
                with ws_connect(self.url, additional_headers=self.headers, open_timeout=10, max_queue=None) as ws:
                    try:
                        while True:
                            data = json.loads(ws.recv(timeout=30))
                            self.events.append((data.get("event", "message"), data))
                    except ConnectionClosed as exc:
                        self.close_code = exc.rcvd.code if exc.rcvd else None
                return
            with httpx.stream("GET", self.url, headers=self.headers, timeout=30) as response:
                self.status = response.status_code
                if response.status_code != 200:
                    response.read()
                    self.events.append(("http", response.json()))
                    return
                for event in parse_sse(response.iter_lines()):
                    self.events.append((event.event, event.data))
        except Exception as exc:  # reported by the test
            self.error = f"{type(exc).__name__}: {exc}"

    def wait_for(self, predicate: Any, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not any(predicate(kind, data) for kind, data in self.events):
            assert self.error is None, self.error
            assert time.monotonic() < deadline, f"not seen in {timeout} s: {self.events}"
            time.sleep(0.05)

    def ended(self, timeout: float = 10) -> None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"still open: {self.events}"
        assert self.error is None, self.error


def _insert_seen(rowid: int) -> Any:
    return lambda kind, data: kind == "message" and data.get("rowid") == rowid


def test_a_browser_token_in_the_query_opens_the_change_streams_only_and_never_reaches_the_log(node: Node) -> None:
    url = node.proc.url
    jwt = _token(node.old)
    sse = Stream(f"{url}/api/v1/changes?" + urlencode({"tables": "a", "access_token": RO})).start()
    ws = Stream(_ws_url(node, tables="a", access_token=jwt), websocket=True).start()
    _wait_subscribers(node, 2)
    _insert(node, 1)
    sse.wait_for(_insert_seen(1))
    ws.wait_for(_insert_seen(1))
    assert sse.status == 200

    # Refused exactly like a bearer token, saying the token came in the query.
    def sse_get(**params: str) -> httpx.Response:
        return httpx.get(f"{url}/api/v1/changes", params={"tables": "a", **params}, timeout=10)

    bad = sse_get(access_token="not-a-token")
    assert bad.status_code == 401 and bad.json()["error"]["message"] == "access_token: invalid token"
    assert bad.headers["www-authenticate"] == "Bearer"
    empty = sse_get(access_token="")
    assert empty.status_code == 401 and "access_token is empty" in empty.json()["error"]["message"]
    forged = _token(node.new)  # signed by a key the node does not trust
    assert sse_get(access_token=forged).status_code == 401
    with ws_connect(_ws_url(node, tables="a", access_token="not-a-token"), open_timeout=10) as refused:
        message = json.loads(refused.recv(timeout=10))
        with pytest.raises(ConnectionClosed) as closed:
            refused.recv(timeout=10)
    assert (message["reason"], message["message"]) == ("unauthorized", "access_token: invalid token")
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    # A header, when given, is the credential: the query's token is not looked at.
    both = httpx.get(f"{url}/api/v1/changes", params={"tables": "nope", "access_token": RO}, headers=_auth("x"))
    assert both.status_code == 401 and both.json()["error"]["message"] == "invalid token"

    # Every other route refuses a token in the query, even a valid one, and says where it goes.
    for method, path in (("GET", "/api/v1/changes/tables"), ("POST", "/api/v1/query"), ("GET", "/api/v1/status")):
        response = httpx.request(method, f"{url}{path}", params={"access_token": RW}, json={}, timeout=10)
        assert response.status_code == 401, (path, response.text)
        assert "taken only by the change stream" in response.json()["error"]["message"]
        assert "Authorization: Bearer" in response.json()["error"]["message"]
    # The read token in the query reads; it does not write.
    put = httpx.put(f"{url}/api/v1/changes/tables/a", params={"access_token": RO}, timeout=10)
    assert put.status_code == 401

    # A JWT given in the query expires like one in the header; the WebSocket closes with 1008.
    short = mint_token(node.old[0].read_bytes(), Access.READ, ttl_seconds=3)
    expiring = Stream(_ws_url(node, tables="a", access_token=short), websocket=True).start()
    expiring.ended(timeout=10)
    assert [(kind, body["reason"]) for kind, body in expiring.events] == [("error", "token_expired")]
    assert expiring.close_code == 1008

    # uvicorn logs each WebSocket with its query string: the node's log shows it redacted.
    _insert(node, 2)
    ws.wait_for(_insert_seen(2))
    log = node.proc.log()
    assert "access_token=[redacted]" in log, log
    for secret in (RO, RW, jwt, forged, short, "not-a-token"):
        assert secret not in log, f"{secret} leaked into the node's log"


def test_rotating_the_jwt_key_ends_the_streams_of_old_tokens_and_refuses_them(node: Node) -> None:
    url = node.proc.url
    old_read, old_write = _token(node.old), _token(node.old, Access.WRITE)
    sse_old = Stream(f"{url}/api/v1/changes?tables=a", _auth(old_read)).start()
    sse_query_old = Stream(f"{url}/api/v1/changes?" + urlencode({"tables": "a", "access_token": old_write})).start()
    ws_old = Stream(_ws_url(node, tables="a", access_token=old_read), websocket=True).start()
    ws_header_old = Stream(_ws_url(node, tables="a"), _auth(old_read), websocket=True).start()
    static = Stream(f"{url}/api/v1/changes?tables=a", _auth(RO)).start()  # not a JWT: not revoked
    _wait_subscribers(node, 5)
    _insert(node, 1)
    for stream in (sse_old, sse_query_old, ws_old, ws_header_old, static):
        stream.wait_for(_insert_seen(1))

    # Rotate as an operator would: the new public key replaces the file in one rename.
    staged = node.key_file.with_suffix(".new")
    shutil.copy(node.new[1], staged)
    os.replace(staged, node.key_file)
    rotated_at = time.monotonic()
    for stream in (sse_old, sse_query_old, ws_old, ws_header_old):
        stream.ended()
        kind, body = stream.events[-1]
        assert (kind, body["reason"]) == ("error", "token_revoked"), stream.events
        assert "reconnect with a new token" in body["message"]
    assert time.monotonic() - rotated_at < 5  # within a few heartbeats
    assert ws_old.close_code == 1008 and ws_header_old.close_code == 1008
    assert _status(node)["revoked"] == 4

    # New requests with an old token are refused, on every route; the new key's tokens work.
    refused = httpx.get(f"{url}/api/v1/changes", params={"tables": "a"}, headers=_auth(old_read), timeout=10)
    assert refused.status_code == 401 and "invalid token" in refused.json()["error"]["message"]
    query = httpx.post(f"{url}/api/v1/query", json={"sql": "SELECT 1"}, headers=_auth(old_write), timeout=10)
    assert query.status_code == 401
    hrana = {"requests": [{"type": "execute", "stmt": {"sql": "SELECT 1"}}, {"type": "close"}]}
    for token, status in ((old_write, 401), (_token(node.new, Access.WRITE), 200)):  # one authenticator
        response = httpx.post(f"{url}/v2/pipeline", json=hrana, headers=_auth(token), timeout=10)
        assert response.status_code == status, response.text
    with ws_connect(_ws_url(node, tables="a", access_token=old_read), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["reason"] == "unauthorized"
    fresh = Stream(f"{url}/api/v1/changes?" + urlencode({"tables": "a", "access_token": _token(node.new)})).start()
    _wait_subscribers(node, 2)  # the static token's stream and the new one
    _insert(node, 2)
    fresh.wait_for(_insert_seen(2))
    static.wait_for(_insert_seen(2))
    assert static.thread is not None and static.thread.is_alive() and static.error is None

    # A key file caught half-written keeps the current key (and says so in the log once).
    node.key_file.write_text("-----BEGIN PUBLIC KEY-----\ntruncat")
    time.sleep(4 * HEARTBEAT)
    assert static.thread.is_alive() and fresh.thread is not None and fresh.thread.is_alive()
    ok = httpx.post(f"{url}/api/v1/query", json={"sql": "SELECT 1"}, headers=_auth(_token(node.new, Access.WRITE)))
    assert ok.status_code == 200, ok.text
    assert node.proc.log().count("cannot be used (keeping the previous key)") == 1
