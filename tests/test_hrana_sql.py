import apsw
import pytest

from edgenode.hrana.backend import HranaError
from edgenode.hrana.sql import (
    error_code_for_apsw,
    error_code_for_sqlite_message,
    is_begin_readonly,
    named_args_to_positional,
    single_statement,
    split_statements,
    strip_named_arg_prefixes,
)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select 1", ["select 1"]),
        ("select 1;", ["select 1"]),
        ("select 1; -- trailing comment\n", ["select 1"]),
        ("select 1; /* c */ ;; ", ["select 1"]),
        ("select ';'; select 2", ["select ';'", "select 2"]),
        ('select ";" as "a;b"', ['select ";" as "a;b"']),
        ("-- only a comment", []),
        ("", []),
        (
            "create trigger tr after insert on t begin select 1; select 2; end; select 3",
            ["create trigger tr after insert on t begin select 1; select 2; end", "select 3"],
        ),
    ],
)
def test_split_statements_uses_sqlite_tokenizer(sql: str, expected: list[str]) -> None:
    assert split_statements(sql) == expected


def test_single_statement_rejects_many_and_none() -> None:
    assert single_statement("select 1;  ") == "select 1"
    with pytest.raises(HranaError) as many:
        single_statement("select 1; insert into t values (1)")
    assert many.value.code == "SQL_MANY_STATEMENTS"
    with pytest.raises(HranaError) as none:
        single_statement("  -- nothing")
    assert none.value.code == "SQL_NO_STATEMENT"


def test_begin_readonly_is_detected_in_its_libsql_spellings() -> None:
    assert is_begin_readonly("BEGIN TRANSACTION READONLY")
    assert is_begin_readonly("  begin readonly ; ")
    assert not is_begin_readonly("BEGIN")
    assert not is_begin_readonly("BEGIN IMMEDIATE")


def test_named_args_match_with_or_without_prefix() -> None:
    args = {":a": 1, "b": 2, "@c": 3}
    assert named_args_to_positional([":a", ":b", "@c", None, "$missing"], args) == [1, 2, 3, None, None]
    assert strip_named_arg_prefixes(args) == {"a": 1, "b": 2, "c": 3}


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("UNIQUE constraint failed: t.a", "SQLITE_CONSTRAINT"),
        ("NOT NULL constraint failed: t.b", "SQLITE_CONSTRAINT"),
        ('near "selec": syntax error', "SQL_PARSE_ERROR"),
        ("incomplete input", "SQL_PARSE_ERROR"),
        ("attempt to write a readonly database", "SQLITE_READONLY"),
        ("database is locked", "SQLITE_BUSY"),
        ("no such table: nope", "SQLITE_UNKNOWN"),
    ],
)
def test_sqlite_messages_map_to_hrana_codes(message: str, code: str) -> None:
    assert error_code_for_sqlite_message(message) == code


def test_apsw_exceptions_map_to_hrana_codes() -> None:
    conn = apsw.Connection(":memory:")
    conn.execute("create table t(a primary key)")
    conn.execute("insert into t values (1)")
    cases = {
        "insert into t values (1)": "SQLITE_CONSTRAINT",
        "selec 1": "SQL_PARSE_ERROR",
        "select * from nope": "SQLITE_UNKNOWN",
    }
    for sql, code in cases.items():
        with pytest.raises(apsw.Error) as exc:
            conn.execute(sql)
        assert error_code_for_apsw(exc.value) == code
