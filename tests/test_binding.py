"""`edgenode.binding`: integers beyond 32 bits reach a real libsql connection exact, whatever the
statement looks like around its parameters."""

from __future__ import annotations

import libsql
import pytest

from edgenode.analysis import StatementAnalyzer
from edgenode.binding import for_libsql

SCHEMA = ["create table t(x integer, y)"]


@pytest.fixture
def conn() -> libsql.Connection:
    conn = libsql.connect(":memory:")
    conn.execute(SCHEMA[0])
    return conn


def run(conn: libsql.Connection, sql: str, params: list[object]) -> list[tuple[object, ...]]:
    bound_sql, bound = for_libsql(StatementAnalyzer(lambda: SCHEMA), sql, params)
    return conn.execute(bound_sql, bound).fetchall()


def test_the_binding_itself_rounds_wide_integers_through_a_float(conn: libsql.Connection) -> None:
    # The upstream defect this module works around (PyPI libsql 0.1.11); if it ever binds int64,
    # this fails and the workaround can go.
    assert conn.execute("select ?, typeof(?)", (2**53 + 1, 2**53 + 1)).fetchall() == [(2**53, "real")]


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, -(2**63)])
def test_wide_integers_are_exact_in_expressions_and_typeof(conn: libsql.Connection, value: int) -> None:
    assert run(conn, "select ?, typeof(?)", [value, value]) == [(value, "integer")]


def test_a_negative_value_after_a_minus_does_not_become_a_comment(conn: libsql.Connection) -> None:
    assert run(conn, "select 10-?, 10 - ?", [-(2**40), -(2**40)]) == [(10 + 2**40, 10 + 2**40)]


def test_comments_and_strings_that_look_like_parameters_are_left_alone(conn: libsql.Connection) -> None:
    sql = "select ? /* ? */, '?:a' -- ?\n, ?"
    assert run(conn, sql, [2**40, "x"]) == [(2**40, "?:a", "x")]


def test_named_and_numbered_parameters_reuse_their_value(conn: libsql.Connection) -> None:
    rows = run(conn, "select :a, ?3, :a, typeof(:a), ?2", [-(2**63), 7, 2**53 + 1])
    assert rows == [(-(2**63), 2**53 + 1, -(2**63), "integer", 7)]


def test_small_integers_leave_the_statement_unchanged() -> None:
    analyzer = StatementAnalyzer(lambda: SCHEMA)
    assert for_libsql(analyzer, "select ?, ?", [1, "x"]) == ("select ?, ?", [1, "x"])


def test_stored_values_keep_their_type_in_untyped_and_integer_columns(conn: libsql.Connection) -> None:
    run(conn, "insert into t values (?, ?)", [2**62, 2**62])
    assert conn.execute("select x, typeof(x), y, typeof(y) from t").fetchall() == [(2**62, "integer", 2**62, "integer")]
