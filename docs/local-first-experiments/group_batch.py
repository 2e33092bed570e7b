"""One Hrana batch = one primary transaction holding several queued writes, each in its own savepoint,
with a per-node high-water-mark guard (CHECK seq > prev) and a failing write in the middle; then the
same batch re-sent (a push whose reply was lost)."""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from edgenode.hrana import protocol as p
from edgenode.hrana.client import HranaClient, make_stmt
from edgenode.primary.client import execute
from tests.procs import start

TOKEN = "t"
tmp = Path(sys.argv[1])
shutil.rmtree(tmp, ignore_errors=True)
tmp.mkdir()
proc = start(["primary", "--data-dir", str(tmp / "p"), "--auth-token", TOKEN, "--no-migrate"], tmp, "primary")
try:
    execute(
        proc.url,
        [
            "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT UNIQUE)",
            "CREATE TABLE _w(node_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, prev INTEGER NOT NULL,"
            " CHECK (seq > prev))",
            "INSERT INTO kv(v) VALUES ('taken')",
        ],
        TOKEN,
        transaction=True,
    )
    writes = [
        (1, [("INSERT INTO kv(v) VALUES (?)", ["a"])]),
        (2, [("INSERT INTO kv(v) VALUES (?)", ["b"]), ("INSERT INTO kv(v) VALUES (?)", ["taken"])]),  # unique conflict
        (3, [("INSERT INTO kv(v) VALUES (?)", ["c"])]),
    ]

    def S(sql, args=None, cond=None, rows=False):
        return p.BatchStep(stmt=make_stmt(sql, args, want_rows=rows), condition=cond)

    steps = [S("BEGIN IMMEDIATE")]
    marks = {}
    for seq, stmts in writes:
        first = len(steps)
        steps.append(S(f"SAVEPOINT w{seq}", cond=p.NotCond(cond=p.IsAutocommitCond())))
        steps.append(
            S(
                "INSERT INTO _w(node_id, seq, prev) VALUES ('n1', ?, -1)"
                " ON CONFLICT(node_id) DO UPDATE SET prev = seq, seq = excluded.seq",
                [seq],
                cond=p.OkCond(step=first),
            )
        )
        for sql, args in stmts:
            steps.append(S(sql, args, cond=p.OkCond(step=len(steps) - 1)))
        last = len(steps) - 1
        steps.append(S(f"RELEASE w{seq}", cond=p.OkCond(step=last)))
        rel = len(steps) - 1
        steps.append(
            S(f"ROLLBACK TO w{seq}", cond=p.AndCond(conds=[p.OkCond(step=first), p.NotCond(cond=p.OkCond(step=rel))]))
        )
        steps.append(S(f"RELEASE w{seq}", cond=p.OkCond(step=len(steps) - 1)))
        marks[seq] = (first + 1, rel)
    steps.append(S("COMMIT", cond=p.NotCond(cond=p.IsAutocommitCond())))
    client = HranaClient(proc.url, TOKEN, timeout=5)
    for attempt in ("first push", "re-sent after a lost reply"):
        with client.stream() as st:
            res = st.batch_raw(steps, close=True)
        out = {}
        for seq, (guard, rel) in marks.items():
            if res.step_errors[guard] is not None:
                out[seq] = "guard: " + res.step_errors[guard].message
            elif res.step_results[rel] is not None:
                out[seq] = "applied"
            else:
                err = next(e for e in res.step_errors[guard + 1 : rel] if e is not None)
                out[seq] = "rejected: " + err.message
        print(attempt, out, "commit ok:", res.step_results[-1] is not None)
        print("  primary:", execute(proc.url, ["SELECT v FROM kv ORDER BY k", "SELECT * FROM _w"], TOKEN))
finally:
    proc.stop()
