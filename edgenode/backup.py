"""Online backups of a node's database and atomic restores into a data directory.

Backup: a separate apsw connection opens the node's database file (the node's own processes keep
owning it: this one never writes it, never checkpoints it, `SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE`),
starts one read transaction (WAL mode: the snapshot; writers go on appending to the WAL) and copies
the snapshot's pages with SQLite's online backup API in steps, for progress and Ctrl-C. Because the
read transaction stays open across the steps the backup never restarts when the node commits
(measured in bench/backup.py against `VACUUM INTO`). The copy goes to a temp file next to the target,
is switched to a single-file journal mode, checked (`integrity_check`, row counts per table equal to
the snapshot's), fsynced, then renamed: the target path holds either nothing or a verified backup.

The reported position is a lower bound taken just before the snapshot began: every commit
acknowledged before `snapshot_at` (and, for a primary, every frame up to `frame` of `generation`)
is in the backup; a few later ones may be too.

Only the database is backed up. Vector and text indexes (`vectors/`, `text/`) are derived from it and
rebuilt by the node after a restore; a primary's archived generations and a replica's `-info` belong
to the sync protocol, not to the data.

Restore: into a data directory without a database (or over one with `force`), through a staging
file inside the directory and a marker (`RESTORE_MARKER`) written first and removed last; the node
refuses to start while the marker exists (`check_not_half_restored`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import apsw
import msgspec

from edgenode.durable import atomic_write, fsync_dir

STANDALONE = "standalone"
PRIMARY = "primary"
REPLICA = "replica"
KINDS = (STANDALONE, PRIMARY, REPLICA)
# Where each kind keeps its database inside a data directory (edgenode.database, edgenode.primary,
# edgenode.replica.files own these names; repeated here as paths only, never opened for writing).
DB_PATHS = {STANDALONE: "edgenode.db", PRIMARY: "primary.db", REPLICA: "replica/replica.db"}
PRIMARY_STATE = "primary-state.json"
DERIVED_DIRS = ("vectors", "text")
RESTORE_MARKER = "RESTORE-IN-PROGRESS.json"
STEP_PAGES = 1024  # 4 MiB per step at the default page size: progress a few times a second
# SQLite's wal-index header (first 48 bytes of the -shm, stored twice): mxFrame is a native u32 at 16.
_SHM_HEADER = 48
_SHM_DMS_BYTE = 128  # every connection to a WAL database holds a shared lock on this byte of the -shm

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


class BackupError(Exception):
    """A backup or restore that cannot be done as asked; the message says why and what to do."""


class HalfRestored(BackupError):
    """The data directory holds an interrupted restore."""


@dataclass
class BackupReport:
    path: str
    kind: str
    bytes: int
    pages: int
    tables: dict[str, int]
    snapshot_at: float
    seconds: float
    # Primary: (generation, frame) of the primary; replica: the primary's position the replica had applied.
    generation: int | None = None
    frame: int | None = None
    note: str = ""
    restarts: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RestoreReport:
    path: str
    kind: str
    source: str
    bytes: int
    tables: dict[str, int]
    seconds: float
    removed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- locating and inspecting ---------------------------------------------------------------


def detect_kind(data_dir: Path) -> str:
    """Which database a data directory holds; several (a node switched modes) must be named."""
    found = [kind for kind in KINDS if (data_dir / DB_PATHS[kind]).exists()]
    if not found:
        raise BackupError(f"no database in {data_dir} (looked for {', '.join(DB_PATHS.values())})")
    if len(found) > 1:
        raise BackupError(f"{data_dir} holds several databases ({', '.join(found)}); choose one with --database")
    return found[0]


def _shm_frame(db_path: Path) -> int | None:
    """The WAL's last committed frame as the wal-index says right now (None: no consistent header)."""
    try:
        with open(db_path.with_name(db_path.name + "-shm"), "rb") as f:
            header = f.read(2 * _SHM_HEADER)
    except FileNotFoundError:
        return 0
    if len(header) < 2 * _SHM_HEADER or header[:_SHM_HEADER] != header[_SHM_HEADER:] or not header[12]:
        return None  # a writer is updating it: ask again
    return struct.unpack_from("=I", header, 16)[0]


def _primary_position(data_dir: Path) -> tuple[int, int] | None:
    try:
        state = msgspec.json.decode((data_dir / PRIMARY_STATE).read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    if state.get("rollover_to") is not None:
        return None  # a rollover is moving the WAL into the main file: ask again
    frame = _shm_frame(data_dir / DB_PATHS[PRIMARY])
    return None if frame is None else (int(state["generation"]), frame)


def _replica_position(data_dir: Path) -> tuple[int, int] | None:
    from edgenode.replica.files import InvalidInfo, ReplicaFiles

    try:
        position = ReplicaFiles(data_dir).read_info()
    except InvalidInfo:
        return None
    return position.generation, position.frame


def in_use(db_path: Path) -> bool:
    """Whether some process has the (WAL-mode) database open: it holds a lock on the -shm's DMS byte."""
    shm = db_path.with_name(db_path.name + "-shm")
    try:
        fd = os.open(shm, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_DMS_BYTE)
        return False
    finally:
        os.close(fd)


def _tables(conn: apsw.Connection) -> list[str]:
    # Virtual tables need their module (sqlite-vec, fts5); their shadow tables are counted instead.
    rows = conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name"
    ).fetchall()
    return [r[0] for r in rows]


def row_counts(conn: apsw.Connection) -> dict[str, int]:
    return {
        name: conn.execute(f'SELECT count(*) FROM "{name.replace(chr(34), chr(34) * 2)}"').fetchall()[0][0]
        for name in _tables(conn)
    }


def verify(path: Path, expected: dict[str, int] | None = None) -> dict[str, int]:
    """integrity_check and row counts of a database file (not in WAL mode, opened read-only)."""
    try:
        conn = apsw.Connection(f"file:{path}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    except apsw.Error as exc:
        raise BackupError(f"{path} is not a readable SQLite database: {exc}") from exc
    try:
        problems = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if problems != ["ok"]:
            raise BackupError(f"{path} fails integrity_check: {'; '.join(problems[:5])}")
        counts = row_counts(conn)
    except apsw.Error as exc:
        raise BackupError(f"{path} is not a usable SQLite database: {exc}") from exc
    finally:
        conn.close()
    if expected is not None and counts != expected:
        diff = {
            t: (expected.get(t), counts.get(t))
            for t in expected.keys() | counts.keys()
            if expected.get(t) != counts.get(t)
        }
        raise BackupError(f"{path}: row counts differ from the source (table: expected, found): {diff}")
    return counts


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- backup --------------------------------------------------------------------------------


def _open_source(db_path: Path) -> apsw.Connection:
    # Read-write open (a read-only one cannot create a missing -shm), but it never writes the file:
    # query_only, no checkpoint on close, no autocheckpoint (a primary's main file is its
    # generation's base and must not change behind it).
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READWRITE)
    conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
    conn.setbusytimeout(5000)
    conn.execute("PRAGMA query_only=1")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


def backup(
    data_dir: Path,
    dest: Path,
    *,
    kind: str | None = None,
    progress: Progress | None = None,
    step_pages: int = STEP_PAGES,
) -> BackupReport:
    """Copy the data directory's database, as of one moment, to `dest` (verified, then renamed into place)."""
    started = time.monotonic()
    kind = kind or detect_kind(data_dir)
    db_path = data_dir / DB_PATHS[kind]
    if not db_path.exists():
        raise BackupError(f"no {kind} database at {db_path}")
    dest = dest.resolve()
    if dest.is_dir():
        raise BackupError(f"{dest} is a directory; give the backup file's path")
    if not dest.parent.is_dir():
        raise BackupError(f"{dest.parent} does not exist")
    position_of = {PRIMARY: _primary_position, REPLICA: _replica_position}.get(kind)
    tmp = dest.with_name(f".{dest.name}.partial")
    for stale in (tmp, tmp.with_name(tmp.name + "-journal")):
        stale.unlink(missing_ok=True)
    src = _open_source(db_path)
    try:
        mode = src.execute("PRAGMA journal_mode").fetchall()[0][0]
        note = "" if mode == "wal" else f"journal_mode={mode}: writers waited for the copy"
        position, snapshot_at, restarts = _begin_snapshot(src, data_dir, position_of)
        if kind == REPLICA:
            note = "a replica's copy of its primary's database at the generation/frame it had applied"
        try:
            dst = apsw.Connection(str(tmp))
            try:
                page_size = src.execute("PRAGMA page_size").fetchall()[0][0]
                with dst.backup("main", src, "main") as copy:
                    while not copy.done:
                        copy.step(step_pages)
                        if progress is not None:
                            progress((copy.page_count - copy.remaining) * page_size, copy.page_count * page_size)
                    pages = copy.page_count
                expected = row_counts(src)
                # One self-contained file: no -wal beside it to lose when it is copied elsewhere.
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
        finally:
            src.execute("COMMIT")
        tables = verify(tmp, expected)
        _fsync_file(tmp)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    return BackupReport(
        path=str(dest),
        kind=kind,
        bytes=dest.stat().st_size,
        pages=pages,
        tables=tables,
        snapshot_at=snapshot_at,
        seconds=round(time.monotonic() - started, 3),
        generation=position[0] if position else None,
        frame=position[1] if position else None,
        note=note,
        restarts=restarts,
    )


def _begin_snapshot(
    src: apsw.Connection, data_dir: Path, position_of: Callable[[Path], tuple[int, int] | None] | None
) -> tuple[tuple[int, int] | None, float, int]:
    """Start the read transaction that is the backup's snapshot, with a position it contains.

    The position read just before it began is a lower bound; read again after, it must name the
    same generation (no rollover in between) or the snapshot's generation would be unknown.
    """
    for attempt in range(200):
        snapshot_at = time.time()
        before = position_of(data_dir) if position_of else None
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_schema").fetchall()  # the read transaction starts here
        if position_of is None:
            return None, snapshot_at, attempt
        after = position_of(data_dir)
        if before is not None and after is not None and before[0] == after[0] and before[1] <= after[1]:
            return before, snapshot_at, attempt
        src.execute("COMMIT")
        time.sleep(0.01)
    raise BackupError("the database's position kept changing (a rollover or resync in progress); try again")


# -- restore -------------------------------------------------------------------------------


def _marker(data_dir: Path) -> Path:
    return data_dir / RESTORE_MARKER


def _staging(target: Path) -> Path:
    return target.with_name(f".{target.name}.restoring")


def check_not_half_restored(data_dir: Path) -> None:
    """Refuse a data directory an interrupted restore left behind (call before opening its database)."""
    marker = _marker(data_dir)
    if not marker.exists():
        return
    try:
        info = msgspec.json.decode(marker.read_bytes())
        source, target = info["source"], info["target"]
    except (OSError, msgspec.DecodeError, KeyError, TypeError):
        source, target = "BACKUP", "?"
    raise HalfRestored(
        f"{data_dir} holds an interrupted restore of {target} (from {source}); its database may be incomplete. "
        f"Run `edgenode restore --from {source} --data-dir {data_dir}` again to finish it, or remove "
        f"{marker} and {_staging(data_dir / target) if target != '?' else 'the .*.restoring file'} "
        "to keep the directory as it is."
    )


def restore(
    source: Path,
    data_dir: Path,
    *,
    kind: str = STANDALONE,
    force: bool = False,
    progress: Progress | None = None,
) -> RestoreReport:
    """Place a verified copy of `source` as the data directory's database in one rename."""
    started = time.monotonic()
    if kind not in (STANDALONE, PRIMARY):
        raise BackupError(
            f"a {kind} database is not restored: a replica bootstraps from its primary; "
            "restore the backup as a standalone node or as the primary"
        )
    source = source.resolve()
    if not source.is_file():
        raise BackupError(f"no backup file at {source}")
    expected = verify(source)
    target = data_dir / DB_PATHS[kind]
    marker, staging = _marker(data_dir), _staging(target)
    resuming = marker.exists()
    existing = [p for p in (target, target.with_name(target.name + "-wal")) if p.exists()]
    if existing and not (force or resuming):
        raise BackupError(
            f"{target} already exists; restore into an empty data directory, or pass --force to replace it "
            "(its current contents are lost)"
        )
    if in_use(target):
        raise BackupError(f"{target} is open by a running process; stop the node first")
    data_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(
        marker, msgspec.json.encode({"source": str(source), "target": DB_PATHS[kind], "started_at": time.time()})
    )
    total = source.stat().st_size
    done = 0
    with open(source, "rb") as src, open(staging, "wb") as out:
        while chunk := src.read(4 << 20):
            out.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        out.flush()
        os.fsync(out.fileno())
    tables = verify(staging, expected)
    removed: list[str] = []
    # Files that belong to the database being replaced: an old -wal would be replayed into the new file.
    stale = [target.with_name(target.name + suffix) for suffix in ("-wal", "-shm")]
    if kind == PRIMARY:
        # Without its state the primary starts generation 1 with a new database id: replicas re-bootstrap.
        stale.append(data_dir / PRIMARY_STATE)
        stale.extend(sorted((data_dir / "generations").glob("*.frames")))
    for path in stale:
        if path.exists():
            path.unlink()
            removed.append(str(path))
    for name in DERIVED_DIRS:  # indexes of the old database: the node rebuilds them from the new one
        if (data_dir / name).exists():
            shutil.rmtree(data_dir / name)
            removed.append(str(data_dir / name))
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)
    fsync_dir(target.parent)
    marker.unlink()
    fsync_dir(data_dir)
    return RestoreReport(
        path=str(target.resolve()),
        kind=kind,
        source=str(source),
        bytes=total,
        tables=tables,
        seconds=round(time.monotonic() - started, 3),
        removed=removed,
    )
