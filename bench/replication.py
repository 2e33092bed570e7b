"""Replication lag and write latency of a replica node against a local `edgenode primary`.

Lag: rows are committed on the primary at a steady rate, each carrying the primary's clock at
commit (`julianday('now')`, millisecond precision, same host); a poller process queries the node
every ~2 ms and records when each row first shows up. Lag = first seen on the node - committed.
Measured twice in the same run: with the node's long-poll watcher (it learns of a commit as it
happens) and without it (interval syncs only, `--no-long-poll`), both at the default
1 s sync interval.

Write latency: sequential single-row INSERTs through the node's `/api/v1/execute` (one Hrana
request to the primary, then read-your-writes: the node syncs until it sees the commit) next to
the same INSERT sent straight to the primary over Hrana, in the same run.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.common import NodeProcess, machine, percentile, table
from edgenode.primary.client import execute as primary_execute

TOKEN = "bench-primary-token"
NODE_TOKEN = "bench-node-token"
INSERT = "INSERT INTO lag(id, committed, pad) VALUES (?, (julianday('now') - 2440587.5) * 86400.0, randomblob(200))"


def _poll(node_url: str, first_id: int, last_id: int, stop_after: float, queue: Any) -> None:
    """Runs in its own process: first-seen time of every row, by id, until `last_id` shows up."""
    seen: dict[int, float] = {}
    committed: dict[int, float] = {}
    low = first_id  # every id below this has been seen (writers commit concurrently, so ids land out of order)
    with httpx.Client(headers={"Authorization": f"Bearer {NODE_TOKEN}"}, timeout=10) as http:
        deadline = time.time() + stop_after
        while time.time() < deadline and low <= last_id:
            response = http.post(
                node_url + "/api/v1/query",
                json={"sql": "SELECT id, committed FROM lag WHERE id >= ? ORDER BY id", "params": [low]},
            )
            now = time.time()
            for row_id, at in response.json()["rows"]:
                if row_id not in seen:
                    seen[row_id] = now
                    committed[row_id] = at
            while low in seen:
                low += 1
            time.sleep(0.002)
    queue.put({"seen": seen, "committed": committed})


def _write_steadily(primary_url: str, first_id: int, rate: int, seconds: float) -> int:
    """Commit `rate` rows a second on the primary (several writers so a slow commit does not skew the rate)."""
    count = int(rate * seconds)
    start = time.monotonic() + 0.2
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = []
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(primary_execute, primary_url, [(INSERT, [first_id + i])], TOKEN))
        for future in futures:
            future.result()
    return count


def measure_lag(primary_url: str, node_url: str, first_id: int, rate: int, seconds: float) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue: Any = context.Queue()
    last_id = first_id + int(rate * seconds) - 1
    poller = context.Process(target=_poll, args=(node_url, first_id, last_id, seconds + 60.0, queue))
    poller.start()
    time.sleep(1.0)  # the poller's interpreter is up before the first commit
    count = _write_steadily(primary_url, first_id, rate, seconds)
    result = queue.get(timeout=seconds + 60)
    poller.join(10)
    ids = range(first_id, first_id + count)
    lags = [(result["seen"][i] - result["committed"][i]) * 1000 for i in ids if i in result["seen"]]
    return {
        "rate_per_s": rate,
        "rows": count,
        "seen": len(lags),
        "lag_p50_ms": percentile(lags, 50),
        "lag_p99_ms": percentile(lags, 99),
        "lag_max_ms": max(lags) if lags else float("nan"),
    }


def write_latency(primary_url: str, node_url: str, first_id: int, n: int) -> list[dict[str, Any]]:
    through_node: list[float] = []
    direct: list[float] = []
    with httpx.Client(headers={"Authorization": f"Bearer {NODE_TOKEN}"}, timeout=30) as http:
        for i in range(n):
            began = time.perf_counter()
            response = http.post(
                node_url + "/api/v1/execute", json={"statements": [{"sql": INSERT, "params": [first_id + i]}]}
            )
            through_node.append((time.perf_counter() - began) * 1000)
            response.raise_for_status()
            began = time.perf_counter()
            primary_execute(primary_url, [(INSERT, [first_id + n + i])], TOKEN, transaction=True)
            direct.append((time.perf_counter() - began) * 1000)
    return [
        {
            "path": "through the node (commit + read-your-writes)",
            "p50_ms": percentile(through_node, 50),
            "p99_ms": percentile(through_node, 99),
            "writes": n,
        },
        {
            "path": "straight to the primary (Hrana)",
            "p50_ms": percentile(direct, 50),
            "p99_ms": percentile(direct, 99),
            "writes": n,
        },
    ]


def run(quick: bool = False, out: Path | None = None) -> dict[str, Any]:
    seconds = 3.0 if quick else 10.0
    writes = 50 if quick else 300
    modes = [("long-poll watcher", {}), ("interval only (1 s)", {"EDGENODE_LONG_POLL": "0"})]
    lag_rows: list[dict[str, Any]] = []
    latency_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgenode-bench-") as tmp:
        root = Path(tmp)
        primary = NodeProcess(
            ["primary", "--data-dir", str(root / "primary"), "--auth-token", TOKEN, "--no-migrate"], root / "p.log"
        )
        try:
            primary.wait_ready("/health")
            primary_execute(primary.url, ["CREATE TABLE lag(id INTEGER PRIMARY KEY, committed REAL, pad BLOB)"], TOKEN)
            next_id = 1
            for label, env in modes:
                node = NodeProcess(
                    [
                        *("serve", "--data-dir", str(root / f"node-{len(lag_rows)}"), "--auth-token", NODE_TOKEN),
                        *("--primary-url", primary.url, "--primary-token", TOKEN, "--sync-interval", "1"),
                    ],
                    root / "node.log",
                    env=env,
                )
                try:
                    node.wait_ready()
                    for rate in (50, 200):
                        result = measure_lag(primary.url, node.url, next_id, rate, seconds)
                        next_id += result["rows"]
                        lag_rows.append({"mode": label, **result})
                        print(
                            f"   {label}, {rate} writes/s: lag p50 {result['lag_p50_ms']:.1f} ms, "
                            f"p99 {result['lag_p99_ms']:.1f} ms",
                            flush=True,
                        )
                    for row in write_latency(primary.url, node.url, next_id, writes):
                        latency_rows.append({"mode": label, **row})
                    next_id += 2 * writes
                finally:
                    node.stop()
        finally:
            primary.stop()
    print(table(lag_rows, ["mode", "rate_per_s", "rows", "seen", "lag_p50_ms", "lag_p99_ms", "lag_max_ms"]))
    print(table(latency_rows, ["mode", "path", "writes", "p50_ms", "p99_ms"]))
    return {
        "benchmark": "replication",
        "command": "python -m bench replication" + (" --quick" if quick else ""),
        "machine": machine(),
        "parameters": {"seconds_per_rate": seconds, "sequential_writes": writes, "sync_interval_s": 1.0},
        "lag": lag_rows,
        "write_latency": latency_rows,
        "notes": [
            "lag = first seen by a poller querying the node every ~2 ms - the primary's clock at commit (same host)",
            "the node and the primary share the machine with the writer and the poller",
        ],
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
