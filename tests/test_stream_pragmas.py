"""Per-stream PRAGMAs (`foreign_keys`, `defer_foreign_keys`) work on a Hrana stream as on sqld, and
never leak into other streams or the node's PRAGMA profile: npm `@libsql/client`'s `migrate()`
(which wraps its batch in `PRAGMA foreign_keys=off` ... `on`) on a standalone and a replica node,
plus the stream semantics over raw Hrana."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.procs import Proc, start
from tests.test_node_hrana_support import JS_DIR, needs_node
from tests.test_replica_support import NODE_TOKEN, TOKEN, start_node, start_primary, wait_ready


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Proc, str]]]:
    tmp = tmp_path_factory.mktemp("pragmas")
    standalone = start(
        ["serve", "--data-dir", str(tmp / "alone"), "--auth-token", NODE_TOKEN], tmp, "alone", ready_path="/ready"
    )
    primary = start_primary(tmp)
    replica = start_node(tmp, primary)
    try:
        wait_ready(replica)
        yield {"standalone": (standalone, NODE_TOKEN), "replica": (replica, NODE_TOKEN), "primary": (primary, TOKEN)}
    finally:
        for proc in (replica, primary, standalone):
            proc.stop()


@needs_node
@pytest.mark.parametrize("where", ["standalone", "replica", "primary"])
def test_npm_libsql_client_migrate_turns_foreign_keys_off_for_its_own_batch_only(
    servers: dict[str, tuple[Proc, str]], where: str
) -> None:
    proc, token = servers[where]
    env = {**os.environ, "URL": proc.url, "TOKEN": token, "TABLE": f"mig_{where}"}
    run = subprocess.run(
        ["node", str(JS_DIR / "scripts" / "migrate.cjs")],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["migrated"] == [[1, None]]
    assert out["rejections"] == []
    # Other streams keep the server's setting (the primary, like SQLite, defaults to off).
    assert out["fk"] == out["fkBefore"]
    if where == "standalone":
        assert out["fk"] == 1
        assert out["orphan"] == "SQLITE_CONSTRAINT"


def rest_foreign_keys(proc: Proc, token: str) -> int:
    query = httpx.post(
        proc.url + "/api/v1/query",
        json={"sql": "PRAGMA foreign_keys"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert query.status_code == 200, query.text
    return int(query.json()["rows"][0][0])


class Stream:
    """One Hrana stream over raw HTTP (v3 pipeline, baton chained)."""

    def __init__(self, proc: Proc, token: str) -> None:
        self.url = proc.url + "/v3/pipeline"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.baton: str | None = None

    def run(self, sql: str) -> Any:
        body = {"baton": self.baton, "requests": [{"type": "execute", "stmt": {"sql": sql}}]}
        response = httpx.post(self.url, json=body, headers=self.headers, timeout=30)
        assert response.status_code == 200, response.text
        data = response.json()
        self.baton = data["baton"]
        result = data["results"][0]
        if result["type"] == "error":
            return result["error"]["code"]
        return [[cell.get("value") for cell in row] for row in result["response"]["result"]["rows"]]


@pytest.mark.parametrize("where", ["standalone", "replica"])
def test_a_streams_foreign_keys_setting_holds_for_that_stream_only(
    servers: dict[str, tuple[Proc, str]], where: str
) -> None:
    proc, token = servers[where]
    t = f"fk_{where}"
    setup = Stream(proc, token)
    assert setup.run(f"create table {t}_p(id integer primary key)") == []
    assert setup.run(f"create table {t}_c(pid integer references {t}_p(id))") == []
    profile = rest_foreign_keys(proc, token)
    off, on = Stream(proc, token), Stream(proc, token)
    # Explicit on both: a replica's statements run on the primary, whose connections default to off.
    assert on.run("PRAGMA foreign_keys = on") == []
    assert off.run("PRAGMA foreign_keys = off") == []
    assert off.run("PRAGMA foreign_keys") == [["0"]]
    assert on.run("PRAGMA foreign_keys") == [["1"]]
    assert on.run(f"insert into {t}_c values (7)") == "SQLITE_CONSTRAINT"
    assert off.run(f"insert into {t}_c values (7)") == []  # autocommit, without enforcement
    assert on.run(f"insert into {t}_c values (8)") == "SQLITE_CONSTRAINT"
    # A transaction begun with foreign keys off keeps them off to its end, and no longer.
    assert off.run("BEGIN") == []
    assert off.run("PRAGMA foreign_keys = on") == []  # a no-op inside a transaction, as in SQLite
    assert off.run(f"insert into {t}_c values (9)") == []
    assert off.run("COMMIT") == []
    assert on.run(f"insert into {t}_c values (10)") == "SQLITE_CONSTRAINT"
    assert off.run("PRAGMA foreign_keys = 1") == []
    assert off.run(f"insert into {t}_c values (11)") == "SQLITE_CONSTRAINT"
    # defer_foreign_keys inside a transaction: checked at COMMIT, and gone with the transaction.
    assert off.run("BEGIN") == []
    assert off.run("PRAGMA defer_foreign_keys = true") == []
    assert off.run(f"insert into {t}_c values (12)") == []
    assert off.run(f"delete from {t}_c where pid = 12") == []
    assert off.run("COMMIT") == []
    assert off.run("BEGIN") == []
    assert off.run(f"insert into {t}_c values (13)") == "SQLITE_CONSTRAINT"
    assert off.run("ROLLBACK") == []
    # Other settings stay the profile's, and the profile is untouched.
    assert off.run("PRAGMA synchronous = OFF") == "SQLITE_AUTH"
    assert rest_foreign_keys(proc, token) == profile
    if where == "standalone":
        assert profile == 1
    assert setup.run(f"select pid from {t}_c order by pid") == [["7"], ["9"]]
