"""What runs in the process that owns the replica's libSQL connection (see `edgenode.owner`).

The binding holds the GIL for every call, `sync()` included, so the connection lives in a child
process: the node's event loop never waits on it. These are module-level functions because the
owner sends them to the child by reference; arguments and results pickle.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import libsql

from edgenode.engine import read_schema
from edgenode.pragmas import PragmaReport, Profile, apply_profile
from edgenode.replica.files import InvalidInfo, Position, ReplicaFiles
from edgenode.tls import client_context

# Messages of the libsql client that mean the local replica can no longer follow the primary.
_RESYNC_MARKERS = {
    "invalid local state": "invalid_local_state",
    "server returned a conflict": "conflict",
    "lower generation than local": "primary_behind",
    "failed to verify metadata": "invalid_local_state",
    "status=410": "generation_gone",
    "wal_insert_frame failed": "invalid_local_state",
    "walconflict": "conflict",
}
# Pragmas the libsql synced connection sends to the primary even with a value, or that the sync
# machinery owns (it checkpoints at generation changes and needs WAL frame N to be sync frame N).
NOT_ON_REPLICA = {
    "foreign_keys": "the libsql synced connection sends it to the primary (the replica takes no local writes)",
    "journal_mode": "the sync machinery keeps the replica in WAL mode",
    "wal_autocheckpoint": "checkpoints are left to the sync machinery (at generation changes)",
}

_relay_http: httpx.Client | None = None


class ResyncNeeded(Exception):
    """The replica cannot follow the primary as it is; `reason` labels the metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (ResyncNeeded, (self.reason, str(self)))


def classify(message: str) -> str | None:
    lowered = message.lower()
    for marker, reason in _RESYNC_MARKERS.items():
        if marker in lowered:
            return reason
    return None


def apply_replica_profile(profile: Profile, conn: Any) -> PragmaReport:
    """Apply what the synced connection takes locally; readbacks go through pragma_x() (local),
    because the client sends a bare `PRAGMA x` to the primary."""

    def execute(sql: str) -> list[tuple[Any, ...]]:
        text = sql.strip()
        name = text.split()[1].lower()
        if "=" not in text:
            return list(conn.execute(f"SELECT * FROM pragma_{name}").fetchall() or [])
        return list(conn.execute(text).fetchall() or [])

    report = apply_profile(profile, execute, skip=frozenset(NOT_ON_REPLICA))
    for setting in profile.settings:
        if setting.pragma in NOT_ON_REPLICA:
            report.refused[setting.name] = NOT_ON_REPLICA[setting.pragma]
    return report


def open_replica(
    data_dir: str, relay_url: str, token: str, profile: Profile
) -> tuple[Any, tuple[Position, list[str], PragmaReport]]:
    files = ReplicaFiles(Path(data_dir))
    conn = libsql.connect(str(files.db), sync_url=relay_url, auth_token=token, isolation_level=None)
    report = apply_replica_profile(profile, conn)
    _relay_client()  # now, while the relay starts, rather than in the first sync
    return conn, (files.read_info(), read_schema(conn), report)


def _relay_client() -> httpx.Client:
    global _relay_http
    if _relay_http is None:
        _relay_http = httpx.Client(timeout=2.0, verify=client_context())
    return _relay_http


def _relay(relay_url: str, seconds: float) -> dict[str, Any]:
    return _relay_client().put(f"{relay_url}/_relay/deadline", content=str(seconds)).json()


def pull(
    conn: Any, data_dir: str, relay_url: str, timeout: float
) -> tuple[Position, Position, list[str] | None, float, bool]:
    """One sync through the relay: (before, after, new schema or None, seconds, cut short)."""
    files = ReplicaFiles(Path(data_dir))
    before = files.read_info()
    _relay(relay_url, timeout)
    began = time.monotonic()
    ended: dict[str, Any] = {}
    failure: str | None = None
    try:
        conn.sync()
    except ValueError as exc:
        failure = str(exc)
    finally:
        duration = time.monotonic() - began
        try:
            ended = _relay(relay_url, 0)
        except (httpx.HTTPError, ValueError):
            pass
    truncated = bool(ended.get("truncated"))
    if ended.get("database_changed"):
        raise ResyncNeeded("primary_changed", str(ended["database_changed"]))
    if failure is not None:
        reason = classify(failure)
        if reason:
            raise ResyncNeeded(reason, failure) from None
        raise ValueError(failure) from None
    try:
        after = files.read_info()
    except InvalidInfo as exc:
        raise ResyncNeeded("invalid_local_state", str(exc)) from None
    schema = read_schema(conn) if after != before else None
    return before, after, schema, duration, truncated
