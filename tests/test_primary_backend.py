"""The primary's Hrana backend keeps the backend contract of edgenode.hrana.backend."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgenode.auth import Access
from edgenode.hrana.backend import HranaError
from edgenode.primary.backend import PrimaryBackend, PrimarySession
from edgenode.primary.generations import PrimaryStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PrimaryStore]:
    s = PrimaryStore(tmp_path / "data")
    s.open()
    yield s
    s.close()


@pytest.fixture
def session(store: PrimaryStore) -> Iterator[PrimarySession]:
    s = PrimaryBackend(store).open_session(Access.WRITE)
    assert isinstance(s, PrimarySession)
    s.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", [], True)
    yield s
    s.close()


def test_counts_and_rowids_follow_the_statement_kind(session: PrimarySession) -> None:
    inserted = session.execute("INSERT INTO t(v) VALUES ('a'), ('b')", [], True)
    assert (inserted.affected_row_count, inserted.last_insert_rowid) == (2, 2)
    created = session.execute("CREATE TABLE u(x)", [], True)
    assert (created.affected_row_count, created.last_insert_rowid) == (0, None)
    updated = session.execute("UPDATE t SET v = 'c'", [], True)
    assert (updated.affected_row_count, updated.last_insert_rowid) == (2, None)
    selected = session.execute("SELECT id, v FROM t WHERE id = :id", {":id": 1}, True)
    assert selected.rows == [[1, "c"]] and selected.affected_row_count == 0
    assert [(c.name, c.decltype) for c in selected.cols] == [("id", "INTEGER"), ("v", "TEXT")]
    empty = session.execute("SELECT id FROM t WHERE id = $id", {"id": 99}, True)
    assert empty.rows == [] and [c.name for c in empty.cols] == ["id"]


def test_exact_64_bit_integers(session: PrimarySession) -> None:
    big = 2**63 - 1
    session.execute("INSERT INTO t(id, v) VALUES (?, 'max')", [big], True)
    assert session.execute("SELECT id FROM t WHERE v = 'max'", [], True).rows == [[big]]


def test_several_statements_are_refused(session: PrimarySession) -> None:
    with pytest.raises(HranaError) as error:
        session.execute("SELECT 1; SELECT 2", [], True)
    assert error.value.code == "SQL_MANY_STATEMENTS"
    assert session.execute("SELECT 1;", [], True).rows == [[1]]


def test_describe_reports_params_columns_and_readonly(session: PrimarySession) -> None:
    described = session.describe("SELECT v FROM t WHERE id = :id AND v = ?")
    assert described.params == [":id", None]
    assert [c.name for c in described.cols] == ["v"]
    assert described.is_readonly and not described.is_explain
    assert not session.describe("DELETE FROM t").is_readonly


def test_begin_transaction_readonly_refuses_writes_until_it_ends(session: PrimarySession) -> None:
    session.execute("BEGIN TRANSACTION READONLY", [], True)
    assert not session.is_autocommit()
    with pytest.raises(HranaError) as error:
        session.execute("INSERT INTO t(v) VALUES ('no')", [], True)
    assert error.value.code == "SQLITE_READONLY"
    session.execute("COMMIT", [], True)
    assert session.is_autocommit()
    assert session.execute("INSERT INTO t(v) VALUES ('yes')", [], True).affected_row_count == 1


def test_read_only_sessions_cannot_write_or_lift_the_restriction(store: PrimaryStore) -> None:
    writer = PrimaryBackend(store).open_session(Access.WRITE)
    writer.execute("CREATE TABLE t(x)", [], True)
    reader = PrimaryBackend(store).open_session(Access.READ)
    assert reader.execute("SELECT count(*) FROM t", [], True).rows == [[0]]
    with pytest.raises(HranaError) as error:
        reader.execute("INSERT INTO t VALUES (1)", [], True)
    assert error.value.code == "SQLITE_READONLY"
    with pytest.raises(HranaError):
        reader.execute("PRAGMA query_only = 0", [], True)
    with pytest.raises(HranaError):
        reader.sequence("PRAGMA query_only = 0; INSERT INTO t VALUES (1)")
    reader.close()
    writer.close()


def test_an_open_transaction_holds_off_a_rollover_until_it_ends(store: PrimaryStore, session: PrimarySession) -> None:
    session.execute("BEGIN", [], True)
    session.execute("INSERT INTO t(v) VALUES ('x')", [], True)
    done = threading.Event()
    roller = threading.Thread(target=lambda: (store.rollover(force=True), done.set()))
    roller.start()
    assert not done.wait(0.3)
    session.execute("COMMIT", [], True)
    assert done.wait(5)
    roller.join()
    assert store.generation == 2
    assert session.execute("SELECT v FROM t", [], True).rows == [["x"]]


def test_closing_rolls_back_and_releases_the_lock(store: PrimaryStore, session: PrimarySession) -> None:
    session.execute("BEGIN", [], True)
    session.execute("INSERT INTO t(v) VALUES ('lost')", [], True)
    session.close()
    session.close()
    assert store.rollover(force=True, timeout=1)
    other = PrimaryBackend(store).open_session(Access.WRITE)
    assert other.execute("SELECT count(*) FROM t", [], True).rows == [[0]]
    other.close()


def test_vacuum_works_but_attaching_or_vacuuming_into_files_is_refused(session: PrimarySession, tmp_path: Path) -> None:
    session.execute("INSERT INTO t(v) SELECT hex(randomblob(1000)) FROM json_each('[1,2,3,4,5,6,7,8,9]')", [], True)
    session.execute("DELETE FROM t", [], True)
    session.execute("VACUUM", [], True)
    for sql in (f"VACUUM INTO '{tmp_path / 'copy.db'}'", f"ATTACH '{tmp_path / 'other.db'}' AS other"):
        with pytest.raises(HranaError) as error:
            session.execute(sql, [], True)
        assert error.value.code == "SQLITE_AUTH"
    assert not (tmp_path / "copy.db").exists() and not (tmp_path / "other.db").exists()
