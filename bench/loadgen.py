"""A lean HTTP/1.1 keep-alive load generator on raw asyncio streams.

httpx costs more CPU per request than the node itself spends, which on 2 cores would make the
client the thing measured. This sends pre-encoded requests over persistent connections and reads
responses by Content-Length, nothing more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from bench.common import percentile

RequestFactory = Callable[[int], bytes]  # worker-local counter → request body


def encode_post(host: str, path: str, body: bytes, token: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def encode_get(host: str, target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        lower = line.lower()
        if lower.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
        elif lower.startswith(b"transfer-encoding:") and b"chunked" in lower:
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, body
            body += chunk[:-2]
    return status, await reader.readexactly(length)


async def run_load(
    url: str,
    path: str,
    make_body: Callable[[int, int], bytes],
    clients: int,
    seconds: float,
    token: str | None = None,
    check: Callable[[int, bytes], bool] | None = None,
    keep_alive: bool = True,
    get: bool = False,
) -> dict[str, Any]:
    """`clients` concurrent workers sending requests for `seconds`.

    With `get=True` the requests are GETs and `make_body` gives the request target (path and query)
    instead of a body: peers such as Datasette answer queries on GET.

    With `keep_alive=False` every request opens its own TCP connection and its latency includes
    the connect: the only way to drive a server that answers `Connection: close` (turso's); a
    connection that breaks there counts as an error, not a crash."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    def encode(worker_id: int, n: int) -> bytes:
        if get:
            return encode_get(f"{host}:{port}", make_body(worker_id, n).decode())
        return encode_post(f"{host}:{port}", path, make_body(worker_id, n), token)

    def record(start: float, status: int, body: bytes) -> None:
        nonlocal errors
        latencies.append(time.perf_counter() - start)
        if status != 200 or (check is not None and not check(status, body)):
            errors += 1

    async def persistent(worker_id: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        n = 0
        try:
            while time.perf_counter() < stop_at:
                request = encode(worker_id, n)
                n += 1
                start = time.perf_counter()
                writer.write(request)
                record(start, *await _read_response(reader))
        finally:
            writer.close()

    async def fresh(worker_id: int) -> None:
        nonlocal errors
        n = 0
        while time.perf_counter() < stop_at:
            request = encode(worker_id, n)
            n += 1
            start = time.perf_counter()
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                status, body = await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                errors += 1
                continue
            finally:
                writer.close()
            record(start, status, body)

    worker = persistent if keep_alive else fresh
    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    return summarize(latencies, errors, time.perf_counter() - began)


def summarize(latencies: list[float], errors: int, elapsed: float) -> dict[str, Any]:
    """What every load run reports: counts, throughput over the wall time, latency percentiles."""
    return {
        "requests": len(latencies),
        "errors": errors,
        "qps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }
