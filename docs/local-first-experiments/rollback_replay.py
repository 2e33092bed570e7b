"""Experiment: local writes on an offline=True libsql replica, then rollback (WAL truncated to the
last pulled commit frame), pull, replay. Run from the i20 worktree with its venv."""

import json
import os
import shutil
import sys
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


def w(*s):
    execute(url, list(s), TOKEN, transaction=True)


def prim(sql):
    return execute(url, [sql], TOKEN)[0]


def info(db):
    return json.loads(Path(str(db) + "-info").read_text())


def wal_frames(db):
    p = Path(str(db) + "-wal")
    return (p.stat().st_size - 32) // FRAME if p.exists() and p.stat().st_size else 0


try:
    w("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT UNIQUE)", "INSERT INTO kv(v) VALUES ('p1')")
    db = tmp / "r.db"
    r = libsql.connect(str(db), sync_url=url, auth_token=TOKEN, offline=True)
    r.sync()
    print("1 after first pull: info", info(db), "wal frames", wal_frames(db))
    # (a) a local write on the offline replica
    r.execute("INSERT INTO kv(v) VALUES ('local1')")
    r.commit()
    print(
        "2 local write ok; rows",
        r.execute("SELECT v FROM kv ORDER BY k").fetchall(),
        "wal frames",
        wal_frames(db),
        "info",
        info(db),
    )
    # (b) primary moves on; the client's own sync now conflicts
    w("INSERT INTO kv(v) VALUES ('p2')")
    try:
        r.sync()
        print("3 sync ok?!")
    except Exception as e:
        print("3 sync after primary moved on:", type(e).__name__, e)
    print("3b primary rows", prim("SELECT v FROM kv ORDER BY k"))
    # (c) rollback: close, truncate WAL to durable frames, drop -shm, reopen
    durable = info(db)["durable_frame_num"]
    r.close()
    del r
    with open(str(db) + "-wal", "r+b") as f:
        f.truncate(32 + durable * FRAME)
        os.fsync(f.fileno())
    shm = Path(str(db) + "-shm")
    if shm.exists():
        shm.unlink()
    r = libsql.connect(str(db), sync_url=url, auth_token=TOKEN, offline=True)
    print("4 after truncate to", durable, "frames: rows", r.execute("SELECT v FROM kv ORDER BY k").fetchall())
    r.sync()
    print(
        "5 after pull: rows",
        r.execute("SELECT v FROM kv ORDER BY k").fetchall(),
        "info",
        info(db),
        "wal frames",
        wal_frames(db),
    )
    # (d) replay the pending write locally
    r.execute("INSERT INTO kv(v) VALUES ('local1')")
    r.commit()
    print(
        "6 after replay: rows",
        r.execute("SELECT v FROM kv ORDER BY k").fetchall(),
        "quick_check",
        r.execute("PRAGMA quick_check").fetchall(),
    )
    # (e) the write reaches the primary logically (Hrana), then rollback+pull converges
    w("INSERT INTO kv(v) VALUES ('local1')")
    durable = info(db)["durable_frame_num"]
    r.close()
    del r
    with open(str(db) + "-wal", "r+b") as f:
        f.truncate(32 + durable * FRAME)
        os.fsync(f.fileno())
    if shm.exists():
        shm.unlink()
    r = libsql.connect(str(db), sync_url=url, auth_token=TOKEN, offline=True)
    r.sync()
    mine = r.execute("SELECT k, v FROM kv ORDER BY k").fetchall()
    theirs = prim("SELECT k, v FROM kv ORDER BY k")
    print(
        "7 converged:",
        mine == [tuple(x) for x in theirs],
        mine,
        "quick_check",
        r.execute("PRAGMA quick_check").fetchall(),
    )
    # (f) a synced (not offline) connection: where does a write go?
    s = libsql.connect(str(tmp / "s.db"), sync_url=url, auth_token=TOKEN)
    s.sync()
    s.execute("INSERT INTO kv(v) VALUES ('via-synced')")
    s.commit()
    print("8 non-offline write went to the primary:", ("via-synced",) in [tuple(x) for x in prim("SELECT v FROM kv")])
    # (g) PRAGMA synchronous on the offline connection (can the local speculative commits be cheap?)
    try:
        print(
            "9 offline conn PRAGMA synchronous=NORMAL ->",
            r.execute("PRAGMA synchronous=NORMAL").fetchall(),
            r.execute("SELECT * FROM pragma_synchronous").fetchall(),
        )
    except Exception as e:
        print("9 PRAGMA synchronous refused:", e)
finally:
    proc.stop()
