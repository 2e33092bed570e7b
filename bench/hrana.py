"""Hrana throughput and latency: point reads and single-row inserts through a standalone node's
`/v2/pipeline`, next to the same workload in the same run against the `turso` CLI's Rust server
(`turso --sync-server`, npm package `turso`, installed into bench/js/ by this module).

Both servers get byte-identical raw stateless requests (`{"baton": null, "requests": [execute]}`,
no `close`: the turso server refuses that request type) from one load generator process
(bench/loadgen.py) over several keep-alive connections, on identical copies of one seeded SQLite
file, neither with authentication. `@libsql/client` figures (each `execute` = a stream opened and
closed in one request) are for the node alone, since the turso server refuses its `close`.
On a 2-core machine the load generator competes with the servers for CPU; the figures include it.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench.common import ROOT, NodeProcess, free_port, machine, table
from bench.loadgen import run_load

READ_SQL = "SELECT id, v FROM kv WHERE id = ?"
INSERT_SQL = "INSERT INTO ins(v) VALUES (?)"
JS_DIR = ROOT / "bench" / "js"
TESTS_JS = ROOT / "tests" / "js"


def seed(path: Path, n_rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE kv(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.execute("CREATE TABLE ins(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.executemany("INSERT INTO kv(id, v) VALUES (?, ?)", ((i, f"value-{i:08d}-" + "x" * 40) for i in range(n_rows)))
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _read_body(n_rows: int) -> Any:
    def body(worker: int, n: int) -> bytes:
        key = random.Random(worker * 1_000_003 + n).randrange(n_rows)
        stmt = {"sql": READ_SQL, "args": [{"type": "integer", "value": str(key)}]}
        return msgspec.json.encode({"baton": None, "requests": [{"type": "execute", "stmt": stmt}]})

    return body


def _insert_body(worker: int, n: int) -> bytes:
    stmt = {"sql": INSERT_SQL, "args": [{"type": "text", "value": f"w{worker}-n{n}"}]}
    return msgspec.json.encode({"baton": None, "requests": [{"type": "execute", "stmt": stmt}]})


def _one_row(_: int, payload: bytes) -> bool:
    return b'"type":"ok"' in payload and b'"rows":[[' in payload


def _ok(_: int, payload: bytes) -> bool:
    return b'"type":"ok"' in payload and b'"type":"error"' not in payload


def _load_process(url: str, kind: str, clients: int, seconds: float, n_rows: int, keep_alive: bool, queue: Any) -> None:
    make_body, check = (_read_body(n_rows), _one_row) if kind == "read" else (_insert_body, _ok)
    result = asyncio.run(run_load(url, "/v2/pipeline", make_body, clients, seconds, check=check, keep_alive=keep_alive))
    queue.put(result)


def http_load(url: str, kind: str, clients: int, seconds: float, n_rows: int, keep_alive: bool) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue: Any = ctx.Queue()
    proc = ctx.Process(target=_load_process, args=(url, kind, clients, seconds, n_rows, keep_alive, queue))
    proc.start()
    result = queue.get(timeout=seconds + 120)
    proc.join(30)
    return result


class TursoServer:
    """`turso --sync-server 127.0.0.1:PORT FILE` (npm `turso`, installed into bench/js on first use)."""

    def __init__(self, db: Path, log: Path) -> None:
        binary = ensure_turso()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("ab")
        self.popen = subprocess.Popen(
            [str(binary), "--sync-server", f"127.0.0.1:{self.port}", str(db)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # The npm `turso` command is a Node wrapper that runs the real server as its child:
            # its own process group lets stop() end both.
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        body = {"baton": None, "requests": [{"type": "execute", "stmt": {"sql": "SELECT count(*) FROM kv"}}]}
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"turso exited with {self.popen.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.post(self.url + "/v2/pipeline", json=body, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("turso --sync-server did not answer within 30 s")
            time.sleep(0.05)

    def version(self) -> str:
        package = JS_DIR / "node_modules" / "turso" / "package.json"
        return json.loads(package.read_text())["version"] if package.exists() else "?"

    def stop(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone, children included
        self._log.close()


def ensure_turso() -> Path:
    binary = JS_DIR / "node_modules" / ".bin" / "turso"
    if not binary.exists():
        if shutil.which("npm") is None:
            raise RuntimeError("npm is not installed: cannot install the turso CLI")
        # Not `npm ci`: turso's lock file cannot list the optional per-platform CLI packages the
        # registry does not serve for this platform, and `npm ci` refuses such a lock file.
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=600)
    return binary


JS_LOAD = r"""
const { createClient } = require("@libsql/client");
(async () => {
  const db = createClient({ url: process.env.URL, intMode: "bigint" });
  const kind = process.env.KIND;
  const [clients, seconds, rows] = [+process.env.CLIENTS, +process.env.SECONDS, +process.env.ROWS];
  const latencies = [];
  let errors = 0, n = 0;
  const stopAt = performance.now() + seconds * 1000;
  const worker = async (w) => {
    while (performance.now() < stopAt) {
      const started = performance.now();
      try {
        if (kind === "read") {
          const r = await db.execute({ sql: process.env.READ_SQL, args: [BigInt(Math.floor(Math.random() * rows))] });
          if (r.rows.length !== 1) errors++;
        } else {
          await db.execute({ sql: process.env.INSERT_SQL, args: [`js-${w}-${n++}`] });
        }
      } catch (e) { errors++; }
      latencies.push(performance.now() - started);
    }
  };
  const began = performance.now();
  await Promise.all(Array.from({ length: clients }, (_, w) => worker(w)));
  const elapsed = (performance.now() - began) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (q) => latencies[Math.min(latencies.length - 1, Math.round((q / 100) * (latencies.length - 1)))];
  console.log(JSON.stringify({ requests: latencies.length, errors, qps: latencies.length / elapsed,
    p50_ms: pct(50), p99_ms: pct(99) }));
  db.close();
})().catch((e) => { console.error(e); process.exit(1); });
"""


def js_load(url: str, kind: str, clients: int, seconds: float, n_rows: int, tmp: Path) -> dict[str, Any] | None:
    if shutil.which("node") is None or not (TESTS_JS / "node_modules" / "@libsql" / "client").is_dir():
        return None
    script = tmp / "load.cjs"
    script.write_text(JS_LOAD)
    env = {
        "PATH": str(Path(shutil.which("node") or "node").parent),
        "NODE_PATH": str(TESTS_JS / "node_modules"),
        "URL": url,
        "KIND": kind,
        "CLIENTS": str(clients),
        "SECONDS": str(seconds),
        "ROWS": str(n_rows),
        "READ_SQL": READ_SQL,
        "INSERT_SQL": INSERT_SQL,
    }
    run = subprocess.run(["node", str(script)], env=env, capture_output=True, text=True, timeout=seconds + 120)
    if run.returncode != 0:
        raise RuntimeError(f"@libsql/client load failed: {run.stderr[-2000:]}")
    return json.loads(run.stdout)


def run(quick: bool = False, out: Path | None = None) -> dict[str, Any]:
    n_rows = 5_000 if quick else 100_000
    seconds = 1.5 if quick else 8.0
    workloads = [("read", 1), ("read", 8), ("read", 32), ("insert", 1), ("insert", 8)]
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    missing: list[str] = []
    turso_version = None
    # The figures mean little on a machine busy with other work: record how busy it was.
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="edgenode-bench-hrana-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "node").mkdir()
        seed(tmp / "seed.db", n_rows)
        shutil.copy(tmp / "seed.db", tmp / "node" / "edgenode.db")
        shutil.copy(tmp / "seed.db", tmp / "turso.db")
        servers: list[tuple[str, Any]] = []
        node = NodeProcess(["serve", "--data-dir", str(tmp / "node"), "--no-migrate"], tmp / "node.log")
        try:
            node.wait_ready()
            servers.append(("edgenode", node))
            try:
                turso = TursoServer(tmp / "turso.db", tmp / "turso.log")
                servers.append(("turso --sync-server", turso))
                turso_version = turso.version()
            except Exception as exc:  # keep the node's figures, but the run fails (see bench/__main__.py)
                missing.append(f"turso server: {exc}")
                print(f"   turso server not measured: {exc}", flush=True)
            for kind, clients in workloads:
                # Interleaved per workload so both servers see the same machine state. turso closes the
                # connection after each response; the node is measured both ways.
                runs = [(name, server, name == "edgenode") for name, server in servers]
                runs.insert(1, ("edgenode", node, False))
                for name, server, keep_alive in runs:
                    result = http_load(server.url, kind, clients, seconds, n_rows, keep_alive)
                    label = "point read" if kind == "read" else "single-row insert"
                    connection = "keep-alive" if keep_alive else "new per request"
                    rows.append(
                        {
                            "server": name,
                            "client": "raw /v2/pipeline",
                            "workload": label,
                            "concurrency": clients,
                            "connection": connection,
                            **result,
                        }
                    )
                    print(
                        f"   {name}: {label}, {clients} concurrent, {connection}: {result['qps']:,.0f} req/s, "
                        f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, errors {result['errors']}",
                        flush=True,
                    )
            for kind, clients in (("read", 1), ("read", 8), ("insert", 8)):
                result = js_load(node.url, kind, clients, seconds, n_rows, tmp)
                if result is None:
                    missing.append("@libsql/client: node or tests/js/node_modules missing")
                    break
                label = "point read" if kind == "read" else "single-row insert"
                rows.append(
                    {"server": "edgenode", "client": "@libsql/client", "workload": label, "concurrency": clients}
                    | result
                )
                print(f"   edgenode via @libsql/client: {label}, {clients} concurrent: {result['qps']:,.0f} req/s")
        finally:
            for _, server in reversed(servers):
                server.stop()
            if not servers:
                node.stop()
    print(
        table(rows, ["server", "client", "workload", "concurrency", "connection", "qps", "p50_ms", "p99_ms", "errors"])
    )
    return {
        "benchmark": "hrana",
        "command": "python -m bench hrana" + (" --quick" if quick else ""),
        "machine": machine(),
        "parameters": {
            "rows": n_rows,
            "seconds_per_run": seconds,
            "read": READ_SQL,
            "insert": INSERT_SQL,
            "turso_npm_version": turso_version,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "summary": summary(rows),
        "rows": rows,
        "notes": notes,
        "peers_missing": missing,
    }


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per raw workload: the node (keep-alive and new connection per request) next to turso."""

    def fmt(r: dict[str, Any]) -> str:
        return f"{r['qps']:,.0f} req/s (p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms)"

    out = []
    raw = [r for r in rows if r["client"] == "raw /v2/pipeline"]
    keys = list(dict.fromkeys((r["workload"], r["concurrency"]) for r in raw))
    for workload, concurrency in keys:
        same = {
            (r["server"], r["connection"]): r
            for r in raw
            if r["workload"] == workload and r["concurrency"] == concurrency
        }
        parts = []
        kept = same.get(("edgenode", "keep-alive"))
        fresh = same.get(("edgenode", "new per request"))
        turso = same.get(("turso --sync-server", "new per request"))
        if kept:
            parts.append(f"node keep-alive {fmt(kept)}")
        if fresh:
            parts.append(f"node new connections {fmt(fresh)}")
        if turso:
            parts.append(f"turso (always new connections) {fmt(turso)}")
            if fresh:
                parts.append(f"node/turso like for like {fresh['qps'] / turso['qps']:.2f} x")
        out.append({"figure": f"{workload}, {concurrency} concurrent", "value": "; ".join(parts)})
    for r in rows:
        if r["client"] == "@libsql/client":
            out.append(
                {"figure": f"@libsql/client -> node: {r['workload']}, {r['concurrency']} concurrent", "value": fmt(r)}
            )
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2))
