"""Replica mode: the node keeps an embedded libSQL replica of a primary (Turso or `edgenode primary`).

Modules, one job each:
  database.py    `ReplicaDatabase`: lifecycle, reads (local), writes (through the forwarder),
                 freshness waits, status; owns the pieces below
  connection.py  what runs in the child process that owns the replica's one libSQL connection
  relay.py       helper process the client's sync requests go through: deadlines, no 5xx retries
                 under the GIL, catch-ups cut into slices at commit boundaries
  scheduler.py   the node's own sync loop: interval, backoff with jitter, one sync at a time,
                 "a sync that starts after now" and "until the replica holds a position" for
                 waiters, the state machine
  watcher.py     long-poll on the primary (`/sync/G/F+1/F+2?wait_ms=`): sync as soon as a commit lands
  bootstrap.py   resumable, verified download of `/export/G` with progress, then placement
  files.py       the replica directory and the client's `-info` file (crc32 format of sync.rs)
  identity.py    which primary the replica belongs to; what makes a local replica unusable
  forwarder.py   every write to the primary (REST batches, Hrana statements and transactions):
                 one client, one error mapping, read-your-writes returning the position, counters
  combiner.py    group commit for plain forwarded writes: one primary transaction per group, a
                 savepoint per write, each write's own result or error
  sessions.py    Hrana sessions on a replica: local reads, the rest through the forwarder
  metrics.py     Prometheus collector (`POST /api/v1/sync` is `edgenode.api.sync`)
  migrate.py     `edgenode migrate` on a replica node runs on the primary

Data: `DATA_DIR/replica/` (replica.db, its -wal/-shm/-info, identity.json) and
`DATA_DIR/replica-bootstrap/` (a download in progress). Wiping touches nothing else.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ReplicaDatabase"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m edgenode.replica.relay` does not import the database layer first.
    if name == "ReplicaDatabase":
        from edgenode.replica.database import ReplicaDatabase

        return ReplicaDatabase
    raise AttributeError(name)
