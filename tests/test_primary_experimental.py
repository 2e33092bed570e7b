"""`edgenode primary` against `libsql-experimental` 0.0.55, the older client many users still have."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgenode.primary.client import execute
from tests.procs import Proc, start

libsql_experimental = pytest.importorskip("libsql_experimental")

TOKEN = "exp-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[Proc]:
    proc = start(["primary", "--data-dir", str(tmp_path / "p"), "--auth-token", TOKEN], tmp_path, "primary")
    yield proc
    proc.stop()


def connect(url: str, path: Path, token: str = TOKEN) -> object:
    conn = libsql_experimental.connect(str(path), sync_url=url, auth_token=token)
    conn.sync()
    return conn


def test_bootstrap_pull_and_delegated_write(primary: Proc, tmp_path: Path) -> None:
    execute(primary.url, ["CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO kv(v) VALUES ('a')"], TOKEN)
    conn = connect(primary.url, tmp_path / "r.db")
    assert conn.execute("SELECT v FROM kv").fetchall() == [("a",)]
    execute(primary.url, ["INSERT INTO kv(v) VALUES ('b')"], TOKEN)
    conn.sync()
    assert conn.execute("SELECT v FROM kv ORDER BY k").fetchall() == [("a",), ("b",)]
    conn.execute("INSERT INTO kv(v) VALUES ('from 0.0.55')")
    conn.commit()
    conn.sync()
    assert conn.execute("SELECT v FROM kv ORDER BY k").fetchall() == [("a",), ("b",), ("from 0.0.55",)]
    assert execute(primary.url, ["SELECT count(*) FROM kv"], TOKEN)[0] == [(3,)]


def test_crosses_a_rollover(primary: Proc, tmp_path: Path) -> None:
    execute(primary.url, ["CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO kv(v) VALUES ('g1')"], TOKEN)
    conn = connect(primary.url, tmp_path / "r.db")
    httpx.post(f"{primary.url}/rollover", headers=AUTH).raise_for_status()
    execute(primary.url, ["INSERT INTO kv(v) VALUES ('g2')"], TOKEN)
    conn.sync()
    assert conn.execute("SELECT v FROM kv ORDER BY k").fetchall() == [("g1",), ("g2",)]


def test_wrong_token_fails_at_connect(primary: Proc, tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"(?i)unauthorized|401"):
        connect(primary.url, tmp_path / "r.db", token="wrong")


def test_default_rollovers_keep_it_past_its_4120_frame_limit(primary: Proc, tmp_path: Path) -> None:
    # Without rollovers (--generation-max-frames 100000) this fails at frame 4121: "wal_insert_frame failed".
    execute(primary.url, ["CREATE TABLE b(id INTEGER PRIMARY KEY, data BLOB)"], TOKEN)
    conn = connect(primary.url, tmp_path / "r.db")
    for _ in range(10):
        # ~600 frames a transaction: 6,000 in all, past what 0.0.55 holds in one generation.
        rows = ("INSERT INTO b(data) SELECT randomblob(4000) FROM json_each(?)", [str(list(range(600)))])
        execute(primary.url, [rows], TOKEN)
        conn.sync()
    assert conn.execute("SELECT count(*) FROM b").fetchall() == [(6000,)]
    assert httpx.get(f"{primary.url}/info", headers=AUTH).json()["current_generation"] >= 3
