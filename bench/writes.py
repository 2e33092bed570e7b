"""Writes through a node: straight to the primary vs a forward node vs a local-first node (issue #20).

Single-row INSERTs at 1, 8 and 32 concurrent clients, each path in the same run against the same
`edgenode primary`: Hrana `/v2/pipeline` for all three, REST `/api/v1/execute` for the two nodes.
A forward write is answered once it is on the primary and visible on the node; a local-first
write once it is committed on the node and queued (its "time to primary", pushed_at - created_at,
is read from the node's outbox afterwards). Then an outage: the primary is stopped while the
local-first node takes writes at a fixed rate; after it returns, the drain time (until the outbox
is empty and pulled back) and the drain rate, with the row counts of node and primary compared.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import apsw
import httpx
import msgspec

from bench.common import NodeProcess, machine, percentile, save_figure, table
from bench.loadgen import run_load
from edgenode.primary.client import execute as primary_execute

TOKEN = "bench-primary-token"
NODE_TOKEN = "bench-node-token"
INSERT = "INSERT INTO ins (v) VALUES (?)"
CLIENTS = (1, 8, 32)


def _hrana_body(worker: int, n: int) -> bytes:
    stmt = {"sql": INSERT, "args": [{"type": "text", "value": f"h{worker}-{n}"}], "want_rows": False}
    return msgspec.json.encode({"baton": None, "requests": [{"type": "execute", "stmt": stmt}, {"type": "close"}]})


def _rest_body(worker: int, n: int) -> bytes:
    return msgspec.json.encode({"statements": [{"sql": INSERT, "params": [f"r{worker}-{n}"]}]})


def _hrana_ok(_: int, payload: bytes) -> bool:
    return b'"type":"error"' not in payload


def _load_process(url: str, path: str, token: str, clients: int, seconds: float, queue: Any) -> None:
    body, check = (_hrana_body, _hrana_ok) if path == "/v2/pipeline" else (_rest_body, None)
    queue.put(asyncio.run(run_load(url, path, body, clients, seconds, token=token, check=check)))


def load(url: str, path: str, token: str, clients: int, seconds: float) -> dict[str, Any]:
    """The load generator in its own process, so the client's CPU is not the bench's process."""
    ctx = multiprocessing.get_context("spawn")
    queue: Any = ctx.Queue()
    proc = ctx.Process(target=_load_process, args=(url, path, token, clients, seconds, queue))
    proc.start()
    result = queue.get(timeout=seconds + 120)
    proc.join(30)
    return result


def outbox(node: NodeProcess) -> dict[str, Any]:
    return httpx.get(node.url + "/api/v1/outbox", headers={"Authorization": f"Bearer {NODE_TOKEN}"}, timeout=10).json()


def drained(node: NodeProcess, timeout: float) -> float:
    """Seconds until the node's outbox is empty and its pushes pulled back."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        state = outbox(node)
        if state["pending"] == 0 and state["pushed_not_pulled"] == 0:
            return time.monotonic() - began
        time.sleep(0.05)
    raise RuntimeError(f"the outbox did not drain in {timeout}s: {outbox(node)}")


def count_node(node: NodeProcess) -> int:
    response = httpx.post(
        node.url + "/api/v1/query",
        json={"sql": "SELECT count(*) FROM ins"},
        headers={"Authorization": f"Bearer {NODE_TOKEN}"},
        timeout=10,
    )
    return int(response.json()["rows"][0][0])


def count_primary(url: str) -> int:
    return int(primary_execute(url, ["SELECT count(*) FROM ins"], TOKEN)[0][0][0])


def time_to_primary(data_dir: Path) -> dict[str, Any]:
    """From the stopped node's outbox: pushed_at - created_at of every write it recorded as applied."""
    db = apsw.Connection(str(data_dir / "outbox.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        samples = [
            row[0] for row in db.execute("SELECT pushed_at - created_at FROM entries WHERE pushed_at IS NOT NULL")
        ]
    finally:
        db.close()
    return {
        "writes": len(samples),
        "p50_ms": percentile(samples, 50) * 1000 if samples else None,
        "p99_ms": percentile(samples, 99) * 1000 if samples else None,
    }


def node_args(root: Path, name: str, primary_url: str, mode: str) -> list[str]:
    return [
        *("serve", "--data-dir", str(root / name), "--auth-token", NODE_TOKEN, "--primary-url", primary_url),
        *("--primary-token", TOKEN, "--write-mode", mode, "--sync-interval", "1", "--max-lag", "30"),
    ]


def run(quick: bool = False, out: Path | None = None) -> dict[str, Any]:
    seconds = 2.0 if quick else 10.0
    outage_seconds = 5.0 if quick else 60.0
    outage_rate = 50 if quick else 200
    rows: list[dict[str, Any]] = []
    outage: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgenode-bench-") as tmp:
        root = Path(tmp)
        primary_args = ["primary", "--data-dir", str(root / "primary"), "--auth-token", TOKEN, "--no-migrate"]
        primary = NodeProcess(primary_args, root / "primary.log")
        nodes: dict[str, NodeProcess] = {}
        try:
            primary.wait_ready("/health")
            primary_execute(primary.url, ["CREATE TABLE ins (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"], TOKEN)
            for mode in ("forward", "local-first"):
                nodes[mode] = NodeProcess(node_args(root, mode, primary.url, mode), root / f"{mode}.log")
            for node in nodes.values():
                node.wait_ready()
            paths = [
                ("primary direct", "hrana", primary.url, "/v2/pipeline", TOKEN),
                ("forward node", "hrana", nodes["forward"].url, "/v2/pipeline", NODE_TOKEN),
                ("forward node", "rest", nodes["forward"].url, "/api/v1/execute", NODE_TOKEN),
                ("local-first node", "hrana", nodes["local-first"].url, "/v2/pipeline", NODE_TOKEN),
                ("local-first node", "rest", nodes["local-first"].url, "/api/v1/execute", NODE_TOKEN),
            ]
            for clients in CLIENTS:
                for label, protocol, url, path, token in paths:
                    result = load(url, path, token, clients, seconds)
                    rows.append({"path": label, "protocol": protocol, "clients": clients, **result})
                    print(
                        f"   {label} ({protocol}), {clients} clients: {result['qps']:.0f} writes/s, "
                        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, errors {result['errors']}",
                        flush=True,
                    )
                drained(nodes["local-first"], 120)
            # The outage: the primary away while the local-first node keeps taking writes.
            lf = nodes["local-first"]
            primary.stop()
            sent = 0
            began = time.monotonic()
            with httpx.Client(headers={"Authorization": f"Bearer {NODE_TOKEN}"}, timeout=10) as http:
                while time.monotonic() - began < outage_seconds:
                    response = http.post(lf.url + "/api/v1/execute", content=_rest_body(0, sent))
                    response.raise_for_status()
                    sent += 1
                    time.sleep(max(0.0, began + sent / outage_rate - time.monotonic()))
            queued = outbox(lf)["pending"]
            primary = NodeProcess(primary_args, root / "primary.log", port=primary.port)
            primary.wait_ready("/health")
            returned = time.monotonic()
            drain = drained(lf, 600)
            converged = count_node(lf) == count_primary(primary.url)
            outage = {
                "outage_s": outage_seconds,
                "rate_per_s": outage_rate,
                "writes_accepted": sent,
                "queued_at_return": queued,
                "drain_s": round(drain, 3),
                "drain_rate_per_s": round(queued / drain, 1) if drain > 0 else None,
                "since_primary_up_s": round(time.monotonic() - returned, 3),
                "rows_equal": converged,
            }
            print(f"   outage: {outage}", flush=True)
        finally:
            for node in nodes.values():
                node.stop()
            primary.stop()
        to_primary = time_to_primary(root / "local-first")
    print(table(rows, ["path", "protocol", "clients", "requests", "errors", "qps", "p50_ms", "p99_ms"]))
    result = {
        "benchmark": "writes",
        "command": "python -m bench writes" + (" --quick" if quick else ""),
        "machine": machine(),
        "parameters": {
            "seconds_per_run": seconds,
            "clients": list(CLIENTS),
            "outage_seconds": outage_seconds,
            "outage_rate_per_s": outage_rate,
        },
        "rows": rows,
        "local_first_time_to_primary": [to_primary],
        "outage": [outage],
        "notes": [
            "forward: answered once on the primary and visible on the node; local-first: once committed on the node",
            "time to primary: pushed_at - created_at of local-first writes, from the node's outbox",
            "primary, nodes and load generator share the machine",
        ],
    }
    png = plot(result, out)
    if png:
        result["plot"] = str(png)
    return result


def plot(result: dict[str, Any], out: Path | None) -> Path | None:
    if out is None:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series = sorted({(r["path"], r["protocol"]) for r in result["rows"]})
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for label, protocol in series:
        mine = [r for r in result["rows"] if (r["path"], r["protocol"]) == (label, protocol)]
        xs = [r["clients"] for r in mine]
        axes[0].plot(xs, [r["qps"] for r in mine], marker="o", label=f"{label} ({protocol})")
        axes[1].plot(xs, [r["p50_ms"] for r in mine], marker="o", label=f"{label} ({protocol})")
    axes[0].set_title("single-row writes per second")
    axes[1].set_title("p50 latency (ms)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.legend(fontsize=8)
    return save_figure(fig, out / "writes.png")


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
