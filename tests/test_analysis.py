"""StatementAnalyzer: classification by SQLite's compiler on a schema mirror."""

from __future__ import annotations

from edgenode.analysis import StatementAnalyzer


def test_statements_that_create_indexes_are_classified_as_ddl() -> None:
    analyzer = StatementAnalyzer(lambda: ["CREATE TABLE t(a INTEGER, b TEXT)", "CREATE INDEX t_old ON t(b)"])
    for sql in (
        "CREATE TABLE u(a INTEGER UNIQUE)",
        "CREATE TABLE v(k TEXT PRIMARY KEY, n INTEGER)",
        "CREATE INDEX t_a ON t(a)",
        "CREATE UNIQUE INDEX t_b ON t(b)",
        "DROP INDEX t_old",
    ):
        analysis = analyzer.analyze(sql)
        assert analysis.is_ddl and not analysis.is_readonly, sql
