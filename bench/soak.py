"""Soak: a replica node under mixed load for 10 minutes; does it stay flat and error-free?

A local `edgenode primary` and a replica node (default settings) holding a `docs` table with an
F32_BLOB column and a vector collection over it. Worker threads, each with its own keep-alive
HTTP client, run at once for `duration_s`:

- readers: point reads and 50-row range reads (`POST /api/v1/query`);
- writers: updates of random rows, inserts of new rows and deletes of the oldest (the table stays
  near its starting size), every tenth write with an `Idempotency-Key`;
- searchers: k=10 vector searches, every fourth one with a filter;
- a syncer: `POST /api/v1/sync` every 100 ms (on top of the node's own interval and long-poll syncs).

Every `sample_s` it records each kind's operations per second in that window, the errors, and the
resident memory (RSS, summed over the node and its child processes: relay, connection owner, fork
server) and open file descriptors of that process tree. Growth is measured from the end of the
warm-up (the first 10% of the run) to the end; the run passes with 0 errors and growth < 10%.

`python -m bench soak` (10 minutes) or `python -m bench soak --quick` (~10 s of load).
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import statistics
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import NodeProcess, machine, table

TOKEN = "bench-soak-token"
KINDS = ("reads", "writes", "searches", "syncs")


def _children(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def resources(pid: int) -> dict[str, float]:
    """RSS (MiB) and open file descriptors of a process tree."""
    rss_kib, fds, processes = 0, 0, 0
    for member in _children(pid):
        try:
            with open(f"/proc/{member}/status") as f:
                rss_kib += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            fds += len(os.listdir(f"/proc/{member}/fd"))
            processes += 1
        except (OSError, StopIteration):
            continue
    return {"rss_mib": round(rss_kib / 1024, 1), "fds": fds, "processes": processes}


def _vector(rng: random.Random, dim: int) -> bytes:
    return struct.pack(f"<{dim}f", *(rng.gauss(0, 1) for _ in range(dim)))


class Load:
    def __init__(self, url: str, dim: int, rows: int) -> None:
        self.url = url
        self.dim = dim
        self.low, self.high = 1, rows  # live ids are [low, high]
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(KINDS, 0)
        self.errors: list[str] = []
        self.error_count = 0
        self.stop = threading.Event()

    def _done(self, kind: str, response: httpx.Response | None, failure: str | None = None) -> None:
        with self.lock:
            if response is not None and response.status_code == 200:
                self.counts[kind] += 1
                return
            self.error_count += 1
            if len(self.errors) < 20:
                self.errors.append(failure or f"{kind}: {response.status_code} {response.text[:200]}")  # type: ignore[union-attr]

    def _loop(self, kind: str, step: Any, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    response = step(client, rng)
                except httpx.HTTPError as exc:
                    self._done(kind, None, f"{kind}: {type(exc).__name__}: {exc}")
                    continue
                self._done(kind, response)

    def read(self, client: httpx.Client, rng: random.Random) -> httpx.Response:
        start = rng.randint(self.low, self.high)
        if rng.random() < 0.7:
            return client.post(
                "/api/v1/query", json={"sql": "SELECT id, tag, body FROM docs WHERE id = ?", "params": [start]}
            )
        body = {"sql": "SELECT id, tag FROM docs WHERE id >= ? ORDER BY id LIMIT 50", "params": [start]}
        return client.post("/api/v1/query", json=body)

    def write(self, client: httpx.Client, rng: random.Random) -> httpx.Response:
        blob = {"base64": base64.b64encode(_vector(rng, self.dim)).decode()}
        roll = rng.random()
        with self.lock:
            if roll < 0.15:
                self.high += 1
                statement = {
                    "sql": "INSERT INTO docs (id, emb, tag, body) VALUES (?, ?, ?, ?)",
                    "params": [self.high, blob, rng.choice("ab"), "x" * 200],
                }
            elif roll < 0.30 and self.high - self.low > 100:
                self.low += 1
                statement = {"sql": "DELETE FROM docs WHERE id = ?", "params": [self.low - 1]}
            else:
                statement = {
                    "sql": "UPDATE docs SET emb = ?, tag = ? WHERE id = ?",
                    "params": [blob, rng.choice("ab"), rng.randint(self.low, self.high)],
                }
        headers = {"Idempotency-Key": f"soak-{rng.getrandbits(64):016x}"} if rng.random() < 0.1 else {}
        return client.post("/api/v1/execute", json={"statements": [statement]}, headers=headers)

    def search(self, client: httpx.Client, rng: random.Random) -> httpx.Response:
        body: dict[str, Any] = {"vector": [rng.gauss(0, 1) for _ in range(self.dim)], "k": 10}
        if rng.random() < 0.25:
            body["filter"] = {"sql": "tag = ?", "params": [rng.choice("ab")]}
        return client.post("/api/v1/collections/docs/search", json=body)

    def sync(self, client: httpx.Client, rng: random.Random) -> httpx.Response:
        response = client.post("/api/v1/sync")
        self.stop.wait(0.1)
        return response


def _setup(node: NodeProcess, dim: int, rows: int) -> None:
    rng = random.Random(1)
    with httpx.Client(base_url=node.url, timeout=60) as client:
        create = f"CREATE TABLE docs (id INTEGER PRIMARY KEY, emb F32_BLOB({dim}), tag TEXT, body TEXT)"
        client.post("/api/v1/execute", json={"statements": [{"sql": create}]}).raise_for_status()
        b64 = base64.b64encode
        for start in range(1, rows + 1, 200):
            statements = [
                {
                    "sql": "INSERT INTO docs (id, emb, tag, body) VALUES (?, ?, ?, ?)",
                    "params": [i, {"base64": b64(_vector(rng, dim)).decode()}, "ab"[i % 2], "x" * 200],
                }
                for i in range(start, min(rows, start + 199) + 1)
            ]
            client.post("/api/v1/execute", json={"statements": statements}).raise_for_status()
        spec = {"table": "docs", "column": "emb", "dim": dim, "filter_columns": ["tag"]}
        client.put("/api/v1/collections/docs", json=spec).raise_for_status()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            info = client.get("/api/v1/collections/docs").json()
            if info.get("state") == "ready":
                return
            time.sleep(0.1)
        raise RuntimeError(f"the collection did not become ready: {info}")


def run(quick: bool = False, out: Path | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "duration_s": 10 if quick else 600,
        "sample_s": 2 if quick else 30,
        "rows": 1_000 if quick else 20_000,
        "dim": 32 if quick else 384,
        "threads": {"reads": 2, "writes": 2, "searches": 2, "syncs": 1},
        "mode": "replica node of a local edgenode primary, default settings",
    }
    params["warmup_s"] = params["duration_s"] * 0.1
    base_dir = Path(os.environ.get("EDGENODE_BENCH_DIR", tempfile.gettempdir()))
    work = Path(tempfile.mkdtemp(prefix="edgenode-soak-", dir=base_dir))
    primary = NodeProcess(
        ["primary", "--data-dir", str(work / "primary"), "--auth-token", TOKEN, "--no-migrate"], work / "primary.log"
    )
    node: NodeProcess | None = None
    samples: list[dict[str, Any]] = []
    try:
        primary.wait_ready("/health")
        node_args = ["serve", "--data-dir", str(work / "node"), "--primary-url", primary.url, "--primary-token", TOKEN]
        node = NodeProcess(node_args, work / "node.log")
        node.wait_ready("/ready")
        _setup(node, params["dim"], params["rows"])
        load = Load(node.url, params["dim"], params["rows"])
        steps = {"reads": load.read, "writes": load.write, "searches": load.search, "syncs": load.sync}
        threads = [
            threading.Thread(target=load._loop, args=(kind, steps[kind], 100 * i + n), daemon=True)
            for i, kind in enumerate(KINDS)
            for n in range(params["threads"][kind])
        ]
        started = time.monotonic()
        samples.append({"t_s": 0.0, **dict.fromkeys(KINDS, 0.0), "errors": 0, **resources(node.popen.pid)})
        for thread in threads:
            thread.start()
        last_counts, last_time = dict(load.counts), started
        while (elapsed := time.monotonic() - started) < params["duration_s"]:
            time.sleep(min(params["sample_s"], params["duration_s"] - elapsed))
            now = time.monotonic()
            with load.lock:
                counts, errors = dict(load.counts), load.error_count
            rates = {k: round((counts[k] - last_counts[k]) / (now - last_time), 1) for k in KINDS}
            samples.append({"t_s": round(now - started, 1), **rates, "errors": errors, **resources(node.popen.pid)})
            print(f"   {samples[-1]}", flush=True)
            last_counts, last_time = counts, now
        load.stop.set()
        for thread in threads:
            thread.join(60)
    finally:
        if node is not None:
            node.stop()
        primary.stop()
        shutil.rmtree(work, ignore_errors=True)

    after_warmup = next(s for s in samples if s["t_s"] >= params["warmup_s"])
    end = samples[-1]

    def growth(key: str) -> float:
        return round((end[key] - after_warmup[key]) / after_warmup[key] * 100, 1) if after_warmup[key] else 0.0

    rss_growth, fd_growth = growth("rss_mib"), growth("fds")
    steady = samples[1:]
    summary = [
        {
            "figure": f"{kind} per second (median of {len(steady)} windows)",
            "value": f"{statistics.median(s[kind] for s in steady):,.0f}",
        }
        for kind in KINDS
    ]
    summary += [
        {"figure": "errors", "value": str(load.error_count)},
        {
            "figure": "RSS of the node's processes: start / after warm-up / end",
            "value": f"{samples[0]['rss_mib']} / {after_warmup['rss_mib']} / {end['rss_mib']} MiB "
            f"({rss_growth:+.1f}% after warm-up)",
        },
        {
            "figure": "open fds: start / after warm-up / end",
            "value": f"{samples[0]['fds']} / {after_warmup['fds']} / {end['fds']} ({fd_growth:+.1f}% after warm-up)",
        },
    ]
    passed = load.error_count == 0 and rss_growth < 10 and fd_growth < 10
    print(table(samples, ["t_s", *KINDS, "errors", "rss_mib", "fds", "processes"]))
    return {
        "benchmark": "soak",
        "command": "python -m bench soak" + (" --quick" if quick else ""),
        "machine": machine(),
        "parameters": params,
        "rows": samples,
        "errors": load.error_count,
        "error_samples": load.errors,
        "growth_after_warmup_pct": {"rss": rss_growth, "fds": fd_growth},
        "passed": passed,
        "summary": summary,
    }


if __name__ == "__main__":
    import sys

    result = run(quick="--quick" in sys.argv)
    print(result["summary"], "passed" if result["passed"] else "FAILED")
