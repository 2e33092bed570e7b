"""Vector search: edgenode (in-process and over HTTP) next to raw hnswlib, sqlite-vec, numpy and libSQL.

Datasets: real all-MiniLM-L6-v2 embeddings from ../shared/data/minilm-pypi (50k x 384, 500 queries
with exact top-10; falls back to generated data, and says so, when the directory is absent) and
generated Gaussian-mixture data ("generated", 100k x 384), which is much easier than real data.
k = 10 throughout; recall@10 against numpy brute force (cosine). `--quick` uses 10k rows per
dataset, fewer queries and a smaller DiskANN subset; every row states its n.

Methods:
- numpy exact: one float32 matrix product per query.
- hnswlib raw: hnswlib.Index with the same M / ef_construction / ef as edgenode, queried directly.
- edgenode in-process: `VectorManager.query` with numpy arrays, the API for code in the node's
  process; what it adds to raw hnswlib is its own cost (checks, locks, planner, result objects).
- edgenode in-process, JSON lists: `VectorManager.search` with a `SearchRequest` holding Python
  lists, as the HTTP route calls it after decoding; it adds the list-to-array conversion.
- These are timed in alternating blocks of 25 queries (five passes over the queries; one with
  `--quick`), the order rotating block by block,
  so machine noise hits all alike and no method runs a query whose graph walk another method has
  just pulled into the CPU caches (query-by-query interleaving flattered whichever ran last).
- hnswlib raw, same graph: edgenode's own persisted index file loaded into a plain hnswlib.Index.
  Two builds of one dataset differ in query cost by up to ~15% at equal recall (insertion order,
  threads), so each edgenode row's `vs_raw` (its queries/s over raw hnswlib's, same run) and
  `vs_raw_p50` (raw's median latency over its own) are taken against this one: the same graph,
  with and without edgenode around it.
- edgenode HTTP: `edgenode serve` over HTTP/1.1 keep-alive (bench/loadgen.py, a separate process).
- edgenode filtered 1%: a filter accepting 1% of rows, through `VectorManager.search`.
- sqlite-vec vec0: brute-force KNN of a vec0 virtual table (apsw, in memory).
- libSQL exact: `ORDER BY vector_distance_cos(...) LIMIT 10` on the libSQL file.
- libSQL DiskANN: `libsql_vector_idx(..., 'compress_neighbors=float1bit')` + `vector_top_k`, on a subset
  (its build is slow: ~5 s per 1k rows here).

Run: `python bench/vectors.py [--quick]` or `python -m bench vectors [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import DEFAULT_OUT, free_port, machine, percentile, save, save_figure, table  # noqa: E402

# The project root's ../shared; a git worktree one level deeper (worktrees/<name>) finds it one up.
REAL = next(
    (p / "shared" / "data" / "minilm-pypi" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared").exists()),
    ROOT.parent / "shared" / "data" / "minilm-pypi",
)
K = 10
M, EF_CONSTRUCTION = 16, 200
EFS = [16, 32, 64, 128, 256]
DEFAULT_EF = 64


# data -------------------------------------------------------------------------------------------
def generated(n: int, nq: int, dim: int = 384, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((100, dim)).astype(np.float32)

    def sample(count: int) -> np.ndarray:
        x = centers[rng.integers(0, len(centers), count)] + 0.6 * rng.standard_normal((count, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return sample(n), sample(nq)


def exact_gt(base: np.ndarray, queries: np.ndarray, k: int = K, mask: np.ndarray | None = None) -> np.ndarray:
    ids = np.arange(len(base)) if mask is None else np.flatnonzero(mask)
    sub = base[ids]
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 64):
        sims = queries[start : start + 64] @ sub.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.take_along_axis(sims, top, 1).argsort(axis=1)[:, ::-1]
        out[start : start + 64] = ids[np.take_along_axis(top, order, 1)]
    return out


def load_datasets(quick: bool) -> list[dict[str, Any]]:
    n_gen = 10_000 if quick else 100_000
    nq = 200 if quick else 500
    sets = []
    if (REAL / "base.f32.npy").exists():
        base = np.load(REAL / "base.f32.npy")
        queries = np.load(REAL / "queries.f32.npy")[:nq]
        if quick:
            base = base[:10_000]
            gt = exact_gt(base, queries)
        else:
            gt = np.load(REAL / "gt10.i32.npy")[:nq].astype(np.int64)
        sets.append({"name": "minilm-pypi (real)", "base": base, "queries": queries, "gt": gt})
    else:
        print(f"   {REAL} is absent: the real dataset is replaced by generated data", flush=True)
        base, queries = generated(50_000 if not quick else 10_000, nq, seed=1)
        sets.append(
            {"name": "generated (real data absent)", "base": base, "queries": queries, "gt": exact_gt(base, queries)}
        )
    base, queries = generated(n_gen, min(nq, 200), seed=2)
    sets.append({"name": "generated", "base": base, "queries": queries, "gt": exact_gt(base, queries)})
    return sets


def recall(found: list[list[int]], gt: np.ndarray) -> float:
    hits = sum(len(set(f[:K]) & set(g[:K].tolist())) for f, g in zip(found, gt, strict=True))
    return hits / (K * len(found))


def timed(queries: np.ndarray, fn: Callable[[np.ndarray], list[int]]) -> tuple[list[list[int]], list[float]]:
    found, lat = [], []
    for q in queries:
        t = time.perf_counter()
        found.append(fn(q))
        lat.append(time.perf_counter() - t)
    return found, lat


def row(
    method: str, ds: dict[str, Any], n: int, found: list[list[int]], gt: np.ndarray, lat: list[float], **extra: Any
) -> dict[str, Any]:
    return {
        "method": method,
        "dataset": ds["name"],
        "n": n,
        "recall": round(recall(found, gt), 4),
        "qps": round(len(lat) / sum(lat), 1),
        "p50_ms": round(percentile(lat, 50) * 1000, 3),
        "p99_ms": round(percentile(lat, 99) * 1000, 3),
        "queries": len(lat),
        **extra,
    }


# methods ----------------------------------------------------------------------------------------
def bench_numpy(ds: dict[str, Any], nq: int) -> list[dict[str, Any]]:
    base = ds["base"]

    def one(q: np.ndarray) -> list[int]:
        sims = base @ q
        top = np.argpartition(-sims, K)[:K]
        return top[np.argsort(-sims[top])].tolist()

    found, lat = timed(ds["queries"][:nq], one)
    return [row("numpy exact", ds, len(base), found, ds["gt"][:nq], lat, build_s=0.0)]


def build_hnswlib(ds: dict[str, Any]) -> list[dict[str, Any]]:
    """Raw hnswlib index for the dataset; it is queried interleaved with edgenode (see _edgenode)."""
    import hnswlib

    base = ds["base"]
    t = time.perf_counter()
    index = hnswlib.Index(space="cosine", dim=base.shape[1])
    index.init_index(max_elements=len(base), M=M, ef_construction=EF_CONSTRUCTION)
    index.add_items(base, np.arange(len(base)), num_threads=os.cpu_count() or 1)
    ds["raw"] = (index, round(time.perf_counter() - t, 2))
    return []


def write_libsql(path: Path, base: np.ndarray) -> None:
    import libsql

    conn = libsql.connect(str(path))
    dim = base.shape[1]
    conn.execute(f"CREATE TABLE items(id INTEGER PRIMARY KEY, emb F32_BLOB({dim}), cat INTEGER, bucket INTEGER)")
    for start in range(0, len(base), 5000):
        conn.executemany(
            "INSERT INTO items(id, emb, cat, bucket) VALUES (?, ?, ?, ?)",
            [(i, base[i].tobytes(), i % 10, i % 1000) for i in range(start, min(start + 5000, len(base)))],
        )
        conn.commit()
    conn.close()


def _stage(ds: dict[str, Any], path: str, stage: str, lat: list[float]) -> dict[str, Any]:
    return {
        "dataset": ds["name"],
        "n": len(ds["base"]),
        "path": path,
        "stage": stage,
        "p50_ms": round(percentile(lat, 50) * 1000, 3),
        "mean_ms": round(float(np.mean(lat)) * 1000, 3),
    }


async def _edgenode(
    ds: dict[str, Any], data: Path, quick: bool = False, profile: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    import hnswlib

    from edgenode.pragmas import select_profile
    from edgenode.standalone import LocalDatabase
    from edgenode.vectors import VectorManager
    from edgenode.vectors.models import CollectionSpec, Filter, SearchRequest

    base, queries, gt = ds["base"], ds["queries"], ds["gt"]
    db = LocalDatabase(data, select_profile("auto", data_dir=data), migrate=False)
    await db.start()
    manager = VectorManager(db, data)
    await manager.start()
    spec = CollectionSpec(table="items", column="emb", dim=base.shape[1], filter_columns=["cat", "bucket"])
    await manager.put_collection("items", spec)
    await manager.wait_ready("items", wait_seconds=3600)
    c = manager.get("items")
    build = c.info().build_seconds
    rows = []
    raw, raw_build = ds.get("raw", (None, None))
    same = hnswlib.Index(space="cosine", dim=base.shape[1])
    same.load_index(str(c.files(c.gen)[1]))
    block = 25
    passes = 1 if quick else 5  # a single pass moved the ratios by up to 4 points between runs

    def raw_one(q: np.ndarray, ef: int) -> list[int]:
        assert raw is not None
        return raw.knn_query(q[None, :], k=K, num_threads=1)[0][0].tolist()

    def same_one(q: np.ndarray, ef: int) -> list[int]:
        labels = same.knn_query(q[None, :], k=K, num_threads=1)[0][0]
        return labels.astype(np.uint64).view(np.int64).tolist()

    async def arrays_one(q: np.ndarray, ef: int) -> list[int]:
        res = (await manager.query("items", q, K, ef=ef, mode="ann"))[0]
        return [h.rowid for h in res.results]

    async def lists_one(q: np.ndarray, ef: int) -> list[int]:
        res = await manager.search("items", SearchRequest(vector=q.tolist(), k=K, ef=ef, mode="ann"))
        return [h.rowid for h in res.results]

    methods: dict[str, Callable[..., Any]] = {}
    if raw is not None:
        methods["hnswlib raw"] = raw_one
    methods["hnswlib raw, same graph"] = same_one
    methods["edgenode in-process"] = arrays_one
    methods["edgenode in-process, JSON lists"] = lists_one
    for ef in EFS:
        if raw is not None:
            raw.set_ef(ef)
        same.set_ef(ef)
        found: dict[str, list[list[int]]] = {name: [] for name in methods}
        lat: dict[str, list[float]] = {name: [] for name in methods}
        names = list(methods)
        blocks = list(range(0, len(queries), block))
        for b, start in enumerate(blocks * passes):  # latencies of every pass, recall of the first
            for name in names[b % len(names) :] + names[: b % len(names)]:
                fn = methods[name]
                for q in queries[start : start + block]:
                    t = time.perf_counter()
                    got = fn(q, ef)
                    if asyncio.iscoroutine(got):
                        got = await got
                    lat[name].append(time.perf_counter() - t)
                    if b < len(blocks):
                        found[name].append(got)
        for name in names:
            built = raw_build if name == "hnswlib raw" else build
            rows.append(row(name, ds, len(base), found[name], gt, lat[name], ef=ef, build_s=built))
            if name.startswith("edgenode"):
                same_lat = lat["hnswlib raw, same graph"]
                rows[-1]["vs_raw"] = round(sum(same_lat) / sum(lat[name]), 3)  # queries/s ratio (same query count)
                # The same ratio on median latencies: a few stalls from elsewhere on a shared machine
                # move the mean (and so queries/s) of one method by several percent in either direction.
                rows[-1]["vs_raw_p50"] = round(percentile(same_lat, 50) / percentile(lat[name], 50), 3)
    # 1% selectivity: cat = 3 (10%) and bucket < 100 (10%), correlated so that exactly 1% pass
    ids = np.arange(len(base))
    mask = (ids % 10 == 3) & (ids % 1000 < 100)
    fgt = exact_gt(base, queries, mask=mask)
    flt = Filter(sql="cat = ? AND bucket < ?", params=[3, 100])
    found, lat, modes = [], [], set()
    for q in queries:
        t = time.perf_counter()
        res = await manager.search("items", SearchRequest(vector=q.tolist(), k=K, filter=flt))
        lat.append(time.perf_counter() - t)
        found.append([h.rowid for h in res.results])
        modes.add(res.mode)
    rows.append(
        row(
            "edgenode filtered 1%",
            ds,
            len(base),
            found,
            fgt,
            lat,
            build_s=build,
            note="mode " + "/".join(sorted(modes)),
        )
    )
    if profile is not None:
        # The filtered search stage by stage, as the planner runs it (edgenode.vectors.planner._ann).
        assert c.sidecar is not None
        stages: dict[str, list[float]] = {"compile": [], "match": [], "exact": []}
        for q in queries:
            t0 = time.perf_counter()
            compiled = c.sidecar.compile_filter(flt.sql, flt.params)
            t1 = time.perf_counter()
            matches = c.sidecar.matching_rowids(compiled, 4097)
            t2 = time.perf_counter()
            c.sidecar.search_rowids(q, K, matches)
            t3 = time.perf_counter()
            for stage, took in zip(stages, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                stages[stage].append(took)
        path = "filtered 1%, in-process (VectorManager.search)"
        profile += [
            _stage(ds, path, "whole search", lat),
            _stage(ds, path, "filter check (Sidecar.compile_filter, cached after the first)", stages["compile"]),
            _stage(ds, path, f"rowids the filter accepts ({len(matches)}; Sidecar.matching_rowids)", stages["match"]),
            _stage(ds, path, "exact top 10 over them (sqlite-vec; Sidecar.search_rowids)", stages["exact"]),
        ]
    await manager.stop()
    await db.stop()
    return rows


def _load_process(url: str, queries_path: str, clients: int, seconds: float, queue: Any) -> None:
    import msgspec

    from bench.loadgen import run_load

    queries = np.load(queries_path)
    bodies = [msgspec.json.encode({"vector": q.tolist(), "k": K}) for q in queries]

    def body(worker: int, n: int) -> bytes:
        return bodies[(worker * 7919 + n) % len(bodies)]

    def ok(_: int, payload: bytes) -> bool:
        return len(msgspec.json.decode(payload)["results"]) == K

    queue.put(asyncio.run(run_load(url, "/api/v1/collections/items/search", body, clients, seconds, check=ok)))


def bench_http(
    ds: dict[str, Any], data: Path, seconds: float, profile: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (data / "node.log").open("ab")
    started = time.perf_counter()
    args = ["serve", "--data-dir", str(data), "--no-migrate", "--log-level", "warning", "--port", str(port)]
    proc = subprocess.Popen([sys.executable, "-m", "edgenode", *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    rows = []
    try:
        q0 = {"vector": ds["queries"][0].tolist(), "k": K}
        first = None
        while time.perf_counter() - started < 120:
            try:
                r = httpx.post(url + "/api/v1/collections/items/search", json=q0, timeout=2)
                if r.status_code == 200:
                    first = time.perf_counter() - started
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.01)
        if first is None:
            raise RuntimeError("the node did not answer within 120 s")
        info = httpx.get(url + "/api/v1/collections/items").json()
        with httpx.Client(base_url=url) as client:
            found, lat, server = [], [], []
            for q in ds["queries"]:
                t = time.perf_counter()
                body = client.post("/api/v1/collections/items/search", json={"vector": q.tolist(), "k": K}).json()
                lat.append(time.perf_counter() - t)
                found.append([h["rowid"] for h in body["results"]])
                server.append(body["elapsed_ms"] / 1000)
        rec = recall(found, ds["gt"])
        if profile is not None:
            path = "unfiltered, HTTP 1 client (httpx, in sequence)"
            profile += [
                _stage(ds, path, "HTTP round trip (client)", lat),
                _stage(ds, path, "in the node: search (elapsed_ms: checks, HNSW, result objects)", server),
                _stage(
                    ds,
                    path,
                    "HTTP, routing, body decode, response encode (round trip - elapsed_ms)",
                    [a - b for a, b in zip(lat, server, strict=True)],
                ),
            ]
        qpath = data / "queries.npy"
        np.save(qpath, ds["queries"])
        for clients in (1, 4):
            ctx = multiprocessing.get_context("spawn")
            queue = ctx.Queue()
            p = ctx.Process(target=_load_process, args=(url, str(qpath), clients, seconds, queue))
            p.start()
            res = queue.get(timeout=seconds + 120)
            p.join(30)
            rows.append(
                {
                    "method": f"edgenode HTTP ({clients} client{'s' if clients > 1 else ''})",
                    "dataset": ds["name"],
                    "n": len(ds["base"]),
                    "ef": DEFAULT_EF,
                    "recall": round(rec, 4),
                    "qps": round(res["qps"], 1),
                    "p50_ms": round(res["p50_ms"], 3),
                    "p99_ms": round(res["p99_ms"], 3),
                    "queries": res["requests"],
                    "errors": res["errors"],
                    "start_to_first_answer_s": round(first, 3),
                    "loaded_from_disk": info["loaded_from_disk"],
                }
            )
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return rows


def bench_sqlite_vec(ds: dict[str, Any], nq: int) -> list[dict[str, Any]]:
    import apsw
    import sqlite_vec

    base = ds["base"]
    conn = apsw.Connection(":memory:")
    conn.enable_load_extension(True)
    conn.load_extension(sqlite_vec.loadable_path())
    t = time.perf_counter()
    conn.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{base.shape[1]}] distance_metric=cosine)")
    with conn:
        conn.executemany(
            "INSERT INTO v(rowid, embedding) VALUES (?, ?)", [(i, base[i].tobytes()) for i in range(len(base))]
        )
    build = time.perf_counter() - t
    sql = "SELECT rowid FROM v WHERE embedding MATCH ? AND k = ? ORDER BY distance"
    found, lat = timed(ds["queries"][:nq], lambda q: [r[0] for r in conn.execute(sql, (q.tobytes(), K))])
    return [row("sqlite-vec vec0 (brute force)", ds, len(base), found, ds["gt"][:nq], lat, build_s=round(build, 2))]


def bench_libsql_exact(ds: dict[str, Any], path: Path, nq: int) -> list[dict[str, Any]]:
    import libsql

    conn = libsql.connect(str(path))
    sql = "SELECT id FROM items ORDER BY vector_distance_cos(emb, ?) LIMIT 10"
    found, lat = timed(ds["queries"][:nq], lambda q: [r[0] for r in conn.execute(sql, (q.tobytes(),)).fetchall()])
    conn.close()
    return [row("libSQL exact (vector_distance_cos)", ds, len(ds["base"]), found, ds["gt"][:nq], lat, build_s=0.0)]


def bench_diskann(ds: dict[str, Any], tmp: Path, n: int, nq: int) -> list[dict[str, Any]]:
    import libsql

    base = ds["base"][:n]
    queries = ds["queries"][:nq]
    gt = exact_gt(base, queries)
    path = tmp / f"diskann-{abs(hash(ds['name']))}.db"
    write_libsql(path, base)
    conn = libsql.connect(str(path))
    t = time.perf_counter()
    conn.execute(
        "CREATE INDEX items_idx ON items(libsql_vector_idx(emb, 'metric=cosine', 'compress_neighbors=float1bit'))"
    )
    conn.commit()
    build = time.perf_counter() - t
    sql = "SELECT id FROM vector_top_k('items_idx', ?, 10)"
    found, lat = timed(queries, lambda q: [r[0] for r in conn.execute(sql, (q.tobytes(),)).fetchall()])
    conn.close()
    return [
        row("libSQL DiskANN (float1bit)", ds, n, found, gt, lat, build_s=round(build, 2), note=f"subset of {n} rows")
    ]


# driver -----------------------------------------------------------------------------------------
def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 5), squeeze=False)
    for ax, name in zip(axes[0], datasets, strict=True):
        methods = list(dict.fromkeys(r["method"] for r in rows if r["dataset"] == name))
        for method in methods:
            pts = sorted((r["recall"], r["qps"]) for r in rows if r["dataset"] == name and r["method"] == method)
            n = next(r["n"] for r in rows if r["dataset"] == name and r["method"] == method)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{method} (n={n:,})")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries/s (one client)")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def run(quick: bool = False, out: Path = DEFAULT_OUT, http: bool = True, diskann: bool = True) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    profile: list[dict[str, Any]] = []
    slow_nq = 20 if quick else 50
    diskann_n = 2_000 if quick else 20_000
    seconds = 3.0 if quick else 10.0

    def attempt(label: str, ds: dict[str, Any], fn: Callable[..., list[dict[str, Any]]], *args: Any) -> None:
        t = time.perf_counter()
        try:
            got = fn(*args)
        except Exception as exc:  # one failing peer must not lose the others' figures
            print(f"   {label}: FAILED {type(exc).__name__}: {exc}", flush=True)
            rows.append({"method": label, "dataset": ds["name"], "error": f"{type(exc).__name__}: {exc}"})
            return
        rows.extend(got)
        print(f"   {label}: {time.perf_counter() - t:.1f}s", flush=True)

    from edgenode.standalone import DB_FILE

    for ds in load_datasets(quick):
        print(f"-- {ds['name']}: {len(ds['base']):,} x {ds['base'].shape[1]}, {len(ds['queries'])} queries", flush=True)
        with tempfile.TemporaryDirectory(prefix="edgenode-vbench-") as tmpdir:
            tmp = Path(tmpdir)
            data = tmp / "data"
            data.mkdir()
            write_libsql(data / DB_FILE, ds["base"])
            attempt("numpy exact", ds, bench_numpy, ds, 100)
            attempt("hnswlib raw (build)", ds, build_hnswlib, ds)
            attempt("edgenode", ds, lambda ds, data: asyncio.run(_edgenode(ds, data, quick, profile)), ds, data)
            if http:
                attempt("edgenode HTTP", ds, bench_http, ds, data, seconds, profile)
            attempt("sqlite-vec", ds, bench_sqlite_vec, ds, slow_nq)
            attempt("libSQL exact", ds, bench_libsql_exact, ds, data / DB_FILE, slow_nq)
            if diskann:
                attempt("libSQL DiskANN", ds, bench_diskann, ds, tmp, diskann_n, slow_nq)
    good = [r for r in rows if "error" not in r]
    plot(good, out / "vectors.png")
    cols = ["dataset", "method", "n", "ef", "recall", "qps", "p50_ms", "p99_ms", "build_s"]
    print(table(good, cols))
    print(table(profile, ["dataset", "path", "stage", "p50_ms", "mean_ms"]))
    return {
        "machine": machine(),
        "command": "python -m bench vectors" + (" --quick" if quick else ""),
        "parameters": {
            "k": K,
            "m": M,
            "ef_construction": EF_CONSTRUCTION,
            "default_ef": DEFAULT_EF,
            "http": http,
            "diskann": diskann,
        },
        "k": K,
        "hnsw": {"m": M, "ef_construction": EF_CONSTRUCTION, "default_ef": DEFAULT_EF},
        "quick": quick,
        "summary": summary(good),
        "rows": rows,
        # Where a search's time goes, stage by stage (filtered in-process; unfiltered over HTTP).
        "profile": profile,
        "plot": str(out / "vectors.png"),
        # Any method that failed leaves a comparison unmade: the suite fails the run on these.
        "peers_missing": [f"{r['method']} ({r['dataset']}): {r['error']}" for r in rows if "error" in r],
    }


def summary(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """README's figures: every method at the default ef, and edgenode's share of raw hnswlib's
    queries/s across the ef sweep (the rest stays in the JSON and the plot)."""
    out = []
    for r in rows:
        if r.get("ef") not in (None, DEFAULT_EF):
            continue
        figure = f"{r['dataset']}, n={r['n']:,}: {r['method']}" + (f", ef {r['ef']}" if r.get("ef") else "")
        value = f"recall@{K} {r['recall']:.3f}, {r['qps']:,.0f} q/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
        if r.get("vs_raw"):
            value += f", {r['vs_raw']:.0%} of raw's q/s ({r.get('vs_raw_p50', 0):.0%} by p50), same graph"
        if r.get("build_s"):
            value += f", build {r['build_s']:.0f} s"
        out.append({"figure": figure, "value": value})
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows if r["dataset"] == dataset and r.get("vs_raw")):
            sweep = [r for r in rows if r["dataset"] == dataset and r["method"] == method and r.get("vs_raw")]
            out.append(
                {
                    "figure": f"{dataset}: {method} / raw hnswlib (same graph), "
                    + "/".join(f"ef {r['ef']}" for r in sweep),
                    "value": " / ".join(f"{r['vs_raw']:.0%} ({r.get('vs_raw_p50', 0):.0%})" for r in sweep)
                    + " — q/s ratio (p50 ratio)",
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k rows per dataset; a couple of minutes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-http", dest="http", action="store_false", help="skip the HTTP node process")
    parser.add_argument("--no-diskann", dest="diskann", action="store_false", help="skip libSQL DiskANN")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, out=args.out, http=args.http, diskann=args.diskann)
    print(f"wrote {save('vectors', result, args.out)} and {args.out / 'vectors.png'}")
    return 1 if result["peers_missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
