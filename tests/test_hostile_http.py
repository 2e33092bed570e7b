"""Hostile and broken clients against real node and primary processes: malformed bodies of every
kind on every route are a 4xx in the route's error shape, stalled requests are answered 408 or
closed without slowing anyone else, and clients that vanish leave one log line, no traceback."""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.procs import ROOT, Proc, free_port, start

TIMEOUTS = ["--header-timeout", "1", "--body-timeout", "1"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("hostile-node")
    proc = start(["serve", "--data-dir", str(tmp / "data"), *TIMEOUTS], tmp, "node", ready_path="/ready")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("hostile-primary")
    proc = start(["primary", "--data-dir", str(tmp / "data"), *TIMEOUTS], tmp, "primary")
    yield proc
    proc.stop()


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def deep_condition(levels: int) -> bytes:
    cond = b'{"type": "ok", "step": 0}'
    for _ in range(levels):
        cond = b'{"type": "not", "cond": ' + cond + b"}"
    return cond


HRANA_STEPS = b'[{"stmt": {"sql": "SELECT 1"}}, {"stmt": {"sql": "SELECT 2"}, "condition": %s}]'

# (name, body, content type): none of these is a usable body for any JSON route.
BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "application/json"),
    ("whitespace", b" \r\n\t ", "application/json"),
    ("truncated", b'{"sql": "SELECT 1", "para', "application/json"),
    ("not json", b"{not json", "application/json"),
    ("trailing garbage", b'{"sql": "SELECT 1"} x', "application/json"),
    ("invalid utf-8", b'{"sql": "SELECT \xff\xfe"}', "application/json"),
    ("utf-16", '{"sql": "SELECT 1"}'.encode("utf-16"), "application/json"),
    ("utf-16 without bom", '{"sql": "SELECT 1"}'.encode("utf-16-le"), "application/json"),
    ("nul bytes", b"\x00\x00\x00", "application/json"),
    ("latin-1 charset", b'{"sql": "SELECT 1"}', "application/json; charset=latin-1"),
    ("form", b"sql=SELECT+1", "application/x-www-form-urlencoded"),
    ("array 1000 deep", deep(1000), "application/json"),
    ("array 100000 deep", deep(100_000), "application/json"),
    ("params 1000 deep", b'{"sql": "SELECT ?", "params": [' + deep(1000) + b"]}", "application/json"),
    ("params 900 deep", b'{"sql": "SELECT ?", "params": [' + deep(900) + b"]}", "application/json"),
    ("object 1000 deep", b'{"a":' * 1000 + b"1" + b"}" * 1000, "application/json"),
    ("null", b"null", "application/json"),
    ("number", b"1e999999", "application/json"),
    ("string", b'"SELECT 1"', "text/plain"),
]

NODE_JSON_ROUTES = [
    ("POST", "/api/v1/query"),
    ("POST", "/api/v1/execute"),
    ("PUT", "/api/v1/collections/hostile"),
    ("POST", "/v1/execute"),
    ("POST", "/v1/batch"),
    ("POST", "/v2/pipeline"),
    ("POST", "/v3/pipeline"),
    ("POST", "/v3/cursor"),
]
PRIMARY_JSON_ROUTES = [("POST", path) for method, path in NODE_JSON_ROUTES if path.startswith("/v")]
HRANA_DEEP_CONDITIONS = [
    ("/v1/batch", b'{"batch": {"steps": %s}}'),
    ("/v3/cursor", b'{"batch": {"steps": %s}}'),
    ("/v2/pipeline", b'{"requests": [{"type": "batch", "batch": {"steps": %s}}]}'),
]


def assert_error_shape(path: str, response: httpx.Response, server: str) -> None:
    assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:300])
    body = response.json()
    if path.startswith("/v"):  # Hrana: the clients read `message` and `code`
        assert body["message"] and body["code"], body
    elif server == "primary":  # sync endpoints: {"error": "..."}
        assert isinstance(body["error"], str) and body["error"], body
    else:
        assert body["error"]["code"] and body["error"]["message"], body


@pytest.mark.parametrize(("method", "path"), NODE_JSON_ROUTES)
def test_every_malformed_body_is_a_4xx_in_the_routes_shape_on_the_node(node: Proc, method: str, path: str) -> None:
    with httpx.Client(base_url=node.url, timeout=30) as client:
        for name, body, content_type in BAD_BODIES:
            response = client.request(method, path, content=body, headers={"content-type": content_type})
            if name == "params 900 deep" and path == "/api/v1/query":
                assert response.status_code == 400, response.text  # decodes, then the value is refused
            assert_error_shape(f"{path} ({name})", response, "node")


@pytest.mark.parametrize(("method", "path"), PRIMARY_JSON_ROUTES)
def test_every_malformed_body_is_a_4xx_in_the_routes_shape_on_the_primary(
    primary: Proc, method: str, path: str
) -> None:
    with httpx.Client(base_url=primary.url, timeout=30) as client:
        for name, body, content_type in BAD_BODIES:
            response = client.request(method, path, content=body, headers={"content-type": content_type})
            assert_error_shape(f"{path} ({name})", response, "primary")


@pytest.mark.parametrize("server", ["node", "primary"])
def test_deeply_nested_hrana_conditions_are_a_protocol_error(node: Proc, primary: Proc, server: str) -> None:
    url = node.url if server == "node" else primary.url
    for path, template in HRANA_DEEP_CONDITIONS:
        for levels in (40, 300, 1000):
            body = template % (HRANA_STEPS % deep_condition(levels))
            response = httpx.post(url + path, content=body, timeout=30)
            assert response.status_code == 400, (path, levels, response.text[:300])
            assert response.json()["code"] == "PROTOCOL_ERROR"
        fine = httpx.post(url + path, content=template % (HRANA_STEPS % deep_condition(5)), timeout=30)
        assert fine.status_code == 200, fine.text


def test_a_utf8_byte_order_mark_is_skipped(node: Proc) -> None:
    body = b"\xef\xbb\xbf" + b'{"sql": "SELECT 1"}'
    response = httpx.post(node.url + "/api/v1/query", content=body, timeout=30)
    assert response.status_code == 200 and response.json()["rows"] == [[1]]


def test_a_lone_surrogate_escape_is_a_400_that_names_it_not_a_truncated_body(node: Proc, primary: Proc) -> None:
    body = rb'{"sql": "SELECT ?", "params": ["\ud800"]}'
    response = httpx.post(node.url + "/api/v1/query", content=body, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_json", response.text
    message = response.json()["error"]["message"]
    where = body.index(rb"\ud800")
    assert f"lone UTF-16 surrogate \\ud800 at byte {where}" in message and "truncated" not in message, message
    hrana = (
        b'{"requests": [{"type": "execute", "stmt": {"sql": "SELECT ?", "args": [{"type": "text", "value": "%s"}]}}]}'
    )
    hrana %= rb"\udbff"
    for url in (node.url, primary.url):
        response = httpx.post(url + "/v2/pipeline", content=hrana, timeout=30)
        hrana_message = response.json()["message"]
        assert response.status_code == 400 and "surrogate" in hrana_message and "truncated" not in hrana_message
    # A full pair is a character, and an escaped backslash before "ud800" is no escape at all.
    pair = rb'{"sql": "SELECT ?", "params": ["\ud83d\ude00", "\\ud800"]}'.replace(b'"SELECT ?"', b'"SELECT ?, ?"')
    response = httpx.post(node.url + "/api/v1/query", content=pair, timeout=30)
    assert response.status_code == 200 and response.json()["rows"] == [["\U0001f600", "\\ud800"]], response.text


def test_a_push_body_that_is_not_frames_is_a_4xx(primary: Proc) -> None:
    response = httpx.post(primary.url + "/sync/1/1/3", content=b"not frames at all", timeout=30)
    assert_error_shape("/sync/1/1/3", response, "primary")
    response = httpx.post(primary.url + "/sync/1/1/2", content=b"x" * 10_000, timeout=30)
    assert response.status_code == 413


# --- stalled and slow clients -----------------------------------------------------------------------


def connect(proc: Proc) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proc.port), timeout=10)


def read_until_closed(sock: socket.socket, limit: float = 10.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the server neither answered nor closed within {limit} s (got {data[:200]!r})")
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


STALLED_BODIES = [
    ("node", "/api/v1/query", b'{"sql": "SELECT 1"}'),
    ("node", "/v2/pipeline", b'{"requests": []}'),
    ("node", "/api/v1/execute", b'{"statements": []}'),
    ("primary", "/v3/pipeline", b'{"requests": []}'),
    ("primary", "/sync/1/1/2", b"\x00" * 19),
]


@pytest.mark.parametrize(("server", "path", "partial"), STALLED_BODIES)
def test_a_body_shorter_than_its_content_length_gets_408_and_a_close(
    node: Proc, primary: Proc, server: str, path: str, partial: bytes
) -> None:
    proc = node if server == "node" else primary
    with connect(proc) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 999\r\n\r\n"
        )
        sock.sendall(head.encode() + partial)
        data, took = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408 "), data[:300]
    assert b"body_timeout" in data
    assert 0.8 < took < 5.0


def test_half_sent_headers_are_closed(node: Proc, primary: Proc) -> None:
    for proc in (node, primary):
        with connect(proc) as sock:
            sock.sendall(b"POST /api/v1/query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
            data, took = read_until_closed(sock)
        assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data[:300]
        assert took < 5.0
        with connect(proc) as sock:  # a connection that never says anything
            data, took = read_until_closed(sock)
        assert took < 5.0


def latencies(proc: Proc, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        response = httpx.post(proc.url + "/api/v1/query", json={"sql": "SELECT 1"}, timeout=10)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200
    return times


def test_slow_clients_do_not_slow_the_others_and_each_gets_an_answer(node: Proc) -> None:
    latencies(node, 5)  # warm up
    before = statistics.median(latencies(node, 30))
    outcomes: list[bytes] = []

    def slow_client(kind: int) -> None:
        with connect(node) as sock:
            if kind == 0:  # trickles its headers
                sock.sendall(b"POST /api/v1/query HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            elif kind == 1:  # promises a body it never sends
                sock.sendall(b"POST /api/v1/execute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n")
            else:  # trickles its body a byte at a time
                sock.sendall(b"POST /api/v1/query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n")
                sock.settimeout(0.2)
                with_answer = b""
                for _ in range(40):
                    try:
                        sock.sendall(b" ")
                        with_answer = sock.recv(65536)
                        if with_answer:
                            break
                    except (TimeoutError, BrokenPipeError, ConnectionResetError):
                        continue
                outcomes.append(with_answer or read_until_closed(sock)[0])
                return
            outcomes.append(read_until_closed(sock)[0])

    threads = [threading.Thread(target=slow_client, args=(i % 3,)) for i in range(30)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    during = statistics.median(latencies(node, 30))
    for thread in threads:
        thread.join(15)
    assert len(outcomes) == 30
    assert all(o == b"" or o.startswith(b"HTTP/1.1 408 ") for o in outcomes), [o[:60] for o in outcomes]
    assert sum(o.startswith(b"HTTP/1.1 408 ") for o in outcomes) >= 20  # the body stallers got answers
    # 30 stalled connections cost the others little (medians; the machine is shared, hence the factor).
    assert during < 1.5 * before + 0.025, (before, during)


def test_past_max_connections_requests_get_503_not_a_hang(tmp_path: Path) -> None:
    proc = start(
        ["serve", "--data-dir", str(tmp_path / "data"), "--max-connections", "4", *TIMEOUTS],
        tmp_path,
        "node",
        ready_path="/ready",
    )
    try:
        socks = [connect(proc) for _ in range(6)]
        for sock in socks:
            sock.sendall(b"POST /api/v1/query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50\r\n\r\n")
        answers = [read_until_closed(sock)[0] for sock in socks]
        for sock in socks:
            sock.close()
        assert any(a.startswith(b"HTTP/1.1 503 ") for a in answers), [a[:40] for a in answers]
        assert all(a.startswith((b"HTTP/1.1 503 ", b"HTTP/1.1 408 ")) for a in answers), [a[:40] for a in answers]
        assert httpx.get(proc.url + "/health", timeout=10).status_code == 200
    finally:
        proc.stop()


# --- clients that go away ---------------------------------------------------------------------------


def test_a_client_gone_mid_body_is_one_log_line_without_a_traceback(tmp_path: Path) -> None:
    proc = start(["serve", "--data-dir", str(tmp_path / "data")], tmp_path, "node", ready_path="/ready")
    try:
        for path in ("/api/v1/execute", "/v2/pipeline", "/api/v1/collections/x"):
            with connect(proc) as sock:
                method = "PUT" if "collections" in path else "POST"
                sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999\r\n\r\n{{".encode())
                time.sleep(0.2)
        time.sleep(0.5)
        assert httpx.get(proc.url + "/health", timeout=10).status_code == 200
    finally:
        proc.stop()
    log = proc.log()
    assert "Traceback" not in log and "ERROR" not in log, log
    gone = [line for line in log.splitlines() if "went away" in line]
    assert len(gone) == 3 and all(" INFO " in line for line in gone), log


def test_children_of_a_node_killed_during_start_up_exit_without_tracebacks(primary: Proc, tmp_path: Path) -> None:
    """The connection-owner processes and the sync relay notice their dead parent mid-start-up."""

    def replica(name: str) -> Proc:
        args = ["serve", "--data-dir", str(tmp_path / name), "--primary-url", primary.url]
        return Proc(args=args, port=free_port(), log_path=tmp_path / f"{name}.log")

    started = time.monotonic()
    first = replica("measure").start(ready_path="/health")  # serving: its start-up is over
    start_up = time.monotonic() - started
    first.stop()
    for index, fraction in enumerate((0.3, 0.5, 0.7, 0.85, 1.0)):
        proc = replica(f"killed-{index}")
        proc.popen = subprocess.Popen(
            [sys.executable, "-m", "edgenode", *proc.args, "--port", str(proc.port)],
            cwd=ROOT,
            stdout=proc.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        time.sleep(start_up * fraction)
        proc.kill()
        time.sleep(1.5)  # the children find out and exit
        log = proc.log()
        assert "Traceback" not in log and "Fatal Python error" not in log, (fraction, log)
