"""The replica's files on disk and the libsql client's `-info` progress file.

Layout under `DATA_DIR/replica/`:
  replica.db (+ -wal, -shm)   the embedded replica, opened only by the node's libSQL connection
  replica.db-info             the libsql client's progress: generation and last applied commit frame
  identity.json               which primary this replica belongs to; written last when placing a
                              replica, so a replica without it is an interrupted placement
`DATA_DIR/replica-bootstrap/` holds a download in progress (`export.partial` + `export.json`).

The replica lives in its own directory so that wiping it can never touch a standalone database
(`DATA_DIR/edgenode.db`) or the vector indexes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import msgspec

from edgenode.durable import atomic_write, fsync_dir

REPLICA_DIR = "replica"
BOOTSTRAP_DIR = "replica-bootstrap"
DB_NAME = "replica.db"
IDENTITY_NAME = "identity.json"
INFO_VERSION = 0


class InfoFile(msgspec.Struct):
    # Field order matters only for readability; the client parses by name.
    hash: int
    version: int
    durable_frame_num: int
    generation: int


@dataclass(frozen=True, order=True)
class Position:
    """Where the replica is: the generation and the last commit frame applied in it."""

    generation: int
    frame: int


def info_hash(version: int, frame: int, generation: int) -> int:
    # sync.rs MetadataJson::calculate_hash: crc32 of the three u32 fields, little-endian, in this order.
    return zlib.crc32(struct.pack("<III", version, frame, generation))


class InvalidInfo(Exception):
    """The `-info` file is missing, unreadable or fails its checksum: the replica must be rebuilt."""


class ReplicaFiles:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / REPLICA_DIR
        self.staging = data_dir / BOOTSTRAP_DIR
        self.db = self.dir / DB_NAME
        self.info = self.dir / (DB_NAME + "-info")
        self.wal = self.dir / (DB_NAME + "-wal")
        self.shm = self.dir / (DB_NAME + "-shm")
        self.identity = self.dir / IDENTITY_NAME

    def read_info(self) -> Position:
        try:
            info = msgspec.json.decode(self.info.read_bytes(), type=InfoFile)
        except (OSError, msgspec.DecodeError) as exc:
            raise InvalidInfo(f"cannot read {self.info.name}: {exc}") from exc
        if info.version != INFO_VERSION:
            raise InvalidInfo(f"{self.info.name} has version {info.version}, expected {INFO_VERSION}")
        if info.hash != info_hash(info.version, info.durable_frame_num, info.generation):
            raise InvalidInfo(f"{self.info.name} fails its checksum")
        if info.generation == 0:
            raise InvalidInfo(f"{self.info.name} names generation 0")
        return Position(info.generation, info.durable_frame_num)

    def write_info(self, position: Position) -> None:
        info = InfoFile(
            hash=info_hash(INFO_VERSION, position.frame, position.generation),
            version=INFO_VERSION,
            durable_frame_num=position.frame,
            generation=position.generation,
        )
        atomic_write(self.info, msgspec.json.encode(info))

    def exists(self) -> bool:
        return any(p.exists() for p in (self.db, self.info, self.identity))

    def wipe(self) -> None:
        """Remove the replica. The identity goes first: from then on the directory reads as invalid."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for path in (self.identity, self.info, self.db, self.wal, self.shm):
            path.unlink(missing_ok=True)
        for stray in self.dir.glob(".tmp.*"):  # the client's own atomic writes, interrupted
            stray.unlink(missing_ok=True)
        fsync_dir(self.dir)

    def size_bytes(self) -> tuple[int, int]:
        size = self.db.stat().st_size if self.db.exists() else 0
        wal = self.wal.stat().st_size if self.wal.exists() else 0
        return size, wal
