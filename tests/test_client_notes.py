"""What README's "Client notes" say about real clients against the node, pinned with those clients:
PyPI `libsql` in remote mode (64-bit ints sent as floats, no dict parameters, an implicit transaction
that can outlive `--transaction-timeout` and that `rollback()` now recovers from) and npm `libsql`'s
`db.transaction(fn)` with a statement prepared before the transaction."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import libsql
import pytest

from tests.procs import Proc, start
from tests.test_node_hrana_support import JS_DIR, needs_node

TOKEN = "client-notes-token"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("notes")
    args = ["serve", "--data-dir", str(tmp / "data"), "--auth-token", TOKEN, "--transaction-timeout", "1"]
    proc = start(args, tmp, "node", ready_path="/ready")
    yield proc
    proc.stop()


def test_pypi_libsql_rollback_recovers_a_connection_whose_implicit_transaction_expired(node: Proc) -> None:
    conn = libsql.connect(node.url, auth_token=TOKEN)
    conn.execute("create table expiry(a integer)")
    conn.commit()
    conn.execute("insert into expiry values (1)")  # the client opens a transaction implicitly
    time.sleep(2.5)  # past --transaction-timeout: the node rolls it back and closes the stream
    with pytest.raises(ValueError) as exc:
        conn.execute("insert into expiry values (2)")
    assert "STREAM_EXPIRED" in str(exc.value) and "Commit sooner" in str(exc.value)
    conn.rollback()  # answered on the dead stream: the transaction is indeed rolled back
    conn.execute("insert into expiry values (3)")
    conn.commit()
    assert conn.execute("select a from expiry").fetchall() == [(3,)]


def test_a_commit_on_a_stream_whose_transaction_expired_still_fails(node: Proc) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def pipeline(baton: str | None, *sqls: str) -> httpx.Response:
        requests = [{"type": "execute", "stmt": {"sql": sql}} for sql in sqls]
        return httpx.post(node.url + "/v3/pipeline", json={"baton": baton, "requests": requests}, headers=headers)

    baton = pipeline(None, "BEGIN").json()["baton"]
    time.sleep(2.5)
    committed = pipeline(baton, "COMMIT")
    assert committed.status_code == 400 and committed.json()["code"] == "STREAM_EXPIRED"
    rolled_back = pipeline(baton, "ROLLBACK")
    assert rolled_back.status_code == 200, rolled_back.text
    assert rolled_back.json()["baton"] is None
    assert rolled_back.json()["results"][0]["type"] == "ok"


def test_pypi_libsql_remote_sends_wide_ints_as_floats_and_the_text_work_around_is_exact(node: Proc) -> None:
    conn = libsql.connect(node.url, auth_token=TOKEN)
    conn.execute("create table wide(a integer)")
    conn.execute("insert into wide values (?)", (2**53 + 1,))  # sent as {"type": "float"}: rounded
    conn.execute("insert into wide values (CAST(? AS INTEGER))", (str(2**53 + 1),))
    conn.commit()
    assert conn.execute("select a from wide").fetchall() == [(2**53,), (2**53 + 1,)]
    with pytest.raises(ValueError, match="list or tuple"):
        conn.execute("select :a", {"a": 1})


@needs_node
def test_npm_libsql_transaction_needs_its_statements_prepared_inside_it(node: Proc, tmp_path: Path) -> None:
    env = {**os.environ, "URL": node.url, "TOKEN": TOKEN, "TABLE": "npm_tx"}
    run = subprocess.run(
        ["node", str(JS_DIR / "scripts" / "npm_libsql_transaction.cjs")],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    # Prepared before: the client sends its first INSERT with a `close` of the stream holding the
    # transaction (rolled back, as sqld does on close), the next ones autocommit on new streams,
    # and COMMIT/ROLLBACK find no transaction.
    assert "no transaction is active" in out["before"]
    assert out["afterBefore"] == 2
    # Prepared inside the transaction (the work-around): all committed together.
    assert out["inside"] == "committed"
    assert out["afterInside"] == 5
