"""Encryption at rest of a standalone node: real node processes, a key from the environment or a
file, the file checked unreadable without it; wrong or missing keys and roles that cannot encrypt
are refused at start in one line, nothing overwritten."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import apsw
import httpx
import libsql
import pytest

from tests.procs import ROOT, free_port, start

KEY = "correct horse battery staple 18"


def run_edgenode(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items() if k != "EDGENODE_ENCRYPTION_KEY"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "edgenode", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=full_env
    )


def fingerprint(data: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(data.glob("edgenode.db*"))}


def serve_args(data: Path, *extra: str) -> list[str]:
    return ["serve", "--data-dir", str(data), "--no-migrate", "--port", str(free_port()), *extra]


def test_encrypted_node_is_unreadable_without_its_key_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    args = ["serve", "--data-dir", str(data), "--no-migrate", "--encryption-key-file", str(key_file)]
    proc = start([*args, "--allow-plaintext-derived"], tmp_path, "node")
    try:
        statements = [
            {"sql": "CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT)"},
            {"sql": "INSERT INTO t(body) VALUES ('secret-row-1'), ('secret-row-2')"},
        ]
        assert httpx.post(proc.url + "/api/v1/execute", json={"statements": statements}).status_code == 200
        status = httpx.get(proc.url + "/api/v1/status").text
        assert KEY not in status
        over_http = httpx.post(proc.url + "/api/v1/backup", json={"name": "h.db"}, timeout=60)
        assert over_http.status_code == 200, over_http.text
        assert (data / "backups" / "h.db").read_bytes()[:16] != b"SQLite format 3\x00"
    finally:
        proc.stop()
    log = proc.log()
    assert KEY not in log
    assert "encryption at rest: encrypted" in log and "NOT encrypted" in log
    db = data / "edgenode.db"
    assert db.read_bytes()[:16] != b"SQLite format 3\x00"
    assert b"secret-row-1" not in db.read_bytes()
    for path in data.glob("edgenode.db*"):
        assert b"secret-row" not in path.read_bytes(), path
    with pytest.raises(apsw.Error):
        apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY).execute("SELECT * FROM t").fetchall()
    with pytest.raises(ValueError):
        libsql.connect(str(db)).execute("SELECT * FROM t").fetchall()
    before = fingerprint(data)

    wrong = run_edgenode(*serve_args(data, "--allow-plaintext-derived"), env={"EDGENODE_ENCRYPTION_KEY": "wrong"})
    assert wrong.returncode != 0 and "cannot be read with this encryption key" in wrong.stderr, wrong.stderr
    assert "Traceback" not in wrong.stderr
    missing = run_edgenode(*serve_args(data))
    assert missing.returncode != 0 and "is encrypted" in missing.stderr and "Traceback" not in missing.stderr
    both = run_edgenode(*serve_args(data, "--encryption-key-file", str(key_file)), env={"EDGENODE_ENCRYPTION_KEY": KEY})
    assert both.returncode != 0 and "keep one" in both.stderr
    backup = run_edgenode("backup", "--data-dir", str(data), "--to", str(tmp_path / "b.db"))
    assert backup.returncode != 0 and "encrypted at rest" in backup.stderr and not (tmp_path / "b.db").exists()
    assert fingerprint(data) == before  # nothing was overwritten by any refusal

    # A backup of an encrypted node is encrypted with the same key; restoring it needs the key.
    backup = run_edgenode(
        "backup",
        "--data-dir",
        str(data),
        "--to",
        str(tmp_path / "b.db"),
        "--json",
        env={"EDGENODE_ENCRYPTION_KEY": KEY},
    )
    assert backup.returncode == 0, backup.stderr
    assert json.loads(backup.stdout)["tables"] == {"t": 2}
    assert (tmp_path / "b.db").read_bytes()[:16] != b"SQLite format 3\x00"
    assert b"secret-row" not in (tmp_path / "b.db").read_bytes()
    no_key = run_edgenode("restore", "--from", str(tmp_path / "b.db"), "--data-dir", str(tmp_path / "r0"))
    assert no_key.returncode != 0 and "encrypted" in no_key.stderr and not (tmp_path / "r0").exists()
    wrong_key = run_edgenode(
        "restore",
        "--from",
        str(tmp_path / "b.db"),
        "--data-dir",
        str(tmp_path / "r1"),
        env={"EDGENODE_ENCRYPTION_KEY": "wrong"},
    )
    assert wrong_key.returncode != 0 and "wrong encryption key" in wrong_key.stderr
    assert not (tmp_path / "r1" / "edgenode.db").exists()
    restored = run_edgenode(
        "restore",
        "--from",
        str(tmp_path / "b.db"),
        "--data-dir",
        str(tmp_path / "r2"),
        "--encryption-key-file",
        str(key_file),
    )
    assert restored.returncode == 0, restored.stderr
    assert fingerprint(data) == before

    for name, where in (("again", data), ("restored", tmp_path / "r2")):
        node_args = ["serve", "--data-dir", str(where), "--no-migrate", "--encryption-key-file", str(key_file)]
        proc = start([*node_args, "--allow-plaintext-derived"], tmp_path, name)
        try:
            body = {"sql": "SELECT body FROM t ORDER BY id"}
            rows = httpx.post(proc.url + "/api/v1/query", json=body).json()["rows"]
            assert rows == [["secret-row-1"], ["secret-row-2"]]
        finally:
            proc.stop()


def test_a_key_without_accepting_plaintext_derived_files_refuses_to_start_naming_them(tmp_path: Path) -> None:
    result = run_edgenode(*serve_args(tmp_path / "data"), env={"EDGENODE_ENCRYPTION_KEY": KEY})
    assert result.returncode != 0, result.stderr
    assert "--allow-plaintext-derived" in result.stderr and "vectors" in result.stderr and "text" in result.stderr
    assert KEY not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "edgenode.db").exists()


@pytest.mark.parametrize("role", ["replica", "primary"])
def test_roles_that_cannot_encrypt_refuse_a_key_in_one_line(tmp_path: Path, role: str) -> None:
    if role == "replica":
        args = serve_args(tmp_path / "data", "--primary-url", "http://127.0.0.1:9", "--allow-plaintext-derived")
    else:
        args = ["primary", "--data-dir", str(tmp_path / "data"), "--port", str(free_port())]
    result = run_edgenode(*args, env={"EDGENODE_ENCRYPTION_KEY": KEY})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "encrypt" in lines[0], result.stderr
    assert KEY not in result.stderr


def test_backup_and_restore_refuse_a_key_that_does_not_fit_in_one_line(tmp_path: Path) -> None:
    encrypted, plain = tmp_path / "encrypted", tmp_path / "plain"
    for data, key in ((encrypted, KEY), (plain, None)):
        data.mkdir()
        conn = libsql.connect(str(data / "edgenode.db"), isolation_level=None, encryption_key=key)
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO t(body) VALUES ('secret-row')")
        conn.close()
    before = fingerprint(encrypted)

    # A wrong key used to end in a traceback from VACUUM INTO ("file is not a database").
    wrong = run_edgenode(
        "backup", "--data-dir", str(encrypted), "--to", str(tmp_path / "w.db"), env={"EDGENODE_ENCRYPTION_KEY": "no"}
    )
    assert wrong.returncode != 0 and "cannot be read with this encryption key" in wrong.stderr, wrong.stderr
    assert "Traceback" not in wrong.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encrypted", "plain"]  # no backup, no .partial
    assert fingerprint(encrypted) == before

    # A key for a plaintext node used to make a plaintext backup its maker believed encrypted.
    keyed = run_edgenode(
        "backup", "--data-dir", str(plain), "--to", str(tmp_path / "k.db"), env={"EDGENODE_ENCRYPTION_KEY": KEY}
    )
    assert keyed.returncode != 0 and "would be plaintext" in keyed.stderr, keyed.stderr
    assert not (tmp_path / "k.db").exists()

    made = run_edgenode("backup", "--data-dir", str(plain), "--to", str(tmp_path / "p.db"))
    assert made.returncode == 0, made.stderr
    restore = run_edgenode(
        "restore",
        "--from",
        str(tmp_path / "p.db"),
        "--data-dir",
        str(tmp_path / "r"),
        env={"EDGENODE_ENCRYPTION_KEY": KEY},
    )
    assert restore.returncode != 0 and "plaintext backup" in restore.stderr, restore.stderr
    assert not (tmp_path / "r").exists()
