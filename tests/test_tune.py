"""`edgenode tune`: measures on a copy, writes a pragmas.toml that `serve --profile auto` uses."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import httpx
import libsql
import pytest

from edgenode.migrations import LibsqlTarget, run_migrations
from edgenode.pragmas import PROFILES, TUNED_FILE, Profile, apply_profile, select_profile, synchronous_full
from edgenode.tune import knobs_for, noise, tune
from tests.procs import ROOT, start


def _data_dir(tmp_path: Path, rows: int = 2_000) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    conn = libsql.connect(str(data / "edgenode.db"), isolation_level=None)
    run_migrations(LibsqlTarget(conn))
    conn.execute("BEGIN")
    for i in range(rows):
        conn.execute("INSERT INTO users (id, email, username) VALUES (?, ?, ?)", (f"u{i}", f"u{i}@ex.com", f"u{i}"))
    conn.execute("COMMIT")
    conn.close()
    return data


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tune_writes_a_profile_that_serve_uses_under_auto(tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    before = _digest(data / "edgenode.db")
    out = subprocess.run(
        [sys.executable, "-m", "edgenode", "tune", "--data-dir", str(data), "--duration", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    assert "durability: never below the" in out.stdout
    assert "cache_size:" in out.stdout and "x" in out.stdout  # a gain per knob is printed
    tuned = select_profile("auto", data_dir=data)
    assert tuned.name.startswith("tuned-")
    names = {s.name for s in tuned.settings}
    assert {"journal_mode_wal", "foreign_keys_on"} <= names
    assert _digest(data / "edgenode.db") == before, "tune must only read the node's database"
    assert sorted(p.name for p in data.iterdir()) == ["edgenode.db", TUNED_FILE], "the scratch copy is removed"

    node = start(["serve", "--data-dir", str(data)], tmp_path, "node", ready_path="/ready")
    try:
        pragmas = httpx.get(node.url + "/api/v1/status").json()["database"]["pragmas"]
    finally:
        node.stop()
    assert pragmas["profile"] == tuned.name
    assert pragmas["refused"] == {}
    assert set(pragmas["applied"]) == names


def test_tune_leaves_a_live_wal_database_untouched(tmp_path: Path) -> None:
    data = _data_dir(tmp_path, rows=300)
    writer = libsql.connect(str(data / "edgenode.db"), isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("INSERT INTO users (id, email) VALUES ('late', 'late@ex.com')")  # only in the WAL
    wal = data / "edgenode.db-wal"
    before = (_digest(data / "edgenode.db"), _digest(wal))
    try:
        result = tune(data, seconds=1, log=lambda _: None, trials=1)
        assert (_digest(data / "edgenode.db"), _digest(wal)) == before
        assert result.target.high >= 301  # the copy saw the commit that lives only in the WAL
    finally:
        writer.close()


def test_a_replica_data_dir_is_tuned_on_a_copy_of_its_replica_file(tmp_path: Path) -> None:
    data = _data_dir(tmp_path, rows=300)
    (data / "replica").mkdir()
    (data / "edgenode.db").rename(data / "replica" / "replica.db")
    before = _digest(data / "replica" / "replica.db")
    lines: list[str] = []
    result = tune(data, seconds=1, log=lines.append, trials=1)
    assert any("embedded replica" in line for line in lines)
    assert "wal_autocheckpoint" not in {k.knob for k in result.knobs}
    assert _digest(data / "replica" / "replica.db") == before
    assert (data / TUNED_FILE).is_file()


def test_the_written_profile_applies_fully_on_a_libsql_connection(tmp_path: Path) -> None:
    data = _data_dir(tmp_path, rows=200)
    result = tune(data, seconds=1, log=lambda _: None, trials=1)
    conn = libsql.connect(str(tmp_path / "fresh.db"))
    report = apply_profile(select_profile("auto", data_dir=data), lambda s: conn.execute(s).fetchall())
    assert report.refused == {}
    assert report.profile == result.profile.name


def test_durability_never_drops_below_the_platform_profile() -> None:
    full = Profile(
        "strict",
        "WAL + FULL",
        tuple(synchronous_full() if s.pragma == "synchronous" else s for s in PROFILES["linux-x86_64"].settings),
    )
    knobs, _ = knobs_for(full)
    assert "synchronous" not in {k.name for k in knobs}, "NORMAL is offered only where the platform already uses it"
    offered = [s for k in knobs for _, settings in k.options for s in settings]
    assert not any(s.pragma == "synchronous" for s in offered)
    assert not any(s.pragma == "journal_mode" and str(s.value).lower() in ("off", "memory") for s in offered)


def test_macos_flush_and_correctness_settings_are_kept_unmeasured() -> None:
    knobs, fixed = knobs_for(PROFILES["darwin-arm64"])
    assert {s.name for s in fixed} == {"checkpoint_fullfsync_on", "foreign_keys_on", "busy_timeout_5000"}
    assert "synchronous" in {k.name for k in knobs}


def test_a_ratio_inside_the_trial_spread_is_noise() -> None:
    assert noise([100.0, 100.0, 100.0]) == pytest.approx(0.03)  # the floor
    assert noise([90.0, 100.0, 110.0]) == pytest.approx(0.10)
    # from four trials on, one disturbed trial does not widen the band
    assert noise([99.0, 100.0, 100.0, 101.0, 20.0]) == pytest.approx(0.03)


def test_tune_refuses_a_data_dir_without_a_database(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edgenode", "tune", "--data-dir", str(tmp_path), "--duration", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "no database" in out.stderr
    assert not (tmp_path / TUNED_FILE).exists()


def test_an_empty_database_is_tuned_on_a_synthetic_table(tmp_path: Path) -> None:
    data = _data_dir(tmp_path, rows=0)
    lines: list[str] = []
    result = tune(data, seconds=1, log=lines.append, trials=1, synthetic_rows=500)
    assert result.target.synthetic
    assert any("synthetic table" in line for line in lines)
