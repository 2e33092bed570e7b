"""Point-select throughput and latency through `/api/v1/query` with 1, 8 and 32 concurrent
clients, next to the same query in-process (the node's read path, and raw libsql) in the same run,
and Datasette's JSON API (PyPI `datasette`, the bench extra) serving the same file and query as the
anchor: a run that could not measure Datasette lists it under `peers_missing` and fails.

The load generator (bench/loadgen.py: raw asyncio HTTP/1.1, keep-alive) is a separate process; on a
2-core machine it competes with the node for CPU, which the figures include.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec

from bench.common import NodeProcess, ServerProcess, machine, percentile, table
from bench.loadgen import run_load

SQL = "SELECT id, email, username, created_at FROM users WHERE id = ?"
# Datasette binds named parameters from the query string: the same statement, the parameter named.
DATASETTE_SQL = SQL.replace("?", ":id")


def _ids(n: int) -> list[str]:
    return [f"user-{i:07d}" for i in range(n)]


async def _load(url: str, clients: int, seconds: float, n_rows: int) -> dict[str, Any]:
    def body(worker: int, n: int) -> bytes:
        rng = random.Random(worker * 1_000_003 + n)
        return msgspec.json.encode({"sql": SQL, "params": [f"user-{rng.randrange(n_rows):07d}"]})

    def one_row(_: int, payload: bytes) -> bool:
        return len(msgspec.json.decode(payload)["rows"]) == 1

    return await run_load(url, "/api/v1/query", body, clients, seconds, check=one_row)


async def _load_datasette(url: str, clients: int, seconds: float, n_rows: int) -> dict[str, Any]:
    def target(worker: int, n: int) -> bytes:
        rng = random.Random(worker * 1_000_003 + n)
        query = urlencode({"sql": DATASETTE_SQL, "id": f"user-{rng.randrange(n_rows):07d}", "_shape": "array"})
        return f"/edgenode.json?{query}".encode()

    def one_row(_: int, payload: bytes) -> bool:
        return len(msgspec.json.decode(payload)) == 1

    return await run_load(url, "", target, clients, seconds, check=one_row, get=True)


def _load_process(url: str, clients: int, seconds: float, n_rows: int, queue: Any, peer: str) -> None:
    load = _load_datasette if peer == "datasette" else _load
    queue.put(asyncio.run(load(url, clients, seconds, n_rows)))


def http_load(url: str, clients: int, seconds: float, n_rows: int, peer: str = "node") -> dict[str, Any]:
    queue: Any = multiprocessing.get_context("spawn").Queue()
    proc = multiprocessing.get_context("spawn").Process(
        target=_load_process, args=(url, clients, seconds, n_rows, queue, peer)
    )
    proc.start()
    result = queue.get(timeout=seconds + 120)
    proc.join(30)
    return result


def in_process(data_dir: Path, seconds: float, n_rows: int) -> list[dict[str, Any]]:
    import libsql

    from edgenode.pragmas import select_profile
    from edgenode.standalone import DB_FILE, LocalDatabase

    rows = []
    rng = random.Random(1)

    async def node_path() -> dict[str, Any]:
        db = LocalDatabase(data_dir, select_profile(), readers=1, migrate=False)
        await db.start()
        latencies = []
        stop_at = time.perf_counter() + seconds
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            await db.read(SQL, [f"user-{rng.randrange(n_rows):07d}"])
            latencies.append(time.perf_counter() - start)
        await db.stop()
        return _summary(latencies)

    rows.append({"method": "in-process LocalDatabase.read (1 caller)", **asyncio.run(node_path())})
    conn = libsql.connect(str(data_dir / DB_FILE))
    latencies = []
    stop_at = time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        start = time.perf_counter()
        conn.execute(SQL, (f"user-{rng.randrange(n_rows):07d}",)).fetchall()
        latencies.append(time.perf_counter() - start)
    conn.close()
    rows.append({"method": "in-process raw libsql execute (1 caller)", **_summary(latencies)})
    return rows


def _summary(latencies: list[float]) -> dict[str, Any]:
    total = sum(latencies)
    return {
        "requests": len(latencies),
        "errors": 0,
        "qps": len(latencies) / total if total else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def seed(url: str, n_rows: int) -> None:
    ids = _ids(n_rows)
    with httpx.Client(base_url=url, timeout=120) as client:
        for start in range(0, n_rows, 500):
            statements = [
                {
                    "sql": "INSERT INTO users (id, email, username) VALUES (?, ?, ?)",
                    "params": [i, f"{i}@example.com", i],
                }
                for i in ids[start : start + 500]
            ]
            response = client.post("/api/v1/execute", json={"statements": statements})
            response.raise_for_status()


class Datasette(ServerProcess):
    """`datasette serve` on the node's file (after the node stopped), on a free loopback port."""

    name = "datasette"

    def __init__(self, db_file: Path, log: Path) -> None:
        super().__init__([sys.executable, "-m", "datasette", "serve", str(db_file)], log)


def datasette_rows(db_file: Path, log: Path, seconds: float, n_rows: int) -> list[dict[str, Any]]:
    rows = []
    server = Datasette(db_file, log)
    try:
        server.wait_ready("/-/versions.json", timeout=60)
        for clients in (1, 8, 32):
            result = http_load(server.url, clients, seconds, n_rows, peer="datasette")
            if not result["requests"] or result["errors"] == result["requests"]:
                raise RuntimeError(f"no successful request at {clients} client(s); see {log}")
            rows.append({"method": f"Datasette JSON API, {clients} client(s)", "clients": clients, **result})
            print(f"   {rows[-1]['method']}: {result['qps']:,.0f} q/s, p50 {result['p50_ms']:.2f} ms", flush=True)
    finally:
        server.stop()
    return rows


def run(quick: bool = False, out: Path | None = None) -> dict[str, Any]:
    n_rows = 2_000 if quick else 100_000
    seconds = 2.0 if quick else 10.0
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgenode-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        node = NodeProcess(["serve", "--data-dir", str(data_dir)], Path(tmp) / "node.log")
        try:
            node.wait_ready()
            seed(node.url, n_rows)
            for clients in (1, 8, 32):
                result = http_load(node.url, clients, seconds, n_rows)
                rows.append({"method": f"HTTP /api/v1/query, {clients} client(s)", "clients": clients, **result})
                print(f"   {rows[-1]['method']}: {result['qps']:,.0f} q/s, p50 {result['p50_ms']:.2f} ms", flush=True)
        finally:
            node.stop()
        missing: list[str] = []
        try:
            import datasette  # noqa: F401  (the bench extra)

            rows.extend(datasette_rows(data_dir / "edgenode.db", Path(tmp) / "datasette.log", seconds, n_rows))
        except Exception as exc:
            missing.append(f"datasette: {exc}")
        rows.extend(in_process(data_dir, seconds, n_rows))
    print(table(rows, ["method", "qps", "p50_ms", "p99_ms", "errors"]))
    return {
        "benchmark": "api_reads",
        "command": "python -m bench api_reads" + (" --quick" if quick else ""),
        "machine": machine(),
        "parameters": {"rows": n_rows, "seconds_per_level": seconds, "query": SQL, "datasette_query": DATASETTE_SQL},
        "rows": rows,
        "peers_missing": missing,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
