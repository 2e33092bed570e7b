"""Sync throughput of `edgenode primary` with a real libSQL 0.1.x embedded replica.

- bootstrap: a fresh replica of a >= 1 GB database (`--quick`: 64 MB) the way a node builds one
  (`edgenode.replica.bootstrap`: download to disk, fsync, verify, place with `-info`, then the
  client's first sync), next to a plain copy + fsync of the same file on the same disk in the same
  run (the physical limit), /export alone over raw HTTP, and the libsql client's own bootstrap
  (`connect()` fetching /export itself) for reference;
- pull: frames/s for a replica catching up after a write burst, through the client (`sync()`) and
  as raw HTTP pulls (what the server alone sustains).

Run: `python -m bench.sync [--quick] [--out DIR]` (or `python -m bench sync`); writes sync.json.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import apsw
import httpx
import libsql

from bench.common import DEFAULT_OUT, NodeProcess, machine, save
from edgenode.primary.client import execute
from edgenode.primary.wal import FRAME_SIZE
from edgenode.replica import bootstrap
from edgenode.replica.files import ReplicaFiles

TOKEN = "bench-token"
MB = 1024 * 1024


def build_database(path: Path, size_bytes: int) -> int:
    """An incompressible database of about size_bytes, built offline (the primary adopts it as generation 1)."""
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA page_size=4096; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB)")
    row = 256 * 1024
    rows = max(1, size_bytes // row)
    with conn:
        for _ in range(rows):
            conn.execute("INSERT INTO blobs(data) VALUES (randomblob(?))", (row,))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return path.stat().st_size


def timed_copy(src: Path, dst: Path) -> float:
    started = time.perf_counter()
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    return time.perf_counter() - started


def write_burst(url: str, frames_wanted: int) -> None:
    """Transactions of 64 one-page rows until about frames_wanted WAL frames were written."""
    per_txn = 64
    insert = ("INSERT INTO burst(data) SELECT randomblob(3900) FROM json_each(?)", [str(list(range(per_txn)))])
    for _ in range(max(1, frames_wanted // (per_txn + 2))):
        execute(url, [insert], TOKEN)


def raw_pull(url: str, generation: int) -> tuple[int, float]:
    frames = 0
    started = time.perf_counter()
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        start = 1
        while (r := client.get(f"{url}/sync/{generation}/{start}/{start + 128}")).status_code == 200:
            n = len(r.content) // FRAME_SIZE
            frames += n
            start += n
    return frames, time.perf_counter() - started


def raw_export(url: str, generation: int) -> tuple[int, float]:
    """Download /export into nothing: what the server alone sustains, without the client's file work.

    Read with http.client into one reused buffer (httpx's 64 KiB pieces bound it to ~200 MB/s
    here, well below the server)."""
    received = 0
    host = url.removeprefix("http://")
    buffer = memoryview(bytearray(4 * MB))
    started = time.perf_counter()
    connection = http.client.HTTPConnection(host, timeout=120)
    try:
        connection.request("GET", f"/export/{generation}", headers={"Authorization": f"Bearer {TOKEN}"})
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"/export answered {response.status}")
        while n := response.readinto(buffer):
            received += n
    finally:
        connection.close()
    return received, time.perf_counter() - started


def node_bootstrap(url: str, generation: int, data_dir: Path) -> dict[str, float]:
    """What a node does (download, verify, place), then the client's first sync; seconds per phase."""
    files = ReplicaFiles(data_dir)

    async def fetch() -> Path:
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
            return await bootstrap.download(client, url, generation, files, bootstrap.Progress())

    started = time.perf_counter()
    partial = asyncio.run(fetch())
    downloaded = time.perf_counter()
    bootstrap.place(files, partial, generation, lambda: None)
    placed = time.perf_counter()
    replica = libsql.connect(str(files.db), sync_url=url, auth_token=TOKEN)
    replica.sync()
    synced = time.perf_counter()
    assert replica.execute("SELECT count(*) FROM blobs").fetchall()[0][0] > 0
    replica.close()
    # The verification alone, again, outside the timed run (the file is as warm in the page cache
    # as it was inside download): how much of download_and_verify it is.
    t0 = time.perf_counter()
    bootstrap.verify(files.db)
    verify_s = time.perf_counter() - t0
    return {
        "total": synced - started,
        "download_and_verify": downloaded - started,
        "verify": verify_s,
        "place": placed - downloaded,
        "first_sync": synced - placed,
    }


def run(quick: bool = False, out: Path = DEFAULT_OUT) -> dict[str, Any]:
    size = 64 * MB if quick else 1024 * MB + 16 * MB
    burst_frames = 2_000 if quick else 20_000
    workdir = Path(tempfile.mkdtemp(prefix="edgenode-bench-sync-"))
    try:
        data_dir = workdir / "primary"
        data_dir.mkdir()
        db = data_dir / "primary.db"
        t0 = time.perf_counter()
        db_bytes = build_database(db, size)
        build_s = time.perf_counter() - t0
        print(f"built {db_bytes / MB:.0f} MB database in {build_s:.1f} s", flush=True)

        # Warm the page cache for both contenders, so each reads the same cached file.
        with open(db, "rb") as f:
            while f.read(16 * MB):
                pass
        copy_s = timed_copy(db, workdir / "copy.db")
        (workdir / "copy.db").unlink()

        proc = NodeProcess(
            [
                "primary",
                "--data-dir",
                str(data_dir),
                "--auth-token",
                TOKEN,
                "--no-migrate",
                "--generation-max-frames",
                str(burst_frames * 4),
            ],
            workdir / "primary.log",
        )
        try:
            proc.wait_ready("/health")
            exported, export_s = raw_export(proc.url, 1)
            phases = node_bootstrap(proc.url, 1, workdir / "node")
            bootstrap_s = phases["total"]
            shutil.rmtree(workdir / "node")
            started = time.perf_counter()
            replica = libsql.connect(str(workdir / "replica.db"), sync_url=proc.url, auth_token=TOKEN)
            replica.sync()
            client_bootstrap_s = time.perf_counter() - started
            assert replica.execute("SELECT count(*) FROM blobs").fetchall()[0][0] > 0

            execute(proc.url, ["CREATE TABLE burst(id INTEGER PRIMARY KEY, data BLOB)"], TOKEN)
            replica.sync()
            t0 = time.perf_counter()
            write_burst(proc.url, burst_frames)
            burst_write_s = time.perf_counter() - t0
            generation = httpx.get(f"{proc.url}/info", headers={"Authorization": f"Bearer {TOKEN}"}).json()[
                "current_generation"
            ]
            raw_frames, raw_s = raw_pull(proc.url, generation)
            t0 = time.perf_counter()
            replica.sync()
            pull_s = time.perf_counter() - t0
            burst_rows = replica.execute("SELECT count(*) FROM burst").fetchall()[0][0]
        finally:
            proc.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    result = {
        "machine": machine(),
        "quick": quick,
        "database_mb": round(db_bytes / MB, 1),
        "plain_copy_s": round(copy_s, 3),
        "plain_copy_mb_s": round(db_bytes / MB / copy_s, 1),
        "bootstrap_s": round(bootstrap_s, 3),
        "bootstrap_mb_s": round(db_bytes / MB / bootstrap_s, 1),
        "bootstrap_vs_copy": round(copy_s / bootstrap_s, 3),
        "bootstrap_phases_s": {name: round(seconds, 3) for name, seconds in phases.items()},
        "export_http_mb_s": round(exported / MB / export_s, 1),
        "client_bootstrap_s": round(client_bootstrap_s, 3),
        "client_bootstrap_mb_s": round(db_bytes / MB / client_bootstrap_s, 1),
        "burst_frames": raw_frames,
        "burst_rows": burst_rows,
        "burst_write_s": round(burst_write_s, 3),
        "pull_client_s": round(pull_s, 3),
        "pull_client_frames_s": round(raw_frames / pull_s),
        "pull_client_mb_s": round(raw_frames * FRAME_SIZE / MB / pull_s, 1),
        "pull_http_frames_s": round(raw_frames / raw_s),
        "pull_http_mb_s": round(raw_frames * FRAME_SIZE / MB / raw_s, 1),
        "notes": (
            "page cache warm for copy and export; bootstrap is the node's own (edgenode.replica.bootstrap), "
            "the client's own bootstrap is libsql.connect() fetching /export itself; replica is PyPI libsql 0.1.x; "
            "pulls of 128 frames per request"
        ),
    }
    result["command"] = "python -m bench sync" + (" --quick" if quick else "")
    result["parameters"] = {"database_mb": result["database_mb"], "burst_frames_wanted": burst_frames}
    result["summary"] = [
        {"figure": "database size (MB)", "value": result["database_mb"]},
        {"figure": "plain copy + fsync (MB/s)", "value": result["plain_copy_mb_s"]},
        {
            "figure": "node bootstrap: download, fsync, verify, place, first sync (MB/s)",
            "value": result["bootstrap_mb_s"],
        },
        {"figure": "bootstrap / copy", "value": result["bootstrap_vs_copy"]},
        {"figure": "of which verify, quick_check (s)", "value": result["bootstrap_phases_s"]["verify"]},
        {"figure": "/export alone, raw HTTP (MB/s)", "value": result["export_http_mb_s"]},
        {"figure": "libsql client's own bootstrap (MB/s)", "value": result["client_bootstrap_mb_s"]},
        {"figure": "pull through libsql sync() (frames/s)", "value": result["pull_client_frames_s"]},
        {"figure": "pull raw HTTP (frames/s)", "value": result["pull_http_frames_s"]},
    ]
    print(
        f"bootstrap {result['bootstrap_mb_s']} MB/s vs plain copy {result['plain_copy_mb_s']} MB/s "
        f"(phases {result['bootstrap_phases_s']}; server alone {result['export_http_mb_s']} MB/s, "
        f"libsql client's own bootstrap {result['client_bootstrap_mb_s']} MB/s) "
        f"({result['database_mb']} MB); pull {result['pull_client_frames_s']} frames/s through the client, "
        f"{result['pull_http_frames_s']} frames/s raw HTTP ({raw_frames} frames)",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 MB database and a small burst")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    path = save("sync", run(args.quick, args.out), args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
