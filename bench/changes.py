"""Live changes: commit → event latency at the subscriber, p50/p99, for 1, 100 and 1,000 SSE
subscribers while rows are written at 200 writes/s.

Two paths: *local* (writes `POST /api/v1/execute` on a standalone node, subscribers on the same
node) and *replica* (writes go straight to an `edgenode primary`, subscribers on a replica node
that receives them by sync). Each write is one row whose text carries the wall-clock time taken
just before the write was sent; a subscriber's latency is its arrival time minus that, so it
includes the write itself (for the replica: the primary's commit, the replica's long-poll wake-up
and sync). Subscribers are raw asyncio SSE connections spread over two client processes (the
client side of 1,000 streams is itself CPU work on a 2-core machine: these figures are the
node's and the clients' together). Goal (issue #16): p99 under 50 ms local and under 150 ms
through a replica at 1,000 subscribers.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import NodeProcess, machine, percentile, save_figure, table
from edgenode.primary.client import execute as primary_execute

RATE = 200  # writes per second
TOKEN = "bench-changes-token"
STAMP = re.compile(rb'"v":"t=([0-9.]+)"')
SCHEMA = "CREATE TABLE ev (id INTEGER PRIMARY KEY, v TEXT)"


async def _subscribe(port: int, count: int, seconds: float, ready: Any, headers: str) -> list[float]:
    latencies: list[float] = []

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /api/v1/changes?tables=ev HTTP/1.1\r\nHost: bench\r\n{headers}\r\n".encode())
        await writer.drain()
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                try:
                    chunk = await asyncio.wait_for(reader.read(1 << 16), end - time.monotonic())
                except TimeoutError:
                    break
                if not chunk:
                    break
                now = time.time()
                latencies.extend(now - float(m) for m in STAMP.findall(chunk))
        finally:
            writer.close()

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    await asyncio.sleep(0.5 + count / 500)  # connections made and registered
    ready.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return latencies


def _subscriber_process(port: int, count: int, seconds: float, ready: Any, results: Any, headers: str) -> None:
    results.put(asyncio.run(_subscribe(port, count, seconds, ready, headers)))


def _write_local(url: str, seconds: float) -> list[float]:
    durations = []
    with httpx.Client(base_url=url, timeout=30, headers={"authorization": f"Bearer {TOKEN}"}) as client:
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            t = time.time()
            response = client.post("/api/v1/execute", json={"statements": [_insert(t)]})
            response.raise_for_status()
            durations.append(time.time() - t)
            n += 1
            time.sleep(max(0.0, start + n / RATE - time.monotonic()))
    return durations


def _write_primary(url: str, seconds: float) -> list[float]:
    durations = []
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        t = time.time()
        statement = _insert(t)
        primary_execute(url, [(statement["sql"], statement["params"])], TOKEN)
        durations.append(time.time() - t)
        n += 1
        time.sleep(max(0.0, start + n / RATE - time.monotonic()))
    return durations


def _insert(t: float) -> dict[str, Any]:
    return {"sql": "INSERT INTO ev (v) VALUES (?)", "params": [f"t={t:.6f}"]}


def measure(path: str, subscribers: int, seconds: float, write_url: str, sub_port: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = []
    readies = []
    share = [subscribers // 2 + subscribers % 2, subscribers // 2] if subscribers > 1 else [1]
    headers = f"Authorization: Bearer {TOKEN}\r\n"
    for count in share:
        if count == 0:
            continue
        ready = ctx.Event()
        proc = ctx.Process(
            target=_subscriber_process, args=(sub_port, count, seconds + 3 + count / 500, ready, results, headers)
        )
        proc.start()
        procs.append(proc)
        readies.append(ready)
    for ready in readies:
        ready.wait(120)
    writes = (_write_local if path == "local" else _write_primary)(write_url, seconds)
    latencies: list[float] = []
    for _ in procs:
        latencies += results.get(timeout=120)
    for proc in procs:
        proc.join(30)
    expected = len(writes) * subscribers
    return {
        "path": path,
        "subscribers": subscribers,
        "writes": len(writes),
        "events": len(latencies),
        "delivered_fraction": round(len(latencies) / expected, 4) if expected else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 2) if latencies else float("nan"),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2) if latencies else float("nan"),
        "write_p50_ms": round(percentile(writes, 50) * 1000, 2),
    }


def plot(rows: list[dict[str, Any]], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for path in ("local", "replica"):
        mine = [r for r in rows if r["path"] == path]
        if not mine:
            continue
        xs = [r["subscribers"] for r in mine]
        ax.plot(xs, [r["p50_ms"] for r in mine], marker="o", label=f"{path} p50")
        ax.plot(xs, [r["p99_ms"] for r in mine], marker="s", linestyle="--", label=f"{path} p99")
    ax.set_xscale("log")
    ax.set_xlabel("SSE subscribers")
    ax.set_ylabel("commit → event (ms)")
    ax.set_title(f"edgenode change stream at {RATE} writes/s")
    ax.legend()
    ax.grid(True, alpha=0.3)
    return save_figure(fig, out / "changes.png")


# Above the default max_connections (1000): 1,000 open streams plus the writer's connection would
# have the writes answered 503.
CONNECTIONS = ["--max-connections", "2000"]


def run(quick: bool, out: Path) -> dict[str, Any]:
    counts = [1, 10] if quick else [1, 100, 1000]
    seconds = 2.0 if quick else 20.0
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgenode-bench-changes-") as tmp:
        root = Path(tmp)
        node = NodeProcess(
            ["serve", "--data-dir", str(root / "node"), "--no-migrate", "--auth-token", TOKEN, *CONNECTIONS],
            root / "node.log",
        )
        try:
            node.wait_ready()
            _setup(node.url)
            for count in counts:
                rows.append(measure("local", count, seconds, node.url, node.port))
                print(table(rows[-1:], list(rows[-1])), flush=True)
        finally:
            node.stop()
        primary = NodeProcess(
            ["primary", "--data-dir", str(root / "primary"), "--no-migrate", "--auth-token", TOKEN],
            root / "primary.log",
        )
        replica = None
        try:
            primary.wait_ready("/health")
            primary_execute(primary.url, [SCHEMA], TOKEN)
            args = ["serve", "--data-dir", str(root / "replica"), "--auth-token", TOKEN, *CONNECTIONS]
            replica = NodeProcess([*args, "--primary-url", primary.url, "--primary-token", TOKEN], root / "replica.log")
            replica.wait_ready()
            _capture(replica.url)
            for count in counts[:1] if quick else counts:
                rows.append(measure("replica", count, seconds, primary.url, replica.port))
                print(table(rows[-1:], list(rows[-1])), flush=True)
        finally:
            if replica is not None:
                replica.stop()
            primary.stop()
    png = plot(rows, out)
    columns = ["path", "subscribers", "writes", "events", "delivered_fraction", "p50_ms", "p99_ms", "write_p50_ms"]
    print(table(rows, columns))
    return {
        "benchmark": "changes",
        "command": "python -m bench changes" + (" --quick" if quick else ""),
        "machine": machine(),
        "parameters": {"writes_per_s": RATE, "seconds_per_case": seconds, "subscribers": counts},
        "rows": rows,
        "plot": str(png) if png else None,
        "peers_missing": [],
        "notes": "latency from just before each write is sent to its event's arrival at each subscriber; "
        "subscribers and writer share the machine with the node",
    }


def _setup(url: str) -> None:
    headers = {"authorization": f"Bearer {TOKEN}"}
    response = httpx.post(url + "/api/v1/execute", json={"statements": [{"sql": SCHEMA}]}, headers=headers)
    response.raise_for_status()
    _capture(url)


def _capture(url: str) -> None:
    headers = {"authorization": f"Bearer {TOKEN}"}
    response = httpx.put(url + "/api/v1/changes/tables/ev", headers=headers, timeout=30)
    response.raise_for_status()
