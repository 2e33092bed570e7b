"""Cold start: process start to `/ready`, and to a loaded vector collection, for a node with a large
database (~1 GB; small in --quick) and a 100k x 384 vector collection (generated Gaussian-mixture
vectors, not real embeddings).

First, spawn to the first `/health` 200 side by side for the venv (`python -m edgenode`) and the
single-file binary (EDGENODE_BINARY, else `make binary`'s file; skipped when neither exists): a
first start on a new data dir (the binary also unpacks its runtime into a fresh cache directory),
then later starts on the same data dir.

Sequence: build the database offline with libsql (the node's schema from sql/ plus a `docs` table
with an F32_BLOB column), start the node (first start), create the collection with
`PUT /api/v1/collections/docs` and wait for its first build, stop the node gracefully, then start
it again several times — "cold" after evicting the data dir's files from the OS page cache
(fdatasync + POSIX_FADV_DONTNEED per file; no root or global cache drop needed), and "warm".
From the moment the process is spawned, the benchmark polls `/ready` and a k=10 search every
5 ms: `ready_s` is the first 200 from `/ready`, `first_answer_s` the first search answered with
10 results. Then `GET /api/v1/collections/docs` must report `builds == 0` and
`loaded_from_disk`: the persisted HNSW index and sidecar are loaded, never rebuilt.

The database part above is standalone mode. `kill9_restarts` measures a replica node instead: a
local `edgenode primary` and a replica node with a small database, the node written to, then
`kill -9`ed and started again on the same data directory, N times (and a few graceful restarts for
comparison); each row has the seconds from spawn to the first 200 from `/ready` and the node's own
start-up timeline (`edgenode.startup` marks, seconds since its process started, from its log).
Run it alone with `python -m bench.cold_start kill9 [--kills 10]` (writes cold_start_kill9.json).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import DEFAULT_OUT, ROOT, NodeProcess, free_port, machine, save, table
from bench.pragmas import build_database

COLLECTION = "docs"
VENV = [sys.executable, "-m", "edgenode"]


def _die_with_parent() -> None:
    """Linux: the node gets SIGTERM when the benchmark dies, even by SIGKILL (a test timeout)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class CollectionFailed(RuntimeError):
    """The vector collection kept failing to build or load; the database part is still measured."""


class Node:
    """One node process on a free port; `started` is taken just before the process is spawned."""

    def __init__(
        self,
        data_dir: Path,
        log: Path,
        timeout: float,
        edgenode: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.timeout = timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [*(edgenode or VENV), "serve", "--data-dir", str(data_dir), "--port", str(self.port)]
        self.log = log
        self._log = log.open("ab")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    def wait(self, path: str, done: Any = None, error_grace: float | None = None) -> tuple[float, Any]:
        """Seconds from process start until `path` answers 200 (and `done(json)` holds), and the body.

        A collection may pass through state "error" and retry; one that stays in error for
        `error_grace` seconds raises CollectionFailed with its last error.
        """
        last_error, erring_since = None, None
        while time.monotonic() - self.started < self.timeout:
            if self.popen.poll() is not None:
                raise RuntimeError(f"node exited with {self.popen.returncode}")
            try:
                r = httpx.get(self.url + path, timeout=5)
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else None
                if isinstance(body, dict) and body.get("state") == "error":
                    last_error = body.get("error")
                    erring_since = erring_since or time.monotonic()
                    if error_grace is not None and time.monotonic() - erring_since > error_grace:
                        raise CollectionFailed(f"{path} stayed in state error for {error_grace}s: {last_error}")
                else:
                    erring_since = None
                if r.status_code == 200 and (done is None or done(body)):
                    return time.monotonic() - self.started, body
            except httpx.TransportError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"{path} not done after {self.timeout}s (last error: {last_error})")

    def first_answer(self, dim: int) -> tuple[float, float]:
        """Seconds from spawn to the first 200 from /ready and to the first full search answer."""
        ready = None
        query = {"vector": [1.0] + [0.0] * (dim - 1), "k": 10}
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.monotonic() - self.started < self.timeout:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"node exited with {self.popen.returncode}")
                try:
                    if ready is None and client.get("/ready").status_code == 200:
                        ready = time.monotonic() - self.started
                    r = client.post(f"/api/v1/collections/{COLLECTION}/search", json=query)
                    if r.status_code == 200 and len(r.json()["results"]) == 10:
                        answered = time.monotonic() - self.started
                        return (ready if ready is not None else answered), answered
                except httpx.TransportError:
                    pass
                time.sleep(0.005)
        raise RuntimeError(f"no search answer after {self.timeout}s")

    def stop(self) -> float:
        """Graceful stop (SIGTERM: the node persists its indexes); seconds it took."""
        start = time.monotonic()
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(300)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        self._log.close()
        return time.monotonic() - start


def import_seconds() -> float:
    """What a node start spends before touching data: the interpreter and the node's imports."""
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "import edgenode.node, edgenode.vectors.manager, edgenode.commands.serve, uvicorn"],
        cwd=ROOT,
        check=True,
    )
    return time.monotonic() - start


def binary_path() -> Path | None:
    """The single-file binary: $EDGENODE_BINARY, else what `make binary` wrote for this version."""
    if os.environ.get("EDGENODE_BINARY"):
        return Path(os.environ["EDGENODE_BINARY"])
    name = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "release" / "build.py"), "name"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return Path(name) if Path(name).is_file() else None


def process_starts(work: Path, later: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Spawn to the first /health 200, as a user meets it: a first start (new data dir, so it
    creates the database and applies the migrations; the binary also unpacks its runtime into a
    fresh cache directory) and later starts on the same data dir (the binary reuses its cache)."""
    rows: list[dict[str, Any]] = []

    def start(how: str, data: Path, edgenode: list[str], env: dict[str, str] | None = None) -> None:
        node = Node(data, work / "start.log", 60, edgenode, env)
        try:
            seconds, _ = node.wait("/health")
        finally:
            node.stop()
        rows.append({"start": how, "health_s": seconds})

    start("venv (python -m edgenode), first start", work / "start-venv", VENV)
    for _ in range(later):
        start("venv (python -m edgenode), later start", work / "start-venv", VENV)
    binary = binary_path()
    if binary is None:
        return rows, {"binary": "not built (make binary)"}
    env = {**os.environ, "EDGENODE_RUNTIME_DIR": str(work / "runtime")}
    start("binary, first start (unpacks)", work / "start-binary", [str(binary)], env)
    for _ in range(later):
        start("binary, later start", work / "start-binary", [str(binary)], env)
    sizes = {"binary_bytes": binary.stat().st_size, "runtime_bytes": dir_bytes(work / "runtime")}
    return rows, {"binary": binary.name, **sizes}


def starts_only(later: int) -> dict[str, Any]:
    """venv and binary process starts alone (no database build): `python -m bench.cold_start starts`."""
    work = Path(tempfile.mkdtemp(prefix="edgenode-starts-"))
    try:
        load_before = os.getloadavg()
        rows, info = process_starts(work, later)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = []
    for how in dict.fromkeys(r["start"] for r in rows):
        times = [r["health_s"] for r in rows if r["start"] == how]
        summary.append(
            {
                "figure": f"{how}: spawn to first /health 200 (n={len(times)})",
                "value": f"median {statistics.median(times):.2f} s, slowest {max(times):.2f} s",
            }
        )
    if "binary_bytes" in info:
        summary.append(
            {
                "figure": f"binary {info['binary']}: file / unpacked runtime",
                "value": f"{info['binary_bytes'] / 2**20:.1f} MiB / {info['runtime_bytes'] / 2**20:.0f} MiB",
            }
        )
    return {
        "benchmark": "cold_start_starts",
        "command": f"python -m bench.cold_start starts --later {later}",
        "machine": machine(),
        "parameters": {"later": later, "load_average_before": [round(x, 2) for x in load_before], **info},
        "summary": summary,
        "rows": rows,
    }


def add_vectors(db: Path, n: int, dim: int) -> None:
    import libsql

    conn = libsql.connect(str(db), isolation_level=None)
    conn.execute(f"CREATE TABLE {COLLECTION} (id INTEGER PRIMARY KEY, emb F32_BLOB({dim}), tag TEXT)")
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((50, dim)).astype("<f4")
    conn.execute("BEGIN")
    for start in range(0, n, 10_000):
        m = min(10_000, n - start)
        block = centers[rng.integers(0, 50, m)] + 0.3 * rng.standard_normal((m, dim)).astype("<f4")
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        for i in range(m):
            conn.execute(
                f"INSERT INTO {COLLECTION} (id, emb, tag) VALUES (?, ?, ?)",
                (start + i + 1, block[i].astype("<f4").tobytes(), "ab"[i % 2]),
            )
    conn.execute("COMMIT")
    conn.close()


def evict(directory: Path) -> int:
    """Drop the files under `directory` from the OS page cache; bytes covered."""
    total = 0
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                total += path.stat().st_size
            finally:
                os.close(fd)
    return total


def dir_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def run(quick: bool = False, out: Path | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "prompts": 10_000 if quick else 1_200_000,
        "users": 200 if quick else 20_000,
        "vectors": 2_000 if quick else 100_000,
        "dim": 64 if quick else 384,
        "restarts": 2 if quick else 3,
        "timeout_s": 120 if quick else 1800,
        "error_grace_s": 20 if quick else 120,
        "mode": "standalone (replica-mode cold start not measured yet)",
        "vector_data": "generated Gaussian mixture (50 clusters), L2-normalised; not real embeddings",
    }
    rows: list[dict[str, Any]] = []
    base_dir = Path(os.environ.get("EDGENODE_BENCH_DIR", tempfile.gettempdir()))
    work = Path(tempfile.mkdtemp(prefix="edgenode-cold-", dir=base_dir))
    try:
        starts, binary_info = process_starts(work, params["restarts"] + 1)
        params |= binary_info
        for row in starts:
            print(f"   {row['start']}: /health after {row['health_s']:.2f}s", flush=True)
        data = work / "data"
        data.mkdir()
        db = data / "edgenode.db"
        start = time.monotonic()
        build_database(db, params["users"], params["prompts"])
        add_vectors(db, params["vectors"], params["dim"])
        params["build_seconds"] = round(time.monotonic() - start, 1)
        params["database_bytes"] = db.stat().st_size
        params["import_seconds"] = import_seconds()
        print(f"   database: {db.stat().st_size / 2**30:.2f} GiB built in {params['build_seconds']}s", flush=True)

        node = Node(data, work / "node.log", params["timeout_s"])
        try:
            ready, _ = node.wait("/ready")
            rows.append({"start": "first start, no collection yet", "ready_s": ready})
            spec = {"table": COLLECTION, "column": "emb", "dim": params["dim"], "filter_columns": ["tag"]}
            put_at = time.monotonic()
            r = httpx.put(f"{node.url}/api/v1/collections/{COLLECTION}", json=spec, timeout=300)
            r.raise_for_status()
            _, info = _wait_collection(node, params["error_grace_s"])
            rows[-1].update(
                {
                    "collection_ready_s": time.monotonic() - put_at,
                    "builds": info["builds"],
                    "loaded_from_disk": info["loaded_from_disk"],
                    "build_seconds": info["build_seconds"],
                    "size": info["size"],
                }
            )
            print(f"   first build of {info['size']} vectors: {rows[-1]['collection_ready_s']:.1f}s", flush=True)
        except CollectionFailed as exc:
            params["collection_error"] = str(exc)
            print(f"   the collection did not build; measuring the database part only: {exc}", flush=True)
        finally:
            rows[-1]["stop_s"] = node.stop()
        params["data_dir_bytes"] = dir_bytes(data)

        for trial in range(params["restarts"]):
            for cache in ("cold", "warm"):
                evicted = evict(data) if cache == "cold" else 0
                node = Node(data, work / "node.log", params["timeout_s"])
                row: dict[str, Any] = {
                    "start": f"restart {trial + 1}, {cache} OS cache",
                    "cache": cache,
                    "evicted_bytes": evicted,
                }
                try:
                    if "collection_error" in params:
                        row["ready_s"], _ = node.wait("/ready")
                        continue
                    row["ready_s"], row["first_answer_s"] = node.first_answer(params["dim"])
                    info = httpx.get(f"{node.url}/api/v1/collections/{COLLECTION}", timeout=10).json()
                    row |= {
                        "builds": info["builds"],
                        "loaded_from_disk": info["loaded_from_disk"],
                        "size": info["size"],
                        "state": info["state"],
                    }
                finally:
                    row["stop_s"] = node.stop()
                    rows.append(row)
                print(
                    f"   {row['start']}: ready {row.get('ready_s', float('nan')):.2f}s, first answer "
                    f"{row.get('first_answer_s', float('nan')):.2f}s, builds={row.get('builds')}, "
                    f"loaded_from_disk={row.get('loaded_from_disk')}",
                    flush=True,
                )
    except Exception:
        log = work / "node.log"
        if log.exists():
            print("   node log (tail):\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]), flush=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)

    restarts = [r for r in rows if "cache" in r]
    size = f"{params['database_bytes'] / 2**30:.2f} GiB database, {params['vectors']:,} x {params['dim']} vectors"
    medians = {
        cache: {
            key: statistics.median(r[key] for r in restarts if r["cache"] == cache and key in r)
            for key in ("ready_s", "first_answer_s")
            if any(key in r for r in restarts if r["cache"] == cache)
        }
        for cache in ("cold", "warm")
    }
    summary = [
        {"figure": f"restart to /ready, {cache} OS cache ({size})", "value": f"{medians[cache]['ready_s']:.2f} s"}
        for cache in ("cold", "warm")
    ]
    summary.append({"figure": "of which interpreter + imports", "value": f"{params['import_seconds']:.2f} s"})
    for how in dict.fromkeys(row["start"] for row in starts):
        times = [row["health_s"] for row in starts if row["start"] == how]
        value = f"{statistics.median(times):.2f} s" + (f" (median of {len(times)})" if len(times) > 1 else "")
        summary.append({"figure": f"spawn to first /health 200: {how}", "value": value})
    if "binary_bytes" in params:
        summary.append(
            {
                "figure": f"binary {params['binary']}: file / unpacked runtime",
                "value": f"{params['binary_bytes'] / 2**20:.1f} MiB / {params['runtime_bytes'] / 2**20:.0f} MiB",
            }
        )
    if "collection_error" in params:
        summary.append({"figure": "vector collection", "value": f"did not build: {params['collection_error']}"})
    else:
        rebuilt = [r for r in restarts if r["builds"] != 0 or not r["loaded_from_disk"]]
        summary[:0] = [
            {"figure": f"first build of the collection ({size})", "value": f"{rows[0]['collection_ready_s']:.1f} s"}
        ]
        summary += [
            {
                "figure": f"restart to the first search answer (k=10, persisted index), {cache} OS cache",
                "value": f"{medians[cache]['first_answer_s']:.2f} s "
                f"(slowest of {sum(r['cache'] == cache for r in restarts)}: "
                f"{max(r['first_answer_s'] for r in restarts if r['cache'] == cache):.2f} s)",
            }
            for cache in ("cold", "warm")
        ]
        summary.append(
            {"figure": "full index rebuilds on restart (builds counter)", "value": f"{len(rebuilt)} of {len(restarts)}"}
        )
    print(table(rows, ["start", "ready_s", "first_answer_s", "builds", "loaded_from_disk"]))
    print("   replica node restarted after kill -9:", flush=True)
    kill9 = kill9_restarts(kills=2 if quick else 10, graceful=0 if quick else 3)
    summary.append(
        {
            "figure": f"replica node, kill -9 to /ready (median of {kill9['kill9']['n']})",
            "value": f"{kill9['kill9']['median_s']:.2f} s (slowest {kill9['kill9']['max_s']:.2f} s)",
        }
    )
    return {
        "kill9": kill9,
        "benchmark": "cold_start",
        "command": "python -m bench cold_start" + (" --quick" if quick else ""),
        "machine": machine(),
        "parameters": params,
        "rows": rows,
        "process_starts": starts,
        "medians": medians,
        "summary": summary,
    }


PRIMARY_TOKEN = "bench-kill9-token"
_TIMELINE = re.compile(
    r"edgenode\.startup: ready [0-9.]+ s after process start \(([0-9.]+) s of CPU in this process\): (.*)$"
)


def _timeline(log: Path) -> dict[str, float]:
    """The last start-up timeline the node logged (`name seconds, ...`) and the CPU seconds its main
    process had used by then (`node_process_cpu`)."""
    found = [m for line in log.read_text(errors="replace").splitlines() if (m := _TIMELINE.search(line))]
    if not found:
        return {}
    marks = {name: float(value) for name, value in (item.rsplit(" ", 1) for item in found[-1].group(2).split(", "))}
    return {**marks, "node_process_cpu": float(found[-1].group(1))}


def _load() -> float:
    return os.getloadavg()[0]


def kill9_restarts(kills: int = 10, graceful: int = 3) -> dict[str, Any]:
    """A replica node restarted after `kill -9` (and gracefully): seconds from spawn to `/ready`."""
    from edgenode.primary.client import execute as primary_execute

    base_dir = Path(os.environ.get("EDGENODE_BENCH_DIR", tempfile.gettempdir()))
    work = Path(tempfile.mkdtemp(prefix="edgenode-kill9-", dir=base_dir))
    primary = NodeProcess(
        ["primary", "--data-dir", str(work / "primary"), "--auth-token", PRIMARY_TOKEN, "--no-migrate"],
        work / "primary.log",
    )
    rows: list[dict[str, Any]] = []
    try:
        primary.wait_ready("/health")
        primary_execute(primary.url, ["CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"], PRIMARY_TOKEN)
        node_args = ["serve", "--data-dir", str(work / "node"), "--primary-url", primary.url]
        node_args += ["--primary-token", PRIMARY_TOKEN]
        log = work / "node.log"
        node = NodeProcess(node_args, log)
        node.wait_ready("/ready")
        plan = ["kill -9"] * kills + ["graceful"] * graceful
        for index, how in enumerate(plan):
            for _ in range(20):  # writes in flight up to the kill: the replica has a live WAL
                httpx.post(
                    node.url + "/api/v1/execute",
                    json={"statements": [{"sql": "INSERT INTO t (v) VALUES (randomblob(2000))"}]},
                    timeout=10,
                ).raise_for_status()
            if how == "kill -9":
                node.popen.kill()
                node.popen.wait(10)
            else:
                node.stop()
            load = _load()
            node = NodeProcess(node_args, log)
            ready = node.wait_ready("/ready")
            row = {"restart": index + 1, "after": how, "ready_s": round(ready, 3), "load_1min": round(load, 2)}
            row["timeline"] = _timeline(log)
            rows.append(row)
            print(f"   {how} #{index + 1}: ready {ready:.2f} s (load {load:.1f}) {row['timeline']}", flush=True)
        node.stop()
    finally:
        for process in (locals().get("node"), primary):
            if process is not None:
                process.stop()
        shutil.rmtree(work, ignore_errors=True)
    return summarize_kill9(rows, kills, graceful)


def summarize_kill9(rows: list[dict[str, Any]], kills: int, graceful: int) -> dict[str, Any]:
    def summary_of(how: str) -> dict[str, float]:
        times = [r["ready_s"] for r in rows if r["after"] == how]
        return {"median_s": statistics.median(times), "max_s": max(times), "n": len(times)}

    phases = sorted(
        {k for r in rows for k in r["timeline"]} - {"node_process_cpu"},
        key=lambda k: statistics.median(r["timeline"][k] for r in rows if k in r["timeline"]),
    )
    median_timeline = {
        k: round(statistics.median(r["timeline"][k] for r in rows if k in r["timeline"] and r["after"] == "kill -9"), 3)
        for k in phases
        if any(k in r["timeline"] for r in rows if r["after"] == "kill -9")
    }
    killed = [r for r in rows if r["after"] == "kill -9"]
    cpu = [r["timeline"]["node_process_cpu"] for r in killed if "node_process_cpu" in r["timeline"]]
    loads = [r["load_1min"] for r in killed]
    summary = [
        {
            "figure": f"replica node, kill -9 to /ready (median of {len(killed)})",
            "value": f"{summary_of('kill -9')['median_s']:.2f} s (slowest {summary_of('kill -9')['max_s']:.2f} s)",
        },
        {
            "figure": "CPU its main process had used by then (median)",
            "value": f"{statistics.median(cpu):.2f} s" if cpu else "n/a",
        },
        {
            "figure": "machine load (1-min average) during the restarts",
            "value": f"{min(loads):.1f} to {max(loads):.1f}",
        },
    ]
    if graceful:
        summary.append(
            {
                "figure": f"replica node, graceful stop to /ready (median of {graceful})",
                "value": f"{summary_of('graceful')['median_s']:.2f} s",
            }
        )
    summary += [
        {"figure": f"timeline after kill -9 (median): {k}", "value": f"{v:.2f} s"} for k, v in median_timeline.items()
    ]
    return {
        "benchmark": "cold_start_kill9",
        "command": f"python -m bench.cold_start kill9 --kills {kills} --graceful {graceful}",
        "summary": summary,
        "machine": machine(),
        "parameters": {"kills": kills, "graceful": graceful, "mode": "replica node of a local edgenode primary"},
        "bytecode_cached": any((ROOT / "edgenode" / "__pycache__").glob("*.pyc")),
        "kill9": summary_of("kill -9"),
        "graceful": summary_of("graceful") if graceful else None,
        "median_timeline_after_kill9": median_timeline,
        "rows": rows,
    }


def _wait_collection(node: Node, error_grace: float) -> tuple[float, dict[str, Any]]:
    return node.wait(
        f"/api/v1/collections/{COLLECTION}", lambda i: i["state"] == "ready" and i["progress"] >= 1, error_grace
    )


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.cold_start")
    parser.add_argument("case", choices=["all", "kill9", "starts"], nargs="?", default="all")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--later", type=int, default=6, help="starts: later starts of each build")
    parser.add_argument("--graceful", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    cli = parser.parse_args()
    if cli.case == "kill9":
        result = kill9_restarts(cli.kills, cli.graceful)
        print(json.dumps({k: result[k] for k in ("kill9", "graceful", "median_timeline_after_kill9")}, indent=2))
        print("wrote", save("cold_start_kill9", result, cli.out))
    elif cli.case == "starts":
        print("wrote", save("cold_start_starts", starts_only(cli.later), cli.out))
    else:
        print(run(quick=True))
