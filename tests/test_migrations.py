"""The sql/ migrations and their runner, on real libSQL files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import libsql
import pytest

from edgenode.migrations import (
    LibsqlTarget,
    MigrationError,
    default_sql_dir,
    run_migrations,
    split_statements,
    status,
)


@pytest.fixture
def conn(tmp_path: Path):
    connection = libsql.connect(str(tmp_path / "db.sqlite"), isolation_level=None)
    connection.execute("PRAGMA foreign_keys = ON")
    yield connection
    connection.close()


@pytest.fixture
def migrated(conn):
    run_migrations(LibsqlTarget(conn))
    conn.execute("INSERT INTO users (id, email) VALUES ('u1', 'u1@example.com')")
    conn.execute("INSERT INTO prompts (id, user_id, title, content) VALUES ('p1', 'u1', 't', 'c')")
    conn.execute("INSERT INTO evaluations (id, prompt_id) VALUES ('e1', 'p1')")
    return conn


def test_fresh_database_gets_every_migration_in_order(conn) -> None:
    report = run_migrations(LibsqlTarget(conn))
    names = [p.name for p in sorted(default_sql_dir().glob("*.sql"))]
    assert report.applied == names
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'").fetchall()}
    assert {
        "users",
        "prompts",
        "prompt_versions",
        "prompt_tags",
        "prompt_templates",
        "prompt_embeddings",
        "evaluations",
        "test_results",
        "audit_log",
        "_edgenode_migrations",
    } <= tables


def test_rerun_is_a_no_op(conn) -> None:
    run_migrations(LibsqlTarget(conn))
    again = run_migrations(LibsqlTarget(conn))
    assert again.applied == [] and len(again.already) == len(list(default_sql_dir().glob("*.sql")))


def test_to_and_dry_run(conn) -> None:
    dry = run_migrations(LibsqlTarget(conn), dry_run=True)
    assert dry.applied == [] and dry.pending
    assert conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'users'").fetchone() == (0,)
    report = run_migrations(LibsqlTarget(conn), to=1)
    assert report.applied == ["001_core.sql"]
    assert [m["applied"] for m in status(LibsqlTarget(conn))][:2] == [True, False]


def test_an_applied_file_that_changed_stops_the_runner(conn, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(default_sql_dir(), sql_dir)
    run_migrations(LibsqlTarget(conn), sql_dir)
    first = sorted(sql_dir.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        run_migrations(LibsqlTarget(conn), sql_dir)


def test_a_failing_migration_is_rolled_back_whole(conn, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "001_ok.sql").write_text("CREATE TABLE a (x);")
    (sql_dir / "002_bad.sql").write_text("CREATE TABLE b (x);\nINSERT INTO nope VALUES (1);")
    with pytest.raises(MigrationError, match=r"002_bad\.sql failed"):
        run_migrations(LibsqlTarget(conn), sql_dir)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema").fetchall()}
    assert "a" in names and "b" not in names
    assert conn.execute("SELECT version FROM _edgenode_migrations").fetchall() == [(1,)]


def test_split_statements_respects_strings_comments_and_triggers() -> None:
    sql = """
    CREATE TABLE t (a TEXT DEFAULT ';');  -- a comment; with a semicolon
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO t VALUES ('x;y'); END;
    /* block; comment */
    """
    statements = split_statements(sql)
    assert len(statements) == 2 and statements[1].endswith("END;")


BAD_ROWS = [
    "INSERT INTO users (id, email) VALUES ('u2', NULL)",
    "INSERT INTO users (id, email) VALUES ('u2', 'u1@example.com')",
    "INSERT INTO users (id, email, settings) VALUES ('u2', 'x@example.com', 'not json')",
    "INSERT INTO prompts (id, user_id, title, content) VALUES ('p2', 'nobody', 't', 'c')",
    "INSERT INTO prompts (id, user_id, title, content, version) VALUES ('p2', 'u1', 't', 'c', 0)",
    "INSERT INTO prompts (id, user_id, title, content, status) VALUES ('p2', 'u1', 't', 'c', 'published')",
    "INSERT INTO prompts (id, user_id, title, content, parent_id) VALUES ('p2', 'u1', 't', 'c', 'missing')",
    "INSERT INTO prompts (id, user_id, title, content, metadata) VALUES ('p2', 'u1', 't', 'c', '{')",
    "INSERT INTO prompt_versions (id, prompt_id, version_number, diff_content) VALUES ('v1', 'p1', 0, 'd')",
    "INSERT INTO prompt_tags (prompt_id, tag_name) VALUES ('missing', 'x')",
    "INSERT INTO prompt_tags (prompt_id, tag_name) VALUES ('p1', '')",
    "INSERT INTO prompt_templates (id, name, content, variables) VALUES ('t1', 'n', 'c', '{}')",
    "INSERT INTO prompt_embeddings (prompt_id, embedding) VALUES ('p1', zeroblob(10))",
    "INSERT INTO prompt_embeddings (prompt_id, embedding) VALUES ('missing', zeroblob(1536))",
    "INSERT INTO evaluations (id, prompt_id, status) VALUES ('e2', 'p1', 'done')",
    "INSERT INTO evaluations (id, prompt_id, overall_score) VALUES ('e2', 'p1', 1.5)",
    "INSERT INTO evaluations (id, prompt_id, overall_score) VALUES ('e2', 'p1', -0.1)",
    "INSERT INTO evaluations (id, prompt_id) VALUES ('e2', 'missing')",
    "INSERT INTO test_results (id, evaluation_id, score) VALUES ('r1', 'e1', 2)",
    "INSERT INTO test_results (id, evaluation_id, latency_ms) VALUES ('r1', 'e1', -1)",
    "INSERT INTO test_results (id, evaluation_id, passed) VALUES ('r1', 'e1', 2)",
    "INSERT INTO test_results (id, evaluation_id) VALUES ('r1', 'missing')",
    "INSERT INTO audit_log (action, entity_type, details) VALUES ('a', 'e', 'nope')",
    "INSERT INTO audit_log (action, entity_type) VALUES (NULL, 'e')",
]


@pytest.mark.parametrize("sql", BAD_ROWS)
def test_every_check_and_foreign_key_rejects_bad_rows(migrated, sql: str) -> None:
    with pytest.raises(ValueError, match=r"constraint failed|FOREIGN KEY|NOT NULL"):
        migrated.execute(sql)


def test_good_rows_are_accepted_and_deletes_cascade(migrated) -> None:
    migrated.execute(
        "INSERT INTO prompt_versions (id, prompt_id, version_number, diff_content) VALUES ('v', 'p1', 1, 'd')"
    )
    migrated.execute("INSERT INTO prompt_tags (prompt_id, tag_name) VALUES ('p1', 'demo')")
    migrated.execute("INSERT INTO prompt_embeddings (prompt_id, embedding) VALUES ('p1', zeroblob(1536))")
    migrated.execute(
        "INSERT INTO test_results (id, evaluation_id, score, latency_ms, passed) VALUES ('r', 'e1', 0.5, 3, 1)"
    )
    migrated.execute("DELETE FROM users WHERE id = 'u1'")
    for table in ("prompts", "prompt_versions", "prompt_tags", "prompt_embeddings", "evaluations", "test_results"):
        assert migrated.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


def test_live_prompts_use_the_partial_index(migrated) -> None:
    plan = migrated.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM prompts WHERE user_id = 'u1' AND deleted_at IS NULL ORDER BY updated_at DESC"
    ).fetchall()
    assert any("prompts_live" in str(row) for row in plan)


def test_migrate_command_applies_and_reports(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "edgenode", "migrate", "--data-dir", str(tmp_path)]
    dry = subprocess.run([*run, "--dry-run"], capture_output=True, text=True, check=True)
    assert "would apply      001_core.sql" in dry.stdout
    done = subprocess.run([*run, "--to", "1"], capture_output=True, text=True, check=True)
    assert "applied          001_core.sql" in done.stdout and "002" not in done.stdout
    again = subprocess.run(run, capture_output=True, text=True, check=True)
    assert "already applied  001_core.sql" in again.stdout
