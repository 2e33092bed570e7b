"""PRAGMA evidence: each setting of each profile, alone on top of SQLite's defaults and taken out of the
host's profile, and each whole profile, on the node's workloads, as ratios to SQLite's defaults.

Workloads (the statements the node runs, on the node's schema from sql/, directly on libSQL — the HTTP
and thread-hop costs measured by api_reads are the same for every setting and would only dilute the
ratios):
- point reads: a prompt by its TEXT primary key, random over the whole table;
- range scans: the dashboard query "a user's prompts by status, newest first, LIMIT 50";
- write batches: 100-row audit_log transactions, BEGIN IMMEDIATE ... COMMIT as the node's write path;
- single commits: the same with one row per transaction, where the per-commit sync cost shows;
- vector sidecar updates: `Sidecar.apply` (edgenode/vectors/exact.py, apsw + sqlite-vec) with 100
  upserts of 384-d vectors, as the change feed applies them.

The data lives in real files on the data disk (not tmpfs) and is larger than SQLite's default
2 MiB page cache, so cache_size and mmap_size have something to do. Every configuration runs each
workload in every trial, configurations shuffled per trial so that load from other processes hits
them alike; figures are medians over trials, and a ratio counts only beyond the noise (half the
relative interquartile range of the trials of either configuration compared).
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine, save_figure, table
from edgenode.pragmas import CANDIDATES, PROFILES, Setting, platform_key
from edgenode.tune import noise, open_libsql, ops_per_second

BASELINE = "sqlite-defaults"
WORKLOADS = ["point_reads", "range_scans", "write_batches", "single_commits", "sidecar_updates"]
UNITS = {
    "point_reads": "reads/s",
    "range_scans": "scans/s",
    "write_batches": "100-row commits/s",
    "single_commits": "1-row commits/s",
    "sidecar_updates": "100-vector applies/s",
}
CORRECTNESS = {"foreign_keys", "busy_timeout"}
MACOS_FLUSH = {"fullfsync", "checkpoint_fullfsync"}
DURABILITY = {
    "journal_mode": "none at synchronous=FULL; WAL files must stay on a local disk (no network file systems)",
    "synchronous": "WAL + NORMAL: never corrupts, but a power cut loses commits since the last WAL sync "
    "(checkpoint); FULL loses none. Rollback journal + NORMAL (the 'alone' row) may corrupt on power loss.",
    "cache_size": "none; memory per connection (the node opens 1 writer + N readers)",
    "mmap_size": "none for power loss; an I/O error surfaces as SIGBUS instead of an error code",
    "temp_store": "none; large sorts and temp tables take memory instead of disk",
    "wal_autocheckpoint": "with synchronous=NORMAL, more commits ride on one checkpoint (more to lose on a "
    "power cut); the WAL file grows larger between checkpoints",
    "busy_timeout": "none",
    "foreign_keys": "none (correctness)",
    "checkpoint_fullfsync": "raises durability on macOS (F_FULLFSYNC); no effect on Linux",
    "fullfsync": "raises durability on macOS (F_FULLFSYNC); no effect on Linux",
}


@dataclass(frozen=True)
class Config:
    label: str
    kind: str  # baseline | alone | profile | without
    settings: tuple[Setting, ...]
    setting: str | None = None  # for alone / without
    profile: str | None = None  # for profile / without


def configs(host: str) -> list[Config]:
    base = PROFILES[BASELINE].settings
    base_names = {s.name for s in base}
    out = [Config(BASELINE, "baseline", base)]
    seen: set[str] = set()
    for name, profile in PROFILES.items():
        if name == BASELINE:
            continue
        for s in profile.settings:
            if s.name not in base_names and s.name not in seen:
                seen.add(s.name)
                out.append(Config(f"+{s.name}", "alone", (*base, s), setting=s.name))
    # Measured but not adopted: the evidence for leaving them out stays reproducible.
    for s in CANDIDATES:
        if s.name not in base_names and s.name not in seen:
            seen.add(s.name)
            out.append(Config(f"+{s.name}", "alone", (*base, s), setting=s.name))
    for name, profile in PROFILES.items():
        if name != BASELINE:
            out.append(Config(name, "profile", profile.settings, profile=name))
    if host in PROFILES and host != BASELINE:
        for s in PROFILES[host].settings:
            if s.name not in base_names:
                rest = tuple(x for x in PROFILES[host].settings if x.name != s.name)
                out.append(Config(f"{host} -{s.name}", "without", rest, setting=s.name, profile=host))
    return out


# the data ----------------------------------------------------------------------------------------------
def build_database(path: Path, users: int, prompts: int) -> None:
    import libsql

    from edgenode.migrations import LibsqlTarget, run_migrations

    conn = libsql.connect(str(path), isolation_level=None)
    run_migrations(LibsqlTarget(conn))
    rng = random.Random(42)
    words = "the quick brown fox jumps over a lazy dog while prompts and templates evolve in versions".split()
    conn.execute("PRAGMA journal_mode = OFF")  # building only; measured configurations reset it
    conn.execute("BEGIN")
    for u in range(users):
        conn.execute("INSERT INTO users (id, email, username) VALUES (?, ?, ?)", (f"u{u:06d}", f"u{u}@ex.com", f"u{u}"))
    for p in range(prompts):
        content = " ".join(rng.choices(words, k=90))  # ~550 bytes, like a real prompt
        created = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00.000Z"
        conn.execute(
            "INSERT INTO prompts (id, user_id, title, content, status, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                f"p{p:08d}",
                f"u{rng.randrange(users):06d}",
                f"prompt {p}",
                content,
                rng.choice(("draft", "active", "archived")),
                created,
                created,
            ),
        )
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()


def build_sidecar(path: Path, vectors: int, dim: int) -> None:
    from edgenode.vectors.exact import Sidecar

    sidecar = Sidecar(path, _spec(dim), "bench")
    rng = np.random.default_rng(3)
    for start in range(0, vectors, 5000):
        n = min(5000, vectors - start)
        block = rng.standard_normal((n, dim)).astype("<f4")
        sidecar.apply([(start + i + 1, block[i].tobytes(), ["ab"[i % 2]]) for i in range(n)], [], start + n)
    sidecar.close()


def _spec(dim: int) -> Any:
    from edgenode.vectors.models import CollectionSpec

    return CollectionSpec(table="docs", column="emb", dim=dim, filter_columns=["tag"])


# the workloads -----------------------------------------------------------------------------------------
def db_workloads(conn: Any, users: int, prompts: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    point_sql = "SELECT id, user_id, title, content, status, updated_at FROM prompts WHERE id = ?"
    range_sql = (
        "SELECT id, title, status, created_at FROM prompts WHERE user_id = ? AND status = ? "
        "ORDER BY created_at DESC LIMIT 50"
    )
    insert_sql = "INSERT INTO audit_log (user_id, action, entity_type, entity_id, details) VALUES (?, ?, ?, ?, ?)"

    def point() -> int:
        conn.execute(point_sql, (f"p{rng.randrange(prompts):08d}",)).fetchall()
        return 1

    def scan() -> int:
        conn.execute(range_sql, (f"u{rng.randrange(users):06d}", rng.choice(("draft", "active")))).fetchall()
        return 1

    def insert() -> None:
        conn.execute(
            insert_sql,
            (f"u{rng.randrange(users):06d}", "update", "prompt", f"p{rng.randrange(prompts):08d}", '{"f":"title"}'),
        )

    def write() -> int:
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(100):
            insert()
        conn.execute("COMMIT")
        return 1

    def single() -> int:
        # One statement per request, the common REST write: here the per-commit sync cost shows.
        conn.execute("BEGIN IMMEDIATE")
        insert()
        conn.execute("COMMIT")
        return 1

    return {"point_reads": point, "range_scans": scan, "write_batches": write, "single_commits": single}


def open_sidecar(path: Path, dim: int, settings: tuple[Setting, ...]) -> Any:
    """The node's Sidecar, with its connection put back to SQLite's defaults and then `settings` applied.

    Sidecar opens its connections in WAL + synchronous=NORMAL itself (it takes no profile); resetting
    first makes this the same comparison as for the database.
    """
    from edgenode.vectors.exact import Sidecar

    sidecar = Sidecar(path, _spec(dim), "bench")
    execute = lambda sql: list(sidecar.writer.execute(sql))  # noqa: E731
    execute("PRAGMA journal_mode = DELETE")
    execute("PRAGMA synchronous = FULL")
    for s in settings:
        s.apply(execute)
    return sidecar


def sidecar_op(sidecar: Any, vectors: int, dim: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    position = [vectors]

    def apply() -> int:
        ids = rng.integers(1, vectors + 1, 100)
        block = rng.standard_normal((100, dim)).astype("<f4")
        position[0] += 100
        sidecar.apply([(int(r), block[i].tobytes(), ["ab"[i % 2]]) for i, r in enumerate(ids)], [], position[0])
        return 1

    return apply


def fsync_rate(directory: Path, seconds: float = 1.0) -> float:
    """fsyncs per second of a 4 KiB write on the data disk: what synchronous=FULL pays per commit."""
    path = directory / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        return ops_per_second(lambda: (os.write(fd, b"x" * 4096), os.fsync(fd)) and 1, seconds)
    finally:
        os.close(fd)
        path.unlink()


def filesystem(path: Path) -> str:
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines() if Path("/proc/mounts").exists() else []:
        parts = line.split()
        if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind


# analysis ----------------------------------------------------------------------------------------------
def compare(samples: dict[str, dict[str, list[float]]], a: str, b: str) -> dict[str, dict[str, float]]:
    """Per workload: median(a) / median(b), and the noise band of that ratio."""
    out = {}
    for w in WORKLOADS:
        if w in samples[a] and w in samples[b]:
            ratio = statistics.median(samples[a][w]) / statistics.median(samples[b][w])
            out[w] = {"ratio": ratio, "noise": max(noise(samples[a][w]), noise(samples[b][w]))}
    return out


def verdict(
    setting: Setting, alone: dict[str, dict[str, float]], inside: dict[str, dict[str, float]] | None
) -> tuple[str, str]:
    if setting.pragma in CORRECTNESS:
        return "keep", "a correctness setting, kept whatever the numbers say"
    if setting.pragma in MACOS_FLUSH:
        return "keep", "durability on macOS; a no-op on Linux, so not measurable on this host"
    basis, figures = ("in the host profile", inside) if inside else ("alone on SQLite defaults", alone)
    helps = [w for w, f in figures.items() if f["ratio"] > 1 + f["noise"]]
    hurts = [w for w, f in figures.items() if f["ratio"] < 1 - f["noise"]]
    also = ""
    if inside:
        helps_alone = [w for w, f in alone.items() if f["ratio"] > 1 + f["noise"]]
        if helps_alone and not helps:
            also = f"; alone on defaults it helps {', '.join(helps_alone)}"
    if helps and not hurts:
        return "keep", f"helps {', '.join(helps)} {basis}, hurts nothing beyond noise{also}"
    if helps and hurts:
        return "mixed", f"helps {', '.join(helps)} but hurts {', '.join(hurts)} {basis}{also}"
    if hurts:
        return "drop", f"hurts {', '.join(hurts)} {basis}, helps nothing beyond noise{also}"
    return "drop", f"no effect beyond noise on any workload {basis}{also}"


def plot(result: dict[str, Any], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [
        (
            "each setting alone, and each whole profile, vs SQLite defaults",
            [r for r in result["configs"] if r["kind"] in ("alone", "profile")],
            "vs_defaults",
        ),
        (
            f"{result['parameters']['host_profile']}: whole profile vs profile without the setting",
            [r for r in result["configs"] if r["kind"] == "without"],
            "vs_without",
        ),
    ]
    panels = [p for p in panels if p[1]]
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 5 * len(panels)), squeeze=False)
    for ax, (title, rows, key) in zip(axes[:, 0], panels, strict=True):
        width = 0.8 / len(WORKLOADS)
        for i, w in enumerate(WORKLOADS):
            values = [r[key].get(w, {}).get("ratio", float("nan")) for r in rows]
            errs = [r[key].get(w, {}).get("noise", 0.0) * r[key].get(w, {}).get("ratio", 0.0) for r in rows]
            xs = [j + (i - len(WORKLOADS) / 2 + 0.5) * width for j in range(len(rows))]
            ax.bar(xs, values, width, yerr=errs, label=w, capsize=2)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(rows)))
        labels = [r["label"] if key == "vs_defaults" else r["setting"] for r in rows]
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("throughput ratio (log)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"PRAGMA settings on {result['machine']['platform']} (median of {result['parameters']['trials']} trials)"
    )
    return save_figure(fig, out / "pragmas.png")


# the run -----------------------------------------------------------------------------------------------
def run(quick: bool = False, out: Path | None = None) -> dict[str, Any]:
    out = out or Path("bench/results")
    params = {
        "users": 200 if quick else 2_000,
        "prompts": 10_000 if quick else 400_000,
        "sidecar_vectors": 2_000 if quick else 50_000,
        "dim": 64 if quick else 384,
        "trials": 2 if quick else 9,
        "seconds_per_measurement": 0.06 if quick else 0.5,
        "warmup_seconds": 0.02 if quick else 0.25,
    }
    host = platform_key()
    params["host_profile"] = host if host in PROFILES else "linux-x86_64"
    all_configs = configs(params["host_profile"])
    base_dir = Path(os.environ.get("EDGENODE_BENCH_DIR", tempfile.gettempdir()))
    work = Path(tempfile.mkdtemp(prefix="edgenode-pragmas-", dir=base_dir))
    try:
        db, side = work / "bench.db", work / "sidecar.sqlite"
        start = time.monotonic()
        build_database(db, params["users"], params["prompts"])
        build_sidecar(side, params["sidecar_vectors"], params["dim"])
        params["database_mib"] = round(db.stat().st_size / 2**20, 1)
        params["sidecar_mib"] = round(side.stat().st_size / 2**20, 1)
        params["build_seconds"] = round(time.monotonic() - start, 1)
        params["filesystem"] = filesystem(work)
        params["fsync_per_s"] = round(fsync_rate(work, 0.3 if quick else 2.0))
        print(
            f"   data: {params['database_mib']} MiB database, {params['sidecar_mib']} MiB sidecar on "
            f"{params['filesystem']} ({params['fsync_per_s']} fsync/s); {len(all_configs)} configurations "
            f"x {len(WORKLOADS)} workloads x {params['trials']} trials",
            flush=True,
        )
        samples: dict[str, dict[str, list[float]]] = {c.label: {w: [] for w in WORKLOADS} for c in all_configs}
        secs, warm = params["seconds_per_measurement"], params["warmup_seconds"]
        rng = random.Random(5)
        for trial in range(params["trials"]):
            order = list(all_configs)
            rng.shuffle(order)
            for config in order:
                conn = open_libsql(db, config.settings)
                try:
                    for w, op in db_workloads(conn, params["users"], params["prompts"], trial).items():
                        samples[config.label][w].append(ops_per_second(op, secs, warm))
                finally:
                    conn.close()
                sidecar = open_sidecar(side, params["dim"], config.settings)
                try:
                    op = sidecar_op(sidecar, params["sidecar_vectors"], params["dim"], trial)
                    samples[config.label]["sidecar_updates"].append(ops_per_second(op, secs, warm))
                finally:
                    sidecar.close()
            print(f"   trial {trial + 1}/{params['trials']} done at {time.monotonic() - start:.0f}s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return analyse(all_configs, samples, params, quick, out)


def analyse(
    all_configs: list[Config],
    samples: dict[str, dict[str, list[float]]],
    params: dict[str, Any],
    quick: bool,
    out: Path,
) -> dict[str, Any]:
    host = params["host_profile"]
    config_rows, rows = [], []
    for c in all_configs:
        entry: dict[str, Any] = {
            "label": c.label,
            "kind": c.kind,
            "setting": c.setting,
            "profile": c.profile,
            "settings": [s.name for s in c.settings],
            "median": {w: statistics.median(v) for w, v in samples[c.label].items()},
            "trials": samples[c.label],
            "vs_defaults": compare(samples, c.label, BASELINE),
        }
        if c.kind == "without":
            entry["vs_without"] = compare(samples, host, c.label)
        config_rows.append(entry)
        for w in WORKLOADS:
            rows.append(
                {
                    "config": c.label,
                    "kind": c.kind,
                    "workload": w,
                    "ops_per_s": entry["median"][w],
                    "unit": UNITS[w],
                    "ratio_vs_defaults": entry["vs_defaults"][w]["ratio"],
                    "noise": entry["vs_defaults"][w]["noise"],
                }
            )
    by_label = {r["label"]: r for r in config_rows}
    settings: dict[str, Any] = {}
    for name, profile in PROFILES.items():
        if name == BASELINE:
            continue
        for s in profile.settings:
            if s.name in settings:
                settings[s.name]["in_profiles"].append(name)
                continue
            alone = by_label.get(f"+{s.name}", {}).get("vs_defaults", {})
            without = by_label.get(f"{host} -{s.name}")
            inside = without["vs_without"] if without else None
            decision, why = verdict(s, alone, inside)
            settings[s.name] = {
                "pragma": s.pragma,
                "value": s.value,
                "in_profiles": [name],
                "alone_vs_defaults": alone,
                "in_host_profile": inside,
                "durability": DURABILITY.get(s.pragma, "none"),
                "verdict": decision,
                "why": why,
            }
    profiles = {name: by_label[name]["vs_defaults"] for name in PROFILES if name in by_label}
    durability_pair = None
    if f"{host} -synchronous_normal" in by_label:
        durability_pair = {
            "what": f"{host} with synchronous=NORMAL vs the same profile with FULL (WAL both)",
            "ratios": by_label[f"{host} -synchronous_normal"]["vs_without"],
            "durability": DURABILITY["synchronous"],
        }
    summary = [
        {"figure": f"{name} profile vs SQLite defaults, {w}", "value": f"x{f['ratio']:.2f} (±{f['noise']:.0%})"}
        for name, ratios in profiles.items()
        if name == host
        for w, f in ratios.items()
    ]
    if durability_pair:
        summary += [
            {"figure": f"synchronous NORMAL vs FULL (WAL), {w}", "value": f"x{f['ratio']:.2f} (±{f['noise']:.0%})"}
            for w, f in durability_pair["ratios"].items()
            if w in ("write_batches", "single_commits", "sidecar_updates")
        ]
        summary.append({"figure": "durability: synchronous NORMAL vs FULL", "value": DURABILITY["synchronous"]})
    summary += [
        {"figure": f"{n}: verdict", "value": f"{v['verdict']} ({v['why']})"}
        for n, v in settings.items()
        if n in {s.name for s in PROFILES[host].settings}
    ]
    result: dict[str, Any] = {
        "benchmark": "pragmas",
        "command": "python -m bench pragmas" + (" --quick" if quick else ""),
        "machine": machine(),
        "parameters": params,
        "workloads": UNITS,
        "rows": rows,
        "configs": config_rows,
        "settings": settings,
        "profiles": profiles,
        "durability_tradeoff": durability_pair,
        "summary": summary,
        "not_measured_here": "darwin-arm64 settings are measured on this host's OS and disk, which says nothing "
        "about macOS (F_FULLFSYNC, APFS); on a Mac run `edgenode tune` for a measured profile.",
    }
    png = plot(result, out)
    if png:
        result["plot"] = str(png)
    print(
        table(
            [
                {"config": r["label"], **{w: f"x{r['vs_defaults'][w]['ratio']:.2f}" for w in WORKLOADS}}
                for r in config_rows
            ],
            ["config", *WORKLOADS],
        )
    )
    print(
        table(
            [{"setting": n, "verdict": v["verdict"], "why": v["why"]} for n, v in settings.items()],
            ["setting", "verdict", "why"],
        )
    )
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2, default=str))
