"""One typed settings object, resolved as: CLI flags > environment > TOML file > defaults.

Every setting is a field of `Settings`; `SETTINGS_DOC` names its flag, environment variables
and meaning, and README's configuration table is checked against it by a test.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

import msgspec

from edgenode.origins import Origin, parse_origin

PROFILES = ("auto", "darwin-arm64", "linux-arm64", "linux-x86_64", "sqlite-defaults")


class ConfigError(Exception):
    """A setting has an invalid value; the message names the setting and the expected form."""


@dataclass(frozen=True)
class Doc:
    """A setting's help text; its flag is `--name-with-dashes` (`--x/--no-x` for switches) and its
    environment variable `EDGENODE_NAME`, then any `also_env` (read in that order)."""

    help: str
    also_env: tuple[str, ...] = ()


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every setting, declared once: its type, default and documentation."""

    data_dir: Annotated[str, Doc("Directory holding the database and indexes.")] = "./.edgenode"
    host: Annotated[str, Doc("Address to bind; non-loopback needs a token.")] = "127.0.0.1"
    port: Annotated[int, Doc("TCP port to listen on.")] = 8080
    auth_token: Annotated[str | None, Doc("Read-write bearer token.")] = None
    read_token: Annotated[str | None, Doc("Read-only bearer token.")] = None
    allowed_origins: Annotated[
        str | None,
        Doc(
            "Without a token: comma-separated browser origins (http://localhost:3000) allowed besides the "
            "server's own; other Origins and foreign Host names are refused (403)."
        ),
    ] = None
    jwt_key_file: Annotated[
        str | None,
        Doc("Ed25519 public key (PEM) accepting sqld-style JWTs; re-read when replaced (revokes old tokens)."),
    ] = None
    primary_url: Annotated[str | None, Doc("Primary to replicate; unset = standalone.", ("TURSO_DATABASE_URL",))] = None
    primary_token: Annotated[str | None, Doc("Bearer token for the primary.", ("TURSO_AUTH_TOKEN",))] = None
    write_mode: Annotated[
        Literal["forward", "local-first"],
        Doc(
            "Replica writes: forward (to the primary, visible here on return) or local-first (committed "
            "here at once, queued and pushed to the primary in the background; docs/local-first.md)."
        ),
    ] = "forward"
    max_push_bytes: Annotated[
        int,
        Doc(
            "local-first: largest Hrana request one queued write may need on its push (413 at acceptance "
            "above); match the primary's --max-body-bytes."
        ),
    ] = 4 * 1024 * 1024
    profile: Annotated[str, Doc("PRAGMA profile: " + ", ".join(PROFILES) + ".")] = "auto"
    max_body_bytes: Annotated[int, Doc("Largest request body (413 above).")] = 4 * 1024 * 1024
    header_timeout: Annotated[
        float, Doc("Seconds a request's headers may take to arrive (connection closed after).")
    ] = 10.0
    body_timeout: Annotated[float, Doc("Seconds a request body may take to arrive in full (408 after).")] = 30.0
    max_connections: Annotated[int, Doc("Concurrent connections or requests (503 above).")] = 1000
    max_rows: Annotated[int, Doc("Most rows one query may return.")] = 10_000
    query_timeout_ms: Annotated[int, Doc("Longest a read query may run.")] = 5_000
    read_connections: Annotated[int, Doc("Reader processes in standalone mode (REST and Hrana share them).")] = 2
    http_workers: Annotated[
        int,
        Doc(
            "Processes serving HTTP (standalone): 1 = the node process alone; more adds workers sharing the "
            "port that answer reads themselves and forward everything else to the node process."
        ),
    ] = 1
    sync_interval: Annotated[float, Doc("Seconds between replica syncs.")] = 1.0
    sync_timeout: Annotated[float, Doc("Seconds one sync may take.")] = 10.0
    max_lag: Annotated[float, Doc("Seconds of replica lag before /ready is 503.")] = 10.0
    long_poll: Annotated[
        bool, Doc("Replica: a held request to the primary triggers a sync on each commit (interval syncs stay).")
    ] = True
    generation_max_frames: Annotated[int, Doc("Primary: WAL frames before a new generation.")] = 2_000
    keep_generations: Annotated[int, Doc("Primary: old generations kept for lagging replicas.")] = 8
    encryption_key_file: Annotated[
        str | None,
        Doc("File holding the database's encryption key (standalone; or env EDGENODE_ENCRYPTION_KEY)."),
    ] = None
    allow_plaintext_derived: Annotated[
        bool, Doc("With an encryption key: accept that vector/text indexes and backups stay plaintext.")
    ] = False
    archive: Annotated[
        str | None, Doc("Primary: continuous archive for point-in-time restore, a directory or s3://BUCKET/PREFIX.")
    ] = None
    archive_s3_endpoint: Annotated[
        str | None, Doc("S3-compatible endpoint URL for an s3:// archive (default AWS); keys from AWS_* env.")
    ] = None
    archive_s3_region: Annotated[str, Doc("Region an s3:// archive signs requests for.")] = "us-east-1"
    archive_retention: Annotated[float, Doc("Seconds of history the archive keeps restorable.")] = 7 * 86_400.0
    archive_snapshot_interval: Annotated[
        float, Doc("Seconds between archive snapshots (a restore replays at most this much history).")
    ] = 86_400.0
    archive_snapshot_ratio: Annotated[
        float,
        Doc(
            "Primary: also snapshot at a rollover once the frames archived since the last snapshot exceed this "
            "times its size (bounds a restore's replay; 0 = by interval only)."
        ),
    ] = 0.5
    archive_s3_multipart_threshold: Annotated[
        int, Doc("Bytes above which an s3:// archive object is sent as a multipart upload.")
    ] = 64 << 20
    stream_idle_timeout: Annotated[float, Doc("Seconds before an idle Hrana stream expires.")] = 10.0
    transaction_timeout: Annotated[float, Doc("Seconds a Hrana transaction may hold the write lock.")] = 5.0
    idempotency_retention: Annotated[
        float, Doc("Seconds an Idempotency-Key is remembered; a retry later than that writes again.")
    ] = 86_400.0
    changes_retention: Annotated[
        int, Doc("Change-feed entries kept for change-stream subscribers to resume from (older cursors: resync).")
    ] = 100_000
    changes_buffer: Annotated[
        int, Doc("Change events waiting per subscriber before a slow one is disconnected (it resumes).")
    ] = 1_000
    changes_heartbeat: Annotated[
        float, Doc("Seconds between keep-alive comments on idle change streams, and between looks at the JWT key file.")
    ] = 15.0
    migrate: Annotated[bool, Doc("Apply sql/ migrations on start.")] = True
    log_level: Annotated[Literal["debug", "info", "warning", "error"], Doc("debug, info, warning or error.")] = "info"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def is_replica(self) -> bool:
        return bool(self.primary_url)

    @property
    def origins(self) -> frozenset[Origin]:
        """`allowed_origins`, parsed (checked by `load_settings`)."""
        parsed = (parse_origin(o) for o in (self.allowed_origins or "").split(",") if o.strip())
        return frozenset(o for o in parsed if o is not None)

    @property
    def binds_loopback(self) -> bool:
        """Whether `host` is reachable from this machine only (then no token is required)."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SettingDoc:
    flag: str
    env: tuple[str, ...]
    help: str


def _setting_docs() -> dict[str, SettingDoc]:
    hints = get_type_hints(Settings, include_extras=True)
    defaults = Settings()
    docs: dict[str, SettingDoc] = {}
    for name in Settings.__struct_fields__:
        doc = next(m for m in hints[name].__metadata__ if isinstance(m, Doc))
        dashed = name.replace("_", "-")
        flag = f"--{dashed}/--no-{dashed}" if isinstance(getattr(defaults, name), bool) else f"--{dashed}"
        docs[name] = SettingDoc(flag, (f"EDGENODE_{name.upper()}", *doc.also_env), doc.help)
    return docs


# Flags, environment variables and help of every setting, derived from `Settings` (CLI, README check).
SETTINGS_DOC: dict[str, SettingDoc] = _setting_docs()

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
    positive_ints = (
        "max_body_bytes",
        "max_push_bytes",
        "max_connections",
        "max_rows",
        "query_timeout_ms",
        "read_connections",
        "http_workers",
    )
    for name in (*positive_ints, "generation_max_frames", "archive_s3_multipart_threshold"):
        if getattr(settings, name) <= 0:
            fail(name, "a positive integer", getattr(settings, name))
    if settings.keep_generations < 0:
        fail("keep_generations", "zero or more", settings.keep_generations)
    if settings.archive_snapshot_ratio < 0:
        fail("archive_snapshot_ratio", "zero (off) or a positive number", settings.archive_snapshot_ratio)
    for name in (
        "sync_interval",
        "sync_timeout",
        "max_lag",
        "stream_idle_timeout",
        "transaction_timeout",
        "idempotency_retention",
        "archive_retention",
        "archive_snapshot_interval",
        "header_timeout",
        "body_timeout",
    ):
        if getattr(settings, name) <= 0:
            fail(name, "a positive number of seconds", getattr(settings, name))
    if settings.archive is not None and "://" in settings.archive and not settings.archive.startswith("s3://"):
        fail("archive", "a directory path or an s3://BUCKET/PREFIX URL", settings.archive)
    if settings.archive_s3_endpoint is not None and not settings.archive_s3_endpoint.startswith(
        ("http://", "https://")
    ):
        fail("archive_s3_endpoint", "an http:// or https:// URL", settings.archive_s3_endpoint)
    if settings.primary_url is not None and not settings.primary_url.startswith(("http://", "https://", "libsql://")):
        fail("primary_url", "an http://, https:// or libsql:// URL", settings.primary_url)
    if settings.write_mode == "local-first" and not settings.primary_url:
        fail(
            "write_mode",
            "forward on a node without --primary-url (local-first queues writes for a primary)",
            "local-first",
        )
    for name in ("auth_token", "read_token", "primary_token"):
        value = getattr(settings, name)
        if value is not None and (value == "" or value != value.strip()):
            fail(name, "a non-empty token without surrounding spaces", value)
    for origin in (settings.allowed_origins or "").split(","):
        if origin.strip() and parse_origin(origin) is None:
            fail("allowed_origins", "comma-separated origins like http://localhost:3000 (scheme://host[:port])", origin)
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
