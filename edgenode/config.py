"""One typed settings object, resolved as: CLI flags > environment > TOML file > defaults.

Every setting is a field of `Settings`; `SETTINGS_DOC` names its flag, environment variables
and meaning, and README's configuration table is checked against it by a test.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

PROFILES = ("auto", "darwin-arm64", "linux-arm64", "linux-x86_64", "sqlite-defaults")


class ConfigError(Exception):
    """A setting has an invalid value; the message names the setting and the expected form."""


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    data_dir: str = "./.edgenode"
    host: str = "127.0.0.1"
    port: int = 8080
    auth_token: str | None = None
    read_token: str | None = None
    jwt_key_file: str | None = None
    primary_url: str | None = None
    primary_token: str | None = None
    profile: str = "auto"
    max_body_bytes: int = 4 * 1024 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000
    max_rows: int = 10_000
    query_timeout_ms: int = 5_000
    read_connections: int = 2
    sync_interval: float = 1.0
    sync_timeout: float = 10.0
    max_lag: float = 10.0
    long_poll: bool = True
    generation_max_frames: int = 2_000
    keep_generations: int = 8
    stream_idle_timeout: float = 10.0
    transaction_timeout: float = 5.0
    idempotency_retention: float = 86_400.0
    migrate: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def is_replica(self) -> bool:
        return bool(self.primary_url)


@dataclass(frozen=True)
class SettingDoc:
    flag: str
    env: tuple[str, ...]
    help: str


SETTINGS_DOC: dict[str, SettingDoc] = {
    "data_dir": SettingDoc("--data-dir", ("EDGENODE_DATA_DIR",), "Directory holding the database and indexes."),
    "host": SettingDoc("--host", ("EDGENODE_HOST",), "Address to bind; non-loopback needs a token."),
    "port": SettingDoc("--port", ("EDGENODE_PORT",), "TCP port to listen on."),
    "auth_token": SettingDoc("--auth-token", ("EDGENODE_AUTH_TOKEN",), "Read-write bearer token."),
    "read_token": SettingDoc("--read-token", ("EDGENODE_READ_TOKEN",), "Read-only bearer token."),
    "jwt_key_file": SettingDoc(
        "--jwt-key-file", ("EDGENODE_JWT_KEY_FILE",), "Ed25519 public key (PEM) accepting sqld-style JWTs."
    ),
    "primary_url": SettingDoc(
        "--primary-url", ("EDGENODE_PRIMARY_URL", "TURSO_DATABASE_URL"), "Primary to replicate; unset = standalone."
    ),
    "primary_token": SettingDoc(
        "--primary-token", ("EDGENODE_PRIMARY_TOKEN", "TURSO_AUTH_TOKEN"), "Bearer token for the primary."
    ),
    "profile": SettingDoc("--profile", ("EDGENODE_PROFILE",), "PRAGMA profile: " + ", ".join(PROFILES) + "."),
    "max_body_bytes": SettingDoc("--max-body-bytes", ("EDGENODE_MAX_BODY_BYTES",), "Largest request body (413 above)."),
    "header_timeout": SettingDoc(
        "--header-timeout",
        ("EDGENODE_HEADER_TIMEOUT",),
        "Seconds a request's headers may take to arrive (connection closed after).",
    ),
    "body_timeout": SettingDoc(
        "--body-timeout", ("EDGENODE_BODY_TIMEOUT",), "Seconds a request body may take to arrive in full (408 after)."
    ),
    "max_connections": SettingDoc(
        "--max-connections", ("EDGENODE_MAX_CONNECTIONS",), "Concurrent connections or requests (503 above)."
    ),
    "max_rows": SettingDoc("--max-rows", ("EDGENODE_MAX_ROWS",), "Most rows one query may return."),
    "query_timeout_ms": SettingDoc(
        "--query-timeout-ms", ("EDGENODE_QUERY_TIMEOUT_MS",), "Longest a read query may run."
    ),
    "read_connections": SettingDoc(
        "--read-connections", ("EDGENODE_READ_CONNECTIONS",), "Reader connections in standalone mode."
    ),
    "sync_interval": SettingDoc("--sync-interval", ("EDGENODE_SYNC_INTERVAL",), "Seconds between replica syncs."),
    "sync_timeout": SettingDoc("--sync-timeout", ("EDGENODE_SYNC_TIMEOUT",), "Seconds one sync may take."),
    "max_lag": SettingDoc("--max-lag", ("EDGENODE_MAX_LAG",), "Seconds of replica lag before /ready is 503."),
    "long_poll": SettingDoc(
        "--long-poll/--no-long-poll",
        ("EDGENODE_LONG_POLL",),
        "Replica: a held request to the primary triggers a sync on each commit (interval syncs stay).",
    ),
    "generation_max_frames": SettingDoc(
        "--generation-max-frames", ("EDGENODE_GENERATION_MAX_FRAMES",), "Primary: WAL frames before a new generation."
    ),
    "keep_generations": SettingDoc(
        "--keep-generations", ("EDGENODE_KEEP_GENERATIONS",), "Primary: old generations kept for lagging replicas."
    ),
    "stream_idle_timeout": SettingDoc(
        "--stream-idle-timeout", ("EDGENODE_STREAM_IDLE_TIMEOUT",), "Seconds before an idle Hrana stream expires."
    ),
    "transaction_timeout": SettingDoc(
        "--transaction-timeout",
        ("EDGENODE_TRANSACTION_TIMEOUT",),
        "Seconds a Hrana transaction may hold the write lock.",
    ),
    "idempotency_retention": SettingDoc(
        "--idempotency-retention",
        ("EDGENODE_IDEMPOTENCY_RETENTION",),
        "Seconds an Idempotency-Key is remembered; a retry later than that writes again.",
    ),
    "migrate": SettingDoc("--migrate/--no-migrate", ("EDGENODE_MIGRATE",), "Apply sql/ migrations on start."),
    "log_level": SettingDoc("--log-level", ("EDGENODE_LOG_LEVEL",), "debug, info, warning or error."),
}

_EXPECTED = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _coerce_env(name: str, raw: str) -> Any:
    """Environment values are strings; turn them into what the field wants before validation."""
    default = getattr(Settings(), name)
    field_type = type(default) if default is not None else str
    if field_type is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        return raw
    if field_type is int:
        try:
            return int(raw)
        except ValueError:
            return raw
    if field_type is float:
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


def _validate(settings: Settings) -> None:
    def fail(name: str, expected: str, value: Any) -> None:
        raise ConfigError(f"invalid setting {name} ({SETTINGS_DOC[name].flag}): got {value!r}, expected {expected}")

    if not 0 < settings.port < 65536:
        fail("port", "a TCP port between 1 and 65535", settings.port)
    if settings.profile not in PROFILES:
        fail("profile", "one of " + ", ".join(PROFILES), settings.profile)
    positive_ints = ("max_body_bytes", "max_connections", "max_rows", "query_timeout_ms", "read_connections")
    for name in (*positive_ints, "generation_max_frames"):
        if getattr(settings, name) <= 0:
            fail(name, "a positive integer", getattr(settings, name))
    if settings.keep_generations < 0:
        fail("keep_generations", "zero or more", settings.keep_generations)
    for name in (
        "sync_interval",
        "sync_timeout",
        "max_lag",
        "stream_idle_timeout",
        "transaction_timeout",
        "idempotency_retention",
        "header_timeout",
        "body_timeout",
    ):
        if getattr(settings, name) <= 0:
            fail(name, "a positive number of seconds", getattr(settings, name))
    if settings.primary_url is not None and not settings.primary_url.startswith(("http://", "https://", "libsql://")):
        fail("primary_url", "an http://, https:// or libsql:// URL", settings.primary_url)
    for name in ("auth_token", "read_token", "primary_token"):
        value = getattr(settings, name)
        if value is not None and (value == "" or value != value.strip()):
            fail(name, "a non-empty token without surrounding spaces", value)
    if settings.auth_token and settings.auth_token == settings.read_token:
        fail("read_token", "a token different from auth_token", "<same as auth_token>")


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Resolve settings. `flags` holds only the options given on the command line."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}

    env_values: dict[str, Any] = {}
    for name, doc in SETTINGS_DOC.items():
        for var in doc.env:
            if env.get(var):
                env_values[name] = _coerce_env(name, env[var])
                break

    data_dir = flags.get("data_dir") or env_values.get("data_dir") or Settings().data_dir
    path = config_file or env.get("EDGENODE_CONFIG")
    explicit = path is not None
    path = path or str(Path(data_dir) / "edgenode.toml")
    if Path(path).is_file():
        try:
            file_values = tomllib.loads(Path(path).read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        unknown = sorted(set(file_values) - set(SETTINGS_DOC))
        if unknown:
            raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
        merged.update(file_values)
    elif explicit:
        raise ConfigError(f"config file {path} does not exist")

    merged.update(env_values)
    merged.update(flags)
    try:
        settings = msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        name = str(exc).rsplit("$.", 1)[-1].strip("`'\" ") if "$." in str(exc) else "?"
        doc = SETTINGS_DOC.get(name)
        where = f" ({doc.flag}, {'/'.join(doc.env)})" if doc else ""
        default = getattr(Settings(), name, None)
        expected = _EXPECTED.get(type(default), "a valid value")
        raise ConfigError(f"invalid setting {name}{where}: {exc}; expected {expected}") from exc
    _validate(settings)
    return settings
