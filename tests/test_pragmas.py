"""PRAGMA profiles: selection per platform and what the engine really applies."""

from __future__ import annotations

from pathlib import Path

import libsql
import pytest

from edgenode.pragmas import PROFILES, apply_profile, platform_key, select_profile


@pytest.mark.parametrize(
    ("system", "machine", "key"),
    [
        ("darwin", "arm64", "darwin-arm64"),
        ("Darwin", "arm64", "darwin-arm64"),
        ("linux", "aarch64", "linux-arm64"),
        ("linux", "x86_64", "linux-x86_64"),
        ("linux", "AMD64", "linux-x86_64"),
    ],
)
def test_platform_strings_map_to_profile_keys(system: str, machine: str, key: str) -> None:
    assert platform_key(system, machine) == key
    assert select_profile("auto", key).name == key


def test_unknown_platforms_fall_back_to_a_linux_profile() -> None:
    assert select_profile("auto", "freebsd-arm64").name == "linux-arm64"
    assert select_profile("auto", "windows-x86_64").name == "linux-x86_64"


def test_explicit_profile_overrides_detection_and_unknown_names_fail() -> None:
    assert select_profile("sqlite-defaults", "darwin-arm64").name == "sqlite-defaults"
    with pytest.raises(ValueError, match="unknown PRAGMA profile"):
        select_profile("fast")


def test_darwin_flushes_the_drive_at_checkpoints() -> None:
    names = {s.name for s in PROFILES["darwin-arm64"].settings}
    assert "checkpoint_fullfsync_on" in names


def test_every_setting_has_a_reason_and_every_profile_a_durability_statement() -> None:
    for profile in PROFILES.values():
        assert profile.durability
        for setting in profile.settings:
            assert setting.reason and len(setting.reason) < 120


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profiles_apply_fully_on_a_local_libsql_file(tmp_path: Path, name: str) -> None:
    conn = libsql.connect(str(tmp_path / "p.db"))
    report = apply_profile(PROFILES[name], lambda s: conn.execute(s).fetchall())
    assert report.refused == {}
    assert len(report.applied) == len(PROFILES[name].settings)


def test_a_setting_the_engine_ignores_is_reported_as_refused(tmp_path: Path) -> None:
    conn = libsql.connect(":memory:")
    report = apply_profile(PROFILES["linux-x86_64"], lambda s: conn.execute(s).fetchall())
    # An in-memory database cannot be in WAL mode: the engine keeps 'memory'.
    assert "journal_mode_wal" in report.refused
    assert "foreign_keys_on" in report.applied


def test_tuned_profile_in_the_data_dir_wins_under_auto(tmp_path: Path) -> None:
    (tmp_path / "pragmas.toml").write_text(
        'name = "tuned"\ndurability = "measured"\n'
        '[[setting]]\nname = "cache_size_8mib"\npragma = "cache_size"\nvalue = -8192\nreason = "measured"\n'
    )
    profile = select_profile("auto", "linux-x86_64", data_dir=tmp_path)
    assert profile.name == "tuned" and profile.settings[0].value == -8192
