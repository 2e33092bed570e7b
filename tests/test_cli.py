"""The command line: help everywhere, safe defaults, status and version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import Proc


def edgenode(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgenode", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", ["serve", "migrate", "status", "version"])
def test_every_command_has_help(command: str) -> None:
    run = edgenode(command, "--help")
    assert run.returncode == 0 and "Usage:" in run.stdout


def test_version_names_the_engines() -> None:
    out = edgenode("version").stdout
    assert "edgenode 0.1.0" in out and "libsql 0.1." in out and "apsw" in out


def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    run = edgenode("serve", "--data-dir", str(tmp_path), "--host", "0.0.0.0", "--port", "1")
    assert run.returncode == 2 and "without a token" in run.stderr


def test_status_prints_a_human_summary(node: Proc) -> None:
    from tests.conftest import RO

    run = edgenode("status", "--url", node.url, "--read-token", RO)
    assert run.returncode == 0, run.stderr
    assert "role        standalone" in run.stdout and "migrations" in run.stdout


def test_status_says_when_no_node_answers() -> None:
    run = edgenode("status", "--url", "http://127.0.0.1:9")
    assert run.returncode == 1 and "no node answering" in run.stderr


def test_a_command_whose_import_fails_is_an_error_naming_the_cause() -> None:
    # A frozen build once lost every command but `version` this way, silently.
    code = (
        "from edgenode.cli import LazyGroup, main; "
        "LazyGroup.lazy['broken'] = 'edgenode.no_such_module:command'; main(['--help'])"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "the 'broken' command cannot be loaded: ModuleNotFoundError" in run.stderr
    assert "edgenode.no_such_module" in run.stderr


def test_changes_stops_at_once_on_a_url_it_cannot_use() -> None:
    # It used to retry such a URL every second, forever, printing 'disconnected'.
    for url in ("notaurl", "ftp://example.com"):
        run = edgenode("changes", "--tables", "t", "--capture", "--url", url, timeout=20)
        assert run.returncode == 1 and "http:// or https://" in run.stderr, run.stderr
        assert "Traceback" not in run.stderr


def test_status_names_each_collection_instead_of_an_empty_line() -> None:
    from edgenode.commands.status import summarise

    status = {
        "role": "standalone",
        "database": {"path": "x.db", "size_bytes": 0, "wal_bytes": 0},
        "migrations": [],
        "components": {
            "vectors": {},
            "text": {"docs": {"state": "ready", "size": 3, "position": 9}},
            "hrana": {"open_streams": 0, "errors": {}},
        },
        "uptime_seconds": 1.0,
        "versions": {"edgenode": "0.1.0"},
    }
    lines = summarise(status, {"status": "ready"})
    assert "text        docs(state=ready, size=3, position=9)" in lines  # was 'text' and nothing after it
    assert "hrana       open_streams=0" in lines


SEARCHES = [["text", "search", "docs", "word", "--collection", "v"], ["vectors", "search", "v"]]


@pytest.mark.parametrize("command", SEARCHES)
def test_a_vector_file_that_cannot_be_read_is_a_usage_error_not_a_traceback(tmp_path: Path, command: list[str]) -> None:
    # Checked before any request: no node is needed.
    for path in (tmp_path / "missing.json", tmp_path):
        run = edgenode(command[0], "--url", "http://127.0.0.1:9", *command[1:], "--vector-file", str(path))
        assert run.returncode == 2 and "cannot read a vector" in run.stderr, run.stderr
        assert "Traceback" not in run.stderr
