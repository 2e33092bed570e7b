"""Backups: how fast `edgenode backup` and `edgenode restore` move a database, next to a plain copy,
and what a running backup costs the writes of a live node.

Throughput (page cache warm for every method, so all read the same memory): the database file
copied with `shutil.copyfile` + fsync (the peer), `edgenode.backup.backup` (snapshot in a held read
transaction, SQLite's online backup API in 4 MiB steps, switched to a single file, integrity_check,
row counts, fsync, rename), `VACUUM INTO` (SQLite's other way to snapshot, no progress, no
verification) and `edgenode.backup.restore` (copy to staging, verify, fsync, rename). MB/s counts
the database's size.

Write cost: a real `edgenode serve` node on the same database, one client inserting a row per
`POST /api/v1/execute` back to back; latency p50/p99/max over a window without a backup, then over
windows during which backups run one after another (backup API, then `VACUUM INTO`).

Continuous archive: a real `edgenode primary --archive DIR` on the same database, one client paced
at 200 single-row writes/s over Hrana; archive lag per commit = when its segment was written
(fsynced and renamed) minus when SQLite reported it committed, p50/p99 from the primary's own
`/info` (the archiver measures it). Then `edgenode restore --to-time` from that archive (snapshot +
every archived frame replayed) next to a plain copy of the same database file.

A day of frames (the issue's goal: restore of a database with a day of frames within 2x a plain
copy): on the same primary, writers then run unpaced — a day at 200 writes/s compressed in time —
each write one transaction (half a 200-byte insert, half a 1 KB update of a random row, so pages
all over the file change), while the archiver ships, snapshots at a rollover once the frames since
the last snapshot exceed `--archive-snapshot-ratio` (0.5) times its size, and compacts finished
generations. Then `restore --to-time` to a random moment of the last quarter of the "day" and to
its end, each next to a plain copy of the final database file. A literal day at 200 writes/s is
17.3 M transactions (hours to write here); a restore's cost depends only on the frames since the
newest snapshot before T, which the ratio bounds, so the full run writes `DAY_WRITES` (enough for
several snapshot cycles of a 1 GB database) and reports how many snapshots the day crossed;
`--day-writes 17280000` writes the literal day.

`python -m bench backup [--quick]` or `python -m bench.backup [--quick] [--size-mb N] [--day-writes N]`.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import httpx

from bench.common import NodeProcess, machine, percentile, table
from edgenode.backup import backup, restore
from edgenode.primary.client import execute as hrana_execute
from edgenode.primary.pitr import restore_to_time

ARCHIVE_WRITE_RATE = 200.0
ARCHIVE_WRITERS = 4
DAY_RATE = 200.0  # the write rate the compressed "day" stands for
DAY_WRITES = 200_000
DAY_WRITERS = 4


def build(path: Path, megabytes: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB)")
    conn.execute("CREATE TABLE w(id INTEGER PRIMARY KEY, data BLOB)")
    rows = megabytes * 1024 // 4
    with conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO t(id, data) SELECT i, randomblob(4000) FROM n",
            (rows,),
        )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def plain_copy(src: Path, dest: Path) -> None:
    shutil.copyfile(src, dest)
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def vacuum_into(src: Path, dest: Path) -> None:
    dest.unlink(missing_ok=True)
    conn = apsw.Connection(str(src))
    conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
    try:
        conn.execute("VACUUM INTO ?", (str(dest),))
    finally:
        conn.close()


def timed(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def write_window(url: str, seconds: float, during: Callable[[], None] | None) -> dict[str, Any]:
    """Insert rows back to back for `seconds`; `during` runs over and over in a thread meanwhile."""
    stop = threading.Event()
    runs = [0]

    def loop() -> None:
        while not stop.is_set():
            assert during is not None
            during()
            runs[0] += 1

    worker = threading.Thread(target=loop) if during else None
    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        if worker:
            worker.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            r = client.post(
                "/api/v1/execute", json={"statements": [{"sql": "INSERT INTO w(data) VALUES (randomblob(200))"}]}
            )
            latencies.append(time.perf_counter() - start)
            r.raise_for_status()
    stop.set()
    if worker:
        worker.join()
    return {
        "writes": len(latencies),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "max_ms": round(max(latencies) * 1000, 3),
        "backups_completed": runs[0],
    }


def archive_lag_and_pitr(
    root: Path, db: Path, window: float, repeats: int, day_writes: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Archive lag under paced writes on a primary, then restore-to-time rate next to a plain copy."""
    pdir = root / "primary"
    pdir.mkdir()
    shutil.copyfile(db, pdir / "primary.db")
    archive = root / "archive"
    token = "bench"
    node = NodeProcess(
        ["primary", "--data-dir", str(pdir), "--auth-token", token, "--no-migrate", "--archive", str(archive)],
        root / "primary.log",
    )
    headers = {"Authorization": f"Bearer {token}"}

    def status() -> dict[str, Any]:
        return httpx.get(node.url + "/info", headers=headers, timeout=10).json()["archive"]

    def caught_up() -> dict[str, Any]:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            s = status()
            if s["snapshots"] and s["lag_seconds"] == 0 and s["last_error"] is None:
                return s
            time.sleep(0.05)
        raise RuntimeError(f"archive never caught up: {s}")

    try:
        node.wait_ready("/health")
        caught_up()
        # Several paced writers: one alone cannot reach the rate when each round trip is ~10 ms.
        counts = [0] * ARCHIVE_WRITERS
        start = time.monotonic()

        def writer(i: int) -> None:
            per_writer = ARCHIVE_WRITE_RATE / ARCHIVE_WRITERS
            while time.monotonic() - start < window:
                hrana_execute(node.url, ["INSERT INTO w(data) VALUES (randomblob(200))"], token)
                counts[i] += 1
                ahead = counts[i] / per_writer - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(ARCHIVE_WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        writes = sum(counts)
        rate = writes / (time.monotonic() - start)
        s = caught_up()
        day = a_day_of_frames(node.url, token, day_writes, status, caught_up)
    finally:
        node.stop()
    lag = {
        "target": "directory (fsync + rename per segment)",
        "writes_per_s": round(rate, 1),
        "writes": writes,
        "lag_p50_ms": round(s["recent_lag_p50_seconds"] * 1000, 2),
        "lag_p99_ms": round(s["recent_lag_p99_seconds"] * 1000, 2),
        "segments": s["segments"],
        "frames": s["frames"],
    }
    size_mb = (pdir / "primary.db").stat().st_size / 1e6
    copy_s = timed(lambda: plain_copy(pdir / "primary.db", root / "copy.db"), repeats)
    replayed: dict[str, Any] = {}

    def pitr() -> None:
        shutil.rmtree(root / "pitr", ignore_errors=True)
        report = restore_to_time(str(archive), time.time(), root / "pitr")
        replayed.update(commits=report.commits)

    pitr_s = timed(pitr, repeats)
    restored_mb = (root / "pitr" / "edgenode.db").stat().st_size / 1e6
    rates = {
        "database_mb": round(restored_mb, 1),
        "commits_replayed": replayed["commits"],
        "plain_copy_mb_per_s": round(size_mb / copy_s, 1),
        "pitr_mb_per_s": round(restored_mb / pitr_s, 1),
        "pitr_seconds": round(pitr_s, 3),
        "pitr_over_copy": round(pitr_s / copy_s, 2),
    }
    for label, at in (("a random moment of the last quarter", day.pop("moment")), ("the end of the day", time.time())):
        seconds, report = restore_once(str(archive), at, root / "day-pitr")
        day[f"pitr_{'moment' if 'random' in label else 'end'}"] = {
            "to": label,
            "seconds": round(seconds, 3),
            "over_copy": round(seconds / copy_s, 2),
            "snapshot_generation": report.snapshot_generation,
            "generations_replayed": report.generation - report.snapshot_generation + 1,
            "commits_replayed": report.commits,
        }
    day["plain_copy_seconds"] = round(copy_s, 3)
    day["database_mb"] = round(size_mb, 1)
    day["goal"] = "pitr within 2x a plain copy"
    return lag, rates, day


def restore_once(archive: str, at: float, dest: Path) -> tuple[float, Any]:
    shutil.rmtree(dest, ignore_errors=True)
    start = time.perf_counter()
    report = restore_to_time(archive, at, dest)
    return time.perf_counter() - start, report


def a_day_of_frames(
    url: str, token: str, writes: int, status: Callable[[], dict[str, Any]], caught_up: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Unpaced single-write transactions (a day at DAY_RATE, compressed in time); returns what the archive did."""
    rows = int(hrana_execute(url, ["SELECT max(id) FROM t"], token)[0][0][0] or 1)
    before = status()
    done = [0] * DAY_WRITERS
    started = time.time()

    def writer(i: int) -> None:
        rng = random.Random(i)
        while sum(done) < writes:
            if rng.random() < 0.5:
                hrana_execute(url, ["INSERT INTO w(data) VALUES (randomblob(200))"], token)
            else:
                hrana_execute(
                    url, [("UPDATE t SET data = randomblob(1000) WHERE id = ?", [rng.randint(1, rows)])], token
                )
            done[i] += 1

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(DAY_WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ended = time.time()
    after = caught_up()
    return {
        "writes": sum(done),
        "stands_for_minutes_at_200_per_s": round(sum(done) / DAY_RATE / 60, 1),
        "wall_seconds": round(ended - started, 1),
        "snapshots_during": after["snapshots_shipped"] - before["snapshots_shipped"],
        "segments_shipped": after["segments"] - before["segments"],
        "segments_merged_away": after["merged_away"] - before["merged_away"],
        "archive_mb": round((after["bytes"] - before["bytes"]) / 1e6, 1),
        "moment": started + (ended - started) * random.Random(18).uniform(0.75, 1.0),
    }


def run(quick: bool, out: Path, megabytes: int | None = None, day_writes: int | None = None) -> dict[str, Any]:
    megabytes = megabytes or (32 if quick else 1024)
    day_writes = day_writes or (3_000 if quick else DAY_WRITES)
    repeats = 1 if quick else 3
    window = 2.0 if quick else 15.0
    with tempfile.TemporaryDirectory(prefix="edgenode-bench-backup-") as tmp:
        root = Path(tmp)
        data = root / "data"
        db = data / "edgenode.db"
        build(db, megabytes)
        size_mb = db.stat().st_size / 1e6
        target = root / "out"
        target.mkdir()

        def fresh_restore() -> None:
            shutil.rmtree(root / "restored", ignore_errors=True)
            restore(target / "b.db", root / "restored")

        throughput = []
        for method, fn in (
            ("plain copy + fsync (peer)", lambda: plain_copy(db, target / "copy.db")),
            ("edgenode backup", lambda: backup(data, target / "b.db")),
            ("VACUUM INTO", lambda: vacuum_into(db, target / "v.db")),
            ("edgenode restore", fresh_restore),
        ):
            seconds = timed(fn, repeats)
            throughput.append({"method": method, "seconds": round(seconds, 3), "mb_per_s": round(size_mb / seconds, 1)})
        shutil.rmtree(root / "restored", ignore_errors=True)

        node = NodeProcess(["serve", "--data-dir", str(data)], root / "node.log")
        try:
            node.wait_ready()
            latency = [
                {"while": "no backup", **write_window(node.url, window, None)},
                {"while": "edgenode backup", **write_window(node.url, window, lambda: backup(data, target / "b.db"))},
                {"while": "VACUUM INTO", **write_window(node.url, window, lambda: vacuum_into(db, target / "v.db"))},
            ]
        finally:
            node.stop()
        lag, pitr, day = archive_lag_and_pitr(root, db, window * 2, repeats, day_writes)
    print(table(throughput, ["method", "seconds", "mb_per_s"]))
    print(table(latency, ["while", "writes", "p50_ms", "p99_ms", "max_ms", "backups_completed"]))
    print(table([lag], list(lag)))
    print(table([pitr], list(pitr)))
    print(
        table(
            [{k: v for k, v in day.items() if not k.startswith("pitr_")}], [k for k in day if not k.startswith("pitr_")]
        )
    )
    print(table([day["pitr_moment"], day["pitr_end"]], list(day["pitr_end"])))
    return {
        "benchmark": "backup",
        "command": "python -m bench backup" + (" --quick" if quick else ""),
        "machine": machine(),
        "parameters": {
            "database_mb": round(size_mb, 1),
            "repeats_best_of": repeats,
            "write_window_s": window,
            "day_writes": day_writes,
            "day_rate_per_s": DAY_RATE,
        },
        "throughput": throughput,
        "write_latency": latency,
        "archive_lag": [lag],
        "point_in_time_restore": [pitr],
        "a_day_of_frames": [{k: v for k, v in day.items() if not k.startswith("pitr_")}],
        "point_in_time_restore_after_a_day": [day["pitr_moment"], day["pitr_end"]],
        "peers_missing": [],
        "notes": "page cache warm for every method; writes are single-row REST transactions back to back",
    }


if __name__ == "__main__":
    from bench.common import DEFAULT_OUT, save

    parser = argparse.ArgumentParser(prog="python -m bench.backup", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size-mb", type=int, default=None, help="database size (default 1024; 32 with --quick)")
    parser.add_argument("--day-writes", type=int, default=None, help=f"the compressed day (default {DAY_WRITES})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    cli = parser.parse_args()
    result = run(cli.quick, cli.out, cli.size_mb, cli.day_writes)
    result["command"] = "python -m bench.backup " + " ".join(__import__("sys").argv[1:])
    print("wrote", save("backup", result, cli.out))
