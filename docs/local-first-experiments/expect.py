"""Row-version check inside a primary transaction: fail the write when a statement changed an unexpected
number of rows, with plain SQL (a TEMP table with a CHECK), over the primary's Hrana."""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
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
        ["CREATE TABLE doc(id INTEGER PRIMARY KEY, body TEXT, version INTEGER)", "INSERT INTO doc VALUES (1, 'a', 1)"],
        TOKEN,
        transaction=True,
    )
    check = [
        "CREATE TEMP TABLE IF NOT EXISTS _edgenode_expect(ok INTEGER NOT NULL CHECK (ok))",
    ]
    for attempt, version in (("matching version", 1), ("stale version", 1)):
        try:
            execute(
                proc.url,
                [
                    *check,
                    ("UPDATE doc SET body = 'b', version = version + 1 WHERE id = 1 AND version = ?", [version]),
                    ("INSERT INTO temp._edgenode_expect VALUES (changes() = ?)", [1]),
                ],
                TOKEN,
                transaction=True,
            )
            print(attempt, "-> committed")
        except Exception as e:
            print(attempt, "->", type(e).__name__, str(e)[:120])
    print(execute(proc.url, ["SELECT * FROM doc"], TOKEN)[0], "frames pulled by a replica would hold no temp table")
finally:
    proc.stop()
