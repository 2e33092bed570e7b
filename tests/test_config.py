"""Settings: precedence, validation messages, and README documenting every setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgenode.config import SETTINGS_DOC, ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_defaults() -> None:
    settings = load_settings({}, env={})
    assert (settings.data_dir, settings.host, settings.port, settings.profile) == (
        "./.edgenode",
        "127.0.0.1",
        8080,
        "auto",
    )
    assert not settings.is_replica


def test_flags_beat_env_beat_file_beat_defaults(tmp_path: Path) -> None:
    (tmp_path / "edgenode.toml").write_text("port = 7000\nmax_rows = 5\nhost = '127.0.0.2'\n")
    env = {"EDGENODE_DATA_DIR": str(tmp_path), "EDGENODE_PORT": "7100", "EDGENODE_HOST": "127.0.0.3"}
    settings = load_settings({"host": "127.0.0.4"}, env=env)
    assert settings.host == "127.0.0.4"  # flag
    assert settings.port == 7100  # env over file
    assert settings.max_rows == 5  # file over default


def test_turso_variables_configure_the_primary() -> None:
    settings = load_settings({}, env={"TURSO_DATABASE_URL": "libsql://db.example", "TURSO_AUTH_TOKEN": "t"})
    assert settings.primary_url == "libsql://db.example" and settings.primary_token == "t" and settings.is_replica
    own = load_settings({}, env={"TURSO_DATABASE_URL": "http://a", "EDGENODE_PRIMARY_URL": "http://b"})
    assert own.primary_url == "http://b"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"EDGENODE_PORT": "eighty"}, "port (--port, EDGENODE_PORT)"),
        ({"EDGENODE_PORT": "70000"}, "port (--port)"),
        ({"EDGENODE_PROFILE": "turbo"}, "profile"),
        ({"EDGENODE_SYNC_INTERVAL": "0"}, "sync_interval"),
        ({"EDGENODE_PRIMARY_URL": "ftp://x"}, "primary_url"),
        ({"EDGENODE_MIGRATE": "maybe"}, "migrate"),
        ({"EDGENODE_AUTH_TOKEN": "same", "EDGENODE_READ_TOKEN": "same"}, "read_token"),
    ],
)
def test_invalid_values_name_the_setting(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match="invalid setting") as info:
        load_settings({}, env=env)
    assert needle in str(info.value)


def test_config_file_errors_are_clear(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("port = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, env={}, config_file=str(tmp_path / "bad.toml"))
    (tmp_path / "unknown.toml").write_text("colour = 'blue'")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({}, env={}, config_file=str(tmp_path / "unknown.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, env={}, config_file=str(tmp_path / "missing.toml"))


def test_every_field_is_documented_in_code_and_readme() -> None:
    assert set(SETTINGS_DOC) == set(Settings.__struct_fields__)
    readme = (ROOT / "README.md").read_text()
    for name, doc in SETTINGS_DOC.items():
        assert doc.flag.split("/")[0] in readme, f"README does not document {doc.flag}"
        for var in doc.env:
            assert var in readme, f"README does not document {var} ({name})"


def test_invalid_setting_fails_at_start_with_exit_code_2(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "edgenode", "serve", "--data-dir", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "invalid setting port" in run.stderr


def test_long_poll_can_be_switched_off_by_flag_or_env() -> None:
    from edgenode.pragmas import select_profile
    from edgenode.replica.database import ReplicaDatabase

    assert load_settings({}, env={}).long_poll is True
    for settings in (
        load_settings({"long_poll": False, "primary_url": "http://127.0.0.1:9"}, env={}),
        load_settings({}, env={"EDGENODE_LONG_POLL": "off", "EDGENODE_PRIMARY_URL": "http://127.0.0.1:9"}),
    ):
        assert settings.long_poll is False
        assert ReplicaDatabase(settings, select_profile("auto")).watcher is None  # interval syncs only
    on = load_settings({"primary_url": "http://127.0.0.1:9"}, env={})
    assert ReplicaDatabase(on, select_profile("auto")).watcher is not None
