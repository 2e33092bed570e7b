"""Full-text and hybrid search: edgenode's FTS5 text collections over HTTP, next to tantivy in-process.

Dataset: ../shared/data/minilm-pypi (package summaries: 50k texts with all-MiniLM-L6-v2 vectors,
500 held-out query texts with their vectors and exact cosine top-10); generated text and vectors
when the directory is absent (and the result says so). `--quick` takes 3,000 documents and 30
queries, a few seconds in all.

Queries are the held-out summaries as free text in the `any` syntax (rows with any of the words,
BM25-ranked; the words quoted one by one), k = 10; tantivy gets the same words, each quoted, OR'ed.

Figures:
- build: PUT of the text collection to ready on a node whose table holds the documents (docs/s);
  in-process, the same FTS5 index (edgenode.text.index.TextIndex) and tantivy's, built directly.
- update: UPDATE batches of 100 rows through /api/v1/execute; a write returns after the node has
  applied it to its indexes (text and vector), so rows/s is the rate at which they stay current.
- text search via HTTP: one client in sequence (p50/p99), then 1 and 4 concurrent keep-alive
  clients from a separate process (bench/loadgen.py) for queries/s.
- in-process: edgenode's search as the API runs it (free-text ranking from the postings in
  memory, edgenode.text.scoring, then FTS5 snippets of the hits; the profile also times FTS5's own
  ranking query on the same queries) and tantivy's (ids, then ids + snippets) on the same
  queries; `agreement@10` is the share of tantivy's top 10 that edgenode's top 10 holds (both
  BM25, so high but not 1: tokenizers and BM25 details differ).
- hybrid vs vector-only vs text-only on the held-out queries: overlap of each top 10 with the
  exact vector neighbours, and latency via HTTP (one client).

Run: `python -m bench search [--quick]`; `python -m bench.search --text-only` leaves out the vector
collection and the hybrid figures (the HNSW build is most of a full run's time).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import DEFAULT_OUT, NodeProcess, machine, percentile, save, save_figure, table  # noqa: E402

# The project root's ../shared; a git worktree one level deeper (worktrees/<name>) finds it one up.
REAL = next(
    (p / "shared" / "data" / "minilm-pypi" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared").exists()),
    ROOT.parent / "shared" / "data" / "minilm-pypi",
)
K = 10
TEXT_PATH = "/api/v1/text/docs/search"


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def query_sets(ds: dict[str, Any]) -> dict[str, list[str]]:
    """`summaries`: each held-out summary whole (long queries, many common words); `keywords`: its
    first three words that are not stopwords, as typed into a search box."""
    from edgenode.text.query import STOPWORDS

    def keywords(text: str) -> str:
        words = [w for w in _words(text) if w.lower() not in STOPWORDS]
        return " ".join(words[:3]) or text

    return {"summaries": list(ds["qtexts"]), "keywords": [keywords(q) for q in ds["qtexts"]]}


# data -------------------------------------------------------------------------------------------
def load(quick: bool) -> dict[str, Any]:
    n, nq = (3_000, 30) if quick else (50_000, 500)
    if REAL.exists():
        texts = (REAL / "base.txt").read_text().splitlines()[:n]
        base = np.load(REAL / "base.f32.npy")[:n]
        qtexts = (REAL / "queries.txt").read_text().splitlines()[:nq]
        queries = np.load(REAL / "queries.f32.npy")[:nq]
        if n == 50_000:
            gt = np.load(REAL / "gt10.i32.npy")[:nq].astype(np.int64)
        else:  # exact cosine top 10 within the subset (the vectors are normalised)
            gt = np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :K]
        return {"name": "minilm-pypi", "texts": texts, "base": base, "qtexts": qtexts, "queries": queries, "gt": gt}
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(5000)]
    texts = [" ".join(rng.choice(vocab, 12)) for _ in range(n)]
    qtexts = [" ".join(rng.choice(vocab, 5)) for _ in range(nq)]
    base = rng.standard_normal((n, 384)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = rng.standard_normal((nq, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    gt = np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :K]
    return {
        "name": "generated (no ../shared)",
        "texts": texts,
        "base": base,
        "qtexts": qtexts,
        "queries": queries,
        "gt": gt,
    }


def alignment(ds: dict[str, Any]) -> dict[str, float]:
    """Do the texts belong to the vectors? Word overlap of each query's text with the texts of its
    exact vector neighbours, against random rows: near 1x means they do not (then overlap of text
    or hybrid hits with vector neighbours says nothing about either)."""
    from edgenode.text.query import STOPWORDS

    def words(text: str) -> set[str]:
        return {w.lower() for w in _words(text)} - STOPWORDS

    rng = np.random.default_rng(0)
    texts = ds["texts"]
    near, rand = [], []
    for q, row in zip(ds["qtexts"], ds["gt"], strict=True):
        qw = words(q)
        if not qw:
            continue
        near += [len(qw & words(texts[j])) / len(qw) for j in row.tolist()]
        rand += [len(qw & words(texts[j])) / len(qw) for j in rng.integers(0, len(texts), len(row)).tolist()]
    near_mean, rand_mean = float(np.mean(near)), float(np.mean(rand))
    return {
        "word_overlap_with_vector_neighbours": round(near_mean, 4),
        "word_overlap_with_random_rows": round(rand_mean, 4),
        "ratio": round(near_mean / rand_mean, 2) if rand_mean else float("nan"),
    }


def write_db(path: Path, texts: list[str], base: np.ndarray) -> None:
    import libsql

    conn = libsql.connect(str(path))
    conn.execute(f"CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT, emb F32_BLOB({base.shape[1]}))")
    for start in range(0, len(texts), 5000):
        end = min(start + 5000, len(texts))
        conn.executemany(
            "INSERT INTO docs(id, body, emb) VALUES (?, ?, ?)",
            [(i, texts[i], base[i].tobytes()) for i in range(start, end)],
        )
        conn.commit()
    conn.close()


# over HTTP --------------------------------------------------------------------------------------
def _wait(client: Any, path: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.perf_counter() + timeout
    while True:
        info = client.get(path).json()
        if info.get("state") == "ready" and info.get("progress", 1) >= 1:
            return info
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{path} not ready: {info}")
        time.sleep(0.02)


def _load_process(url: str, bodies: list[bytes], clients: int, seconds: float, queue: Any) -> None:
    from bench.loadgen import run_load

    def body(worker: int, n: int) -> bytes:
        return bodies[(worker * 7919 + n) % len(bodies)]

    queue.put(asyncio.run(run_load(url, TEXT_PATH, body, clients, seconds)))


def _sequential(
    client: Any, path: str, bodies: list[dict[str, Any]], server: list[float] | None = None
) -> tuple[list[list[int]], list[float]]:
    """Each body in turn: hits and client latencies; `server` collects the node's own `elapsed_ms`
    (route handler to result, before encoding), in seconds."""
    found, lat = [], []
    for body in bodies:
        t = time.perf_counter()
        r = client.post(path, json=body)
        lat.append(time.perf_counter() - t)
        if r.status_code != 200:
            raise RuntimeError(f"{path}: {r.status_code} {r.text[:200]}")
        answer = r.json()
        found.append([h["rowid"] for h in answer["results"]])
        if server is not None:
            server.append(answer["elapsed_ms"] / 1000)
    return found, lat


def _overlap(found: list[list[int]], gt: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(g.tolist())) / K for f, g in zip(found, gt, strict=True)]))


def bench_http(
    ds: dict[str, Any], data: Path, seconds: float, quick: bool, hybrid: bool = True
) -> dict[str, list[dict[str, Any]]]:
    import httpx
    import msgspec

    n = len(ds["texts"])
    node = NodeProcess(["serve", "--data-dir", str(data), "--no-migrate", "--log-level", "warning"], data / "node.log")
    out: dict[str, list[dict[str, Any]]] = {"http": [], "build": [], "hybrid": [], "profile": []}
    try:
        node.wait_ready()
        with httpx.Client(base_url=node.url, timeout=60) as client:
            t = time.perf_counter()
            r = client.put("/api/v1/text/docs", json={"table": "docs", "columns": ["body"]})
            assert r.status_code == 202, r.text
            info = _wait(client, "/api/v1/text/docs")
            build = time.perf_counter() - t
            out["build"].append(
                {
                    "method": "edgenode text collection (PUT to ready, HTTP)",
                    "n": n,
                    "seconds": round(build, 3),
                    "docs_per_s": round(n / build),
                    "size": info["size"],
                }
            )
            found_sets: dict[str, list[list[int]]] = {}
            lat_sets: dict[str, list[float]] = {}
            for label, texts in query_sets(ds).items():
                bodies = [{"q": q, "k": K, "syntax": "any"} for q in texts]
                server: list[float] = []
                found_sets[label], lat = _sequential(client, TEXT_PATH, bodies, server)
                lat_sets[label] = lat
                out["profile"] += [
                    _stage(label, "HTTP round trip (client)", lat),
                    _stage(label, "in the node: search (elapsed_ms: checks, thread hop, FTS5, snippets)", server),
                    _stage(
                        label,
                        "HTTP, routing, body decode, response encode (round trip - elapsed_ms)",
                        [a - b for a, b in zip(lat, server, strict=True)],
                    ),
                ]
                out["http"].append(
                    {
                        "method": f"edgenode text search ({label}), HTTP 1 client in sequence",
                        "n": n,
                        "queries": len(lat),
                        "qps": round(len(lat) / sum(lat), 1),
                        "p50_ms": round(percentile(lat, 50) * 1000, 3),
                        "p99_ms": round(percentile(lat, 99) * 1000, 3),
                    }
                )
                encoded = [msgspec.json.encode(b) for b in bodies]
                for clients in (1, 4):
                    ctx = multiprocessing.get_context("spawn")
                    queue = ctx.Queue()
                    p = ctx.Process(target=_load_process, args=(node.url, encoded, clients, seconds, queue))
                    p.start()
                    res = queue.get(timeout=seconds + 120)
                    p.join(30)
                    plural = "s" if clients > 1 else ""
                    out["http"].append(
                        {
                            "method": f"edgenode text search ({label}), HTTP {clients} keep-alive client{plural}",
                            "n": n,
                            "queries": res["requests"],
                            "errors": res["errors"],
                            "qps": round(res["qps"], 1),
                            "p50_ms": round(res["p50_ms"], 3),
                            "p99_ms": round(res["p99_ms"], 3),
                        }
                    )
            text_bodies = [{"q": q, "k": K, "syntax": "any"} for q in ds["qtexts"]]
            found_text, lat = found_sets["summaries"], lat_sets["summaries"]

            if hybrid:
                t = time.perf_counter()
                vec = {"table": "docs", "column": "emb", "dim": ds["base"].shape[1], "metric": "cosine"}
                assert client.put("/api/v1/collections/emb", json=vec).status_code == 202
                _wait(client, "/api/v1/collections/emb")
                vbuild = time.perf_counter() - t
                out["build"].append(
                    {
                        "method": "edgenode vector collection (PUT to ready, HTTP)",
                        "n": n,
                        "seconds": round(vbuild, 3),
                        "docs_per_s": round(n / vbuild),
                    }
                )
                vec_bodies = [{"vector": q.tolist(), "k": K} for q in ds["queries"]]
                found_vec, vlat = _sequential(client, "/api/v1/collections/emb/search", vec_bodies)
                hybrid_bodies = [
                    {**b, "vector": v["vector"], "collection": "emb"}
                    for b, v in zip(text_bodies, vec_bodies, strict=True)
                ]
                found_hyb, hlat = _sequential(client, TEXT_PATH, hybrid_bodies)
                for label, found, lats in (
                    ("vector only (HNSW, ef 64)", found_vec, vlat),
                    ("text only (BM25, any word)", found_text, lat),
                    ("hybrid (RRF, weight 0.5, 100 candidates per arm)", found_hyb, hlat),
                ):
                    out["hybrid"].append(
                        {
                            "method": label,
                            "n": n,
                            "queries": len(lats),
                            "overlap_with_exact_vector_top10": round(_overlap(found, ds["gt"]), 4),
                            "p50_ms": round(percentile(lats, 50) * 1000, 3),
                            "p99_ms": round(percentile(lats, 99) * 1000, 3),
                        }
                    )

            # updates: batches of 100 rows; each write returns with the indexes current
            batches = 5 if quick else 20
            rng = np.random.default_rng(1)
            t = time.perf_counter()
            for b in range(batches):
                ids = rng.choice(n, 100, replace=False).tolist()
                marks = ",".join("?" * len(ids))
                stmt = {"sql": f"UPDATE docs SET body = body || ' revised{b}' WHERE id IN ({marks})", "params": ids}
                r = client.post("/api/v1/execute", json={"statements": [stmt]})
                assert r.status_code == 200, r.text
            upd = time.perf_counter() - t
            check = client.post(TEXT_PATH, json={"q": f"revised{batches - 1}", "k": 1000}).json()["results"]
            assert len(check) == 100, len(check)
            out["build"].append(
                {
                    "method": "edgenode update via HTTP (batches of 100, index current on return)",
                    "n": batches * 100,
                    "seconds": round(upd, 3),
                    "docs_per_s": round(batches * 100 / upd),
                }
            )
            out["found_text"] = found_text  # type: ignore[assignment]
    finally:
        node.stop()
    return out


# in-process -------------------------------------------------------------------------------------
def bench_inprocess(
    ds: dict[str, Any], tmp: Path, nq_repeat: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[list[int]], list[list[int]]]:
    import msgspec

    from edgenode.text.index import TextIndex
    from edgenode.text.models import Hit, SearchResult, TextSpec
    from edgenode.text.query import check, free_words

    texts, n = ds["texts"], len(ds["texts"])
    builds, rows = [], []
    spec = TextSpec(table="docs", columns=["body"])
    t = time.perf_counter()
    index = TextIndex(tmp / "inproc.sqlite", spec, "bench")  # type: ignore[arg-type]
    for start in range(0, n, 2000):
        index.apply_rows([(i, [texts[i]]) for i in range(start, min(start + 2000, n))], None)
    index.optimize()
    build = time.perf_counter() - t
    builds.append(
        {
            "method": "edgenode FTS5 index, in-process",
            "n": n,
            "seconds": round(build, 3),
            "docs_per_s": round(n / build),
        }
    )
    sets = query_sets(ds)
    ours: list[list[int]] = []
    profile: list[dict[str, Any]] = []
    encoder = msgspec.json.Encoder()
    for label, qtexts in sets.items():
        lat = []
        stages: dict[str, list[float]] = {"parse": [], "rank": [], "snippets": [], "encode": []}
        for _ in range(nq_repeat):
            found = []
            for q in qtexts:
                s = time.perf_counter()
                m = check(q, "any")
                words = free_words(q)
                s1 = time.perf_counter()
                ranked = index.rank(m, K, 0, [1.0], None, q, (words, "any"))
                s2 = time.perf_counter()
                snippets = index.snippets(m, [r for r, _ in ranked], 16, q, words)
                s3 = time.perf_counter()
                hits = [Hit(rowid, score, snippets.get(rowid)) for rowid, score in ranked]
                encoder.encode(SearchResult(results=hits, mode="text", elapsed_ms=0.0))
                s4 = time.perf_counter()
                lat.append(s3 - s1)
                for stage, took in zip(stages, (s1 - s, s2 - s1, s3 - s2, s4 - s3), strict=True):
                    stages[stage].append(took)
                found.append([r for r, _ in ranked])
        if label == "summaries":
            ours = found
        rows.append(_row(f"edgenode FTS5 search ({label}, with snippets), in-process", n, lat))
        profile += [
            _stage(label, "query check (edgenode.text.query)", stages["parse"]),
            _stage(label, "BM25 ranking, top 10 (TextIndex.rank: postings in memory)", stages["rank"]),
            _stage(label, "FTS5 snippets of the 10 hits (TextIndex.snippets: each row's words)", stages["snippets"]),
            _stage(label, "hits and JSON encoding (msgspec)", stages["encode"]),
        ]
        # FTS5's own ranking query (bm25() on every match; what TextIndex.rank falls back to).
        conn = index._reader()
        matches = [check(q, "any") for q in qtexts]
        took = []
        for q, m in zip(qtexts, matches, strict=True):
            s = time.perf_counter()
            index.rank_fts5(m, K, 0, [1.0], None, q)
            took.append(time.perf_counter() - s)
        profile.append(_stage(label, "FTS5 BM25 ranking query, top 10 (TextIndex.rank_fts5)", took))
        # Counting the same matches, without BM25, is FTS5's floor.
        counted, took = [], []
        for m in matches:
            s = time.perf_counter()
            counted.append(conn.execute("SELECT count(*) FROM fts WHERE fts MATCH ?", (m,)).fetchone()[0])
            took.append(time.perf_counter() - s)
        profile.append(_stage(label, "FTS5 matching alone, no BM25 (count(*) of the MATCH)", took))
        profile[-1]["matches_p50"] = int(np.median(counted))
        profile[-1]["matches_mean"] = round(float(np.mean(counted)))
    index.close()

    theirs: list[list[int]] = []
    try:
        import tantivy
    except ImportError:
        rows.append({"method": "tantivy", "n": n, "error": "tantivy is not installed (pip install -e '.[bench]')"})
        return builds, rows, profile, ours, theirs
    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("id", stored=True, indexed=True)
    builder.add_text_field("body", stored=True)
    schema = builder.build()
    t = time.perf_counter()
    (tmp / "tantivy").mkdir()
    tindex = tantivy.Index(schema, path=str(tmp / "tantivy"))  # on disk, like the FTS5 file
    writer = tindex.writer(heap_size=128_000_000, num_threads=1)
    for i, text in enumerate(texts):
        writer.add_document(tantivy.Document(id=i, body=text))
    writer.commit()
    writer.wait_merging_threads()
    tindex.reload()
    tbuild = time.perf_counter() - t
    builds.append(
        {
            "method": "tantivy index (1 writer thread), in-process",
            "n": n,
            "seconds": round(tbuild, 3),
            "docs_per_s": round(n / tbuild),
        }
    )
    searcher = tindex.searcher()
    for label, qtexts in sets.items():
        # The words the `any` syntax searches for (stopwords out), each quoted, OR'ed (tantivy's default).
        parsed = [tindex.parse_query(check(q, "any").replace(" OR ", " "), ["body"]) for q in qtexts]
        for with_snippets in (False, True):
            lat = []
            for _ in range(nq_repeat):
                found = []
                for query in parsed:
                    s = time.perf_counter()
                    hits = searcher.search(query, K).hits
                    ids = [searcher.doc(addr)["id"][0] for _, addr in hits]
                    if with_snippets:
                        gen = tantivy.SnippetGenerator.create(searcher, query, schema, "body")
                        for _, addr in hits:
                            gen.snippet_from_doc(searcher.doc(addr)).to_html()
                    lat.append(time.perf_counter() - s)
                    found.append(ids)
            if label == "summaries" and not with_snippets:
                theirs = found
            what = "with snippets" if with_snippets else "ids only"
            rows.append(_row(f"tantivy search ({label}, {what}), in-process", n, lat))
    return builds, rows, profile, ours, theirs


def _stage(queries: str, stage: str, lat: list[float]) -> dict[str, Any]:
    return {
        "queries": queries,
        "stage": stage,
        "p50_ms": round(percentile(lat, 50) * 1000, 3),
        "mean_ms": round(float(np.mean(lat)) * 1000, 3),
    }


def _row(method: str, n: int, lat: list[float]) -> dict[str, Any]:
    return {
        "method": method,
        "n": n,
        "queries": len(lat),
        "qps": round(len(lat) / sum(lat), 1),
        "p50_ms": round(percentile(lat, 50) * 1000, 3),
        "p99_ms": round(percentile(lat, 99) * 1000, 3),
    }


def plot(search_rows: list[dict[str, Any]], hybrid_rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    good = [r for r in search_rows if "qps" in r]
    ax1.barh([r["method"] for r in good], [r["qps"] for r in good])
    ax1.set_xscale("log")
    ax1.set_xlabel("queries/s")
    ax1.set_title("text search, k=10")
    ax2.barh([r["method"] for r in hybrid_rows], [r["overlap_with_exact_vector_top10"] for r in hybrid_rows])
    ax2.set_xlabel("overlap with the exact vector top 10")
    ax2.set_title("hybrid vs vector-only vs text-only")
    save_figure(fig, path)


def run(quick: bool = False, out: Path = DEFAULT_OUT, hybrid: bool = True) -> dict[str, Any]:
    from edgenode.standalone import DB_FILE

    ds = load(quick)
    seconds = 1.0 if quick else 10.0
    n = len(ds["texts"])
    print(f"-- {ds['name']}: {n:,} documents, {len(ds['qtexts'])} queries", flush=True)
    with tempfile.TemporaryDirectory(prefix="edgenode-sbench-") as tmpdir:
        tmp = Path(tmpdir)
        data = tmp / "data"
        data.mkdir()
        write_db(data / DB_FILE, ds["texts"], ds["base"])
        http = bench_http(ds, data, seconds, quick, hybrid)
        builds, inproc, profile, ours, theirs = bench_inprocess(ds, tmp, 1 if quick else 3)
    found_text = http.pop("found_text")
    agreement = (
        float(np.mean([len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(ours, theirs, strict=True) if b]))
        if theirs
        else None
    )
    aligned = alignment(ds)
    print(f"texts vs vectors: {aligned}")
    search_rows = http["http"] + inproc
    builds = http["build"] + builds
    plot(search_rows, http["hybrid"], out / "search.png")
    print(table(search_rows, ["method", "n", "qps", "p50_ms", "p99_ms"]))
    print(table(builds, ["method", "n", "seconds", "docs_per_s"]))
    print(table(http["hybrid"], ["method", "overlap_with_exact_vector_top10", "p50_ms", "p99_ms"]))
    profile = http["profile"] + profile
    print(table(profile, ["queries", "stage", "p50_ms", "mean_ms", "matches_p50"]))
    print(f"agreement@10 edgenode/tantivy: {agreement}")
    summary = [
        {
            "figure": f"{r['method']}, n={r['n']:,}",
            "value": f"{r['qps']:,.0f} q/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms",
        }
        for r in search_rows
        if "qps" in r
    ]
    summary += [
        {"figure": f"{r['method']}, n={r['n']:,}", "value": f"{r['docs_per_s']:,} docs/s ({r['seconds']:.2f} s)"}
        for r in builds
    ]
    summary += [
        {
            "figure": f"{r['method']}, n={r['n']:,}",
            "value": f"overlap@10 with exact vector neighbours {r['overlap_with_exact_vector_top10']:.3f}, "
            f"p50 {r['p50_ms']:.2f} ms",
        }
        for r in http["hybrid"]
    ]
    summary.append(
        {
            "figure": "word overlap of query texts with their vector neighbours' texts / with random rows",
            "value": f"{aligned['word_overlap_with_vector_neighbours']:.3f} / "
            f"{aligned['word_overlap_with_random_rows']:.3f} ({aligned['ratio']}x; near 1x: texts and vectors "
            "do not correspond)",
        }
    )
    if agreement is not None:
        summary.append(
            {"figure": "edgenode FTS5 top 10 holding tantivy's top 10 (same queries)", "value": f"{agreement:.3f}"}
        )
    return {
        "machine": machine(),
        "command": "python -m bench search" + (" --quick" if quick else "") + ("" if hybrid else " --text-only"),
        "parameters": {
            "dataset": ds["name"],
            "n": n,
            "queries": len(ds["qtexts"]),
            "k": K,
            "syntax": "any",
            "load_seconds": seconds,
        },
        "quick": quick,
        "summary": summary,
        "search": search_rows,
        "build": builds,
        "hybrid": http["hybrid"],
        # Where a text search's time goes: over HTTP (client vs the node's elapsed_ms) and stage by
        # stage in-process (one query at a time, same queries).
        "profile": profile,
        "agreement_at_10": agreement,
        "text_vector_alignment": aligned,
        "sample_text_hits": found_text[:3],
        "plot": str(out / "search.png"),
        # tantivy not measured leaves the side-by-side unmade: the suite fails the run on it.
        "peers_missing": [f"{r['method']}: {r['error']}" for r in search_rows if "error" in r],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 documents, 30 queries: a few seconds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--text-only",
        action="store_true",
        help="no vector collection and no hybrid figures (the HNSW build is most of a full run's time)",
    )
    args = parser.parse_args(argv)
    result = run(quick=args.quick, out=args.out, hybrid=not args.text_only)
    print(f"wrote {save('search', result, args.out)} and {args.out / 'search.png'}")
    return 1 if result["peers_missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
