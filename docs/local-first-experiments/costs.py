"""Costs on an offline=True replica: default synchronous, local commit cost, replay of N pending in one
transaction, and the rollback cycle (close, truncate WAL, reopen, pull with nothing new)."""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import libsql

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from edgenode.primary.client import execute
from tests.procs import start

TOKEN = "t"
FRAME = 4120
tmp = Path(sys.argv[1])
shutil.rmtree(tmp, ignore_errors=True)
tmp.mkdir()
proc = start(["primary", "--data-dir", str(tmp / "p"), "--auth-token", TOKEN, "--no-migrate"], tmp, "primary")
url = proc.url
try:
    execute(url, ["CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)"], TOKEN, transaction=True)
    db = tmp / "r.db"
    r = libsql.connect(str(db), sync_url=url, auth_token=TOKEN, offline=True, isolation_level=None)
    r.sync()
    print(
        "default synchronous:",
        r.execute("SELECT * FROM pragma_synchronous").fetchall(),
        "journal",
        r.execute("SELECT * FROM pragma_journal_mode").fetchall(),
    )
    for mode in ("FULL", "NORMAL"):
        r.execute(f"PRAGMA synchronous={mode}")
        t = time.perf_counter()
        for i in range(300):
            r.execute("INSERT INTO kv(v) VALUES (?)", (f"x{i}",))
        dt = time.perf_counter() - t
        print(f"300 autocommit local inserts, synchronous={mode}: {dt * 1000 / 300:.3f} ms each")
    t = time.perf_counter()
    r.execute("BEGIN")
    for i in range(300):
        r.execute("SAVEPOINT w")
        r.execute("INSERT INTO kv(v) VALUES (?)", (f"y{i}",))
        r.execute("RELEASE w")
    r.execute("COMMIT")
    print(f"replay 300 writes (savepoint each) in one transaction: {(time.perf_counter() - t) * 1000:.1f} ms")
    durable = json.loads(Path(str(db) + "-info").read_text())["durable_frame_num"]
    times = []
    for _ in range(5):
        t = time.perf_counter()
        r.close()
        del r
        with open(str(db) + "-wal", "r+b") as f:
            f.truncate(32 + durable * FRAME)
            os.fsync(f.fileno())
        Path(str(db) + "-shm").unlink(missing_ok=True)
        r = libsql.connect(str(db), sync_url=url, auth_token=TOKEN, offline=True, isolation_level=None)
        r.sync()
        times.append((time.perf_counter() - t) * 1000)
    print(
        "rollback cycle (close, truncate, reopen, empty pull) ms:",
        [round(x, 1) for x in times],
        "rows",
        r.execute("SELECT count(*) FROM kv").fetchall(),
    )
finally:
    proc.stop()
