"""Roll local commits back WITHOUT closing the libsql connection: truncate the WAL to the last pulled
commit frame and zero the wal-index header (as edgenode primary does for pushes), then read, pull,
replay; repeated; checks quick_check and rows against the primary."""

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
    execute(url, ["CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT UNIQUE)"], TOKEN, transaction=True)
    db = tmp / "r.db"
    r = libsql.connect(str(db), sync_url=url, auth_token=TOKEN, offline=True, isolation_level=None)
    r.sync()

    def rollback():
        durable = json.loads(Path(str(db) + "-info").read_text())["durable_frame_num"]
        with open(str(db) + "-wal", "r+b") as f:
            f.truncate(32 + durable * FRAME)
            os.fsync(f.fileno())
        fd = os.open(str(db) + "-shm", os.O_RDWR)
        os.pwrite(fd, bytes(96), 0)
        os.close(fd)

    pending = []
    t_rb = []
    for i in range(30):
        v = f"local{i}"
        pending.append(v)
        r.execute("INSERT INTO kv(v) VALUES (?)", (v,))  # local, speculative
        execute(url, [("INSERT INTO kv(v) VALUES (?)", [f"remote{i}"])], TOKEN, transaction=True)  # someone else
        if i % 3 == 2:  # push the oldest pending write logically
            execute(url, [("INSERT INTO kv(v) VALUES (?)", [pending.pop(0)])], TOKEN, transaction=True)
        t = time.perf_counter()
        rollback()
        n = r.execute("SELECT count(*) FROM kv").fetchall()[0][0]
        r.sync()
        r.execute("BEGIN")
        for v in pending:
            r.execute("INSERT INTO kv(v) VALUES (?)", (v,))
        r.execute("COMMIT")
        t_rb.append((time.perf_counter() - t) * 1000)
    for v in pending:
        execute(url, [("INSERT INTO kv(v) VALUES (?)", [v])], TOKEN, transaction=True)
    rollback()
    r.sync()
    mine = r.execute("SELECT k, v FROM kv ORDER BY k").fetchall()
    theirs = [tuple(x) for x in execute(url, ["SELECT k, v FROM kv ORDER BY k"], TOKEN)[0]]
    print(
        "rows",
        len(mine),
        "equal to primary:",
        mine == theirs,
        "quick_check",
        r.execute("PRAGMA quick_check").fetchall(),
    )
    print(f"in-place rollback+pull+replay ms: median {sorted(t_rb)[len(t_rb) // 2]:.1f} max {max(t_rb):.1f}")
    r2 = libsql.connect(str(tmp / "fresh.db"), sync_url=url, auth_token=TOKEN, offline=True)
    r2.sync()
    print("a fresh replica agrees:", r2.execute("SELECT k, v FROM kv ORDER BY k").fetchall() == theirs)
finally:
    proc.stop()
