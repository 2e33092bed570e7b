"""Online backups of a node's database and atomic restores into a data directory.

Backup of a standalone node or a replica: a separate apsw connection opens the node's database
file (the node's own processes keep owning it: this one never writes it, never checkpoints it,
`SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE`), starts one read transaction (WAL mode: the snapshot; writers go
on appending to the WAL) and copies the snapshot's pages with SQLite's online backup API in steps,
for progress and Ctrl-C. Because the read transaction stays open across the steps the backup never
restarts when the node commits (write latency meanwhile: bench/backup.py, next to `VACUUM INTO`).
Every backup goes to a temp file next to the target, is switched to a single-file journal mode,
checked (`integrity_check`; row counts per table equal to the snapshot's), fsynced, then renamed:
the target path holds either nothing or a verified backup.

A primary is copied without any read transaction (one would stall its next rollover, whose
checkpoint waits for every reader, and the writes queued behind it): its main file is the
generation's base and its committed WAL frames never change within a generation, so both are
copied as bytes and SQLite's recovery folds the frames into the copy (`_copy_primary`).

The reported position: every commit acknowledged before `snapshot_at` is in the backup (a few later
ones may be too); a primary's backup holds exactly frames 1..`frame` of `generation`, a replica's at
least what its `-info` said it had applied (`generation`, `frame`) when the snapshot began.

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
from edgenode.encryption import EncryptionError, Secret, check_database, is_encrypted

STANDALONE = "standalone"
PRIMARY = "primary"
REPLICA = "replica"
KINDS = (STANDALONE, PRIMARY, REPLICA)
# Where each kind keeps its database inside a data directory (edgenode.database, edgenode.primary,
# edgenode.replica.files own these names; repeated here as paths only, never opened for writing).
OUTBOX_NAME = "outbox.db"  # a local-first replica's queue (edgenode.replica.outbox.NAME)
DB_PATHS = {STANDALONE: "edgenode.db", PRIMARY: "primary.db", REPLICA: "replica/replica.db"}
PRIMARY_STATE = "primary-state.json"
DERIVED_DIRS = ("vectors", "text")
RESTORE_MARKER = "RESTORE-IN-PROGRESS.json"
STEP_PAGES = 1024  # 4 MiB per step at the default page size: progress a few times a second
# SQLite's wal-index header (first 48 bytes of the -shm, stored twice): mxFrame is a native u32 at 16.
_SHM_HEADER = 48
_SHM_DMS_BYTE = 128  # every connection to a WAL database holds a shared lock on this byte of the -shm

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


class BackupRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /api/v1/backup` (edgenode.backup_http)."""

    # A file name inside DATA_DIR/backups/ (default: <kind>-<UTC time>.db).
    name: str | None = None


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
    # A local-first replica: the write ids of its acknowledged writes that the backup holds on top of
    # the primary's position (not yet in the state it pulled); None for every other kind of node.
    local_writes: list[str] | None = None

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
    db_path = data_dir / DB_PATHS[PRIMARY]
    if in_use(db_path):
        frame = _shm_frame(db_path)
    else:
        # No process has it open: the -shm may be stale (a kill -9, a reboot); judge the WAL as
        # SQLite's recovery will.
        from edgenode.primary.wal import WalReader

        frame = WalReader(db_path.with_name(db_path.name + "-wal")).refresh().committed
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


def _tables(conn: Any) -> list[str]:
    # Virtual tables need their module (sqlite-vec, fts5); their shadow tables are counted instead.
    rows = conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name"
    ).fetchall()
    return [r[0] for r in rows]


def row_counts(conn: Any) -> dict[str, int]:
    return {
        name: conn.execute(f'SELECT count(*) FROM "{name.replace(chr(34), chr(34) * 2)}"').fetchall()[0][0]
        for name in _tables(conn)
    }


def verify(path: Path, expected: dict[str, int] | None = None, key: Secret | None = None) -> dict[str, int]:
    """integrity_check and row counts of a database file (not in WAL mode, opened read-only); an
    encrypted one through libSQL with its key."""
    errors: tuple[type[Exception], ...] = (apsw.Error,)
    try:
        if key is not None:
            import libsql

            errors = (apsw.Error, ValueError)
            conn: Any = libsql.connect(f"file:{path}?mode=ro", encryption_key=key.value)
        else:
            conn = apsw.Connection(f"file:{path}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    except errors as exc:
        raise BackupError(f"{path} is not a readable SQLite database: {exc}") from exc
    try:
        problems = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if problems != ["ok"]:
            raise BackupError(f"{path} fails integrity_check: {'; '.join(problems[:5])}")
        counts = row_counts(conn)
    except errors as exc:
        hint = " (wrong encryption key?)" if key is not None else ""
        raise BackupError(f"{path} is not a usable SQLite database{hint}: {exc}") from exc
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


def _check_header(path: Path) -> None:
    """Fail before anything is written when the file is plainly not a SQLite database."""
    with open(path, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise BackupError(f"{path} is not a SQLite database (an encrypted or foreign file?)")


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
    primary_position: Callable[[], tuple[int, int] | None] | None = None,
    key: Secret | None = None,
    pulls_held: bool = False,
) -> BackupReport:
    """Copy the data directory's database, as of one moment, to `dest` (verified, then renamed into place).

    `primary_position`: the primary's process backing itself up says where it is (it must not probe
    its own -shm); another process reads the -shm or the WAL instead. `pulls_held`: the node itself
    backs up and holds its pulls meanwhile (a running local-first replica needs that)."""
    started = time.monotonic()
    kind = kind or detect_kind(data_dir)
    db_path = data_dir / DB_PATHS[kind]
    if not db_path.exists():
        raise BackupError(f"no {kind} database at {db_path}")
    # The outbox (plain SQLite in WAL mode, open while the node runs) tells; libsql's replica file does not.
    if kind == REPLICA and not pulls_held and in_use(data_dir / OUTBOX_NAME):
        raise BackupError(
            f"{data_dir} is a running local-first replica: its pulls cut back the WAL a copy reads; back it up "
            "with POST /api/v1/backup (the node holds its pulls meanwhile), or stop the node first"
        )
    encrypted = bool(is_encrypted(db_path))
    if encrypted and key is None:
        raise BackupError(
            f"{db_path} is encrypted at rest: give its key (EDGENODE_ENCRYPTION_KEY or --encryption-key-file); "
            "the backup is encrypted with it too"
        )
    if key is not None and not encrypted:
        # The backup would be plaintext while its maker believes it encrypted (serve refuses the same).
        raise BackupError(
            f"{db_path} is a plaintext database but an encryption key is set; its backup would be plaintext: "
            "run without EDGENODE_ENCRYPTION_KEY / --encryption-key-file"
        )
    if encrypted:
        assert key is not None
        try:
            check_database(db_path, key)  # read-only probe: a wrong key is one line, not a traceback
        except EncryptionError:
            raise BackupError(
                f"{db_path} cannot be read with this encryption key (wrong key?); nothing was written"
            ) from None
    dest = dest.resolve()
    if dest.is_dir():
        raise BackupError(f"{dest} is a directory; give the backup file's path")
    if dest.exists() and not dest.is_file():
        # The copy is renamed over `dest`: run as root, that replaced a device node (/dev/full).
        raise BackupError(f"{dest} is not a regular file (a device, FIFO or socket); give the backup file's path")
    if not dest.parent.is_dir():
        raise BackupError(f"{dest.parent} does not exist")
    tmp = dest.with_name(f".{dest.name}.partial")
    _remove_copy(tmp)
    local_writes: list[str] | None = None
    try:
        if kind == PRIMARY:
            position_of = primary_position or (lambda: _primary_position(data_dir))
            position, snapshot_at, pages, restarts = _copy_primary(data_dir, tmp, progress, position_of)
            expected, note = None, ""
        elif encrypted:
            assert key is not None
            position, snapshot_at, pages, restarts, expected, note = _copy_encrypted(db_path, tmp, key, progress)
        else:
            position, snapshot_at, pages, restarts, expected, note, local_writes = _copy_snapshot(
                data_dir, db_path, tmp, kind, progress, step_pages
            )
        tables = verify(tmp, expected, key if encrypted else None)
        _fsync_file(tmp)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        _remove_copy(tmp)
        raise
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
        local_writes=local_writes,
    )


def _remove_copy(tmp: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        tmp.with_name(tmp.name + suffix).unlink(missing_ok=True)


def _copy_snapshot(
    data_dir: Path, db_path: Path, tmp: Path, kind: str, progress: Progress | None, step_pages: int
) -> tuple[tuple[int, int] | None, float, int, int, dict[str, int], str, list[str] | None]:
    """Standalone and replica: the pages of one read transaction, with the backup API in steps."""
    position_of = _replica_position if kind == REPLICA else None
    src = _open_source(db_path)
    local_writes = None
    try:
        mode = src.execute("PRAGMA journal_mode").fetchall()[0][0]
        note = "" if mode == "wal" else f"journal_mode={mode}: writers waited for the copy"
        if kind == REPLICA:
            note = "a replica's copy of its primary's database at the generation/frame it had applied"
        position, snapshot_at, restarts = _begin_snapshot(src, data_dir, position_of)
        if kind == REPLICA:
            # Read after the snapshot began: a local-first write commits to the outbox just before the
            # replica, so these are the writes the snapshot holds beyond the pulled position.
            local_writes = _local_writes(data_dir)
            if local_writes:
                note = (
                    f"a local-first replica's database: its primary's at the generation/frame it had pulled, "
                    f"plus {len(local_writes)} acknowledged local writes the primary has not decided yet "
                    "(local_writes; the primary may still refuse some)"
                )
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
    finally:
        src.close()
    return position, snapshot_at, pages, restarts, expected, note, local_writes


def _local_writes(data_dir: Path) -> list[str] | None:
    """The write ids a local-first replica replays on top of its pulled state (None: not local-first)."""
    from edgenode.replica.outbox import write_id

    path = data_dir / OUTBOX_NAME
    if not path.exists():
        return None
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.setbusytimeout(5000)
        meta = dict(conn.execute("SELECT name, value FROM meta WHERE name IN ('node_id', 'pulled_hwm')").fetchall())
        rows = conn.execute(
            "SELECT seq FROM entries WHERE state IN ('pending', 'pushed') AND seq > ? ORDER BY seq",
            (int(meta.get("pulled_hwm") or 0),),
        ).fetchall()
    finally:
        conn.close()
    return [write_id(str(meta["node_id"]), int(seq)) for (seq,) in rows]


def _copy_encrypted(
    db_path: Path, tmp: Path, key: Secret, progress: Progress | None
) -> tuple[None, float, int, int, None, str]:
    """An encrypted standalone database: libSQL (SQLite3 Multiple Ciphers) has no backup API in the
    Python binding and `VACUUM INTO` from a keyed connection writes plaintext, so the copy is made with
    `VACUUM INTO` (one read transaction: a consistent snapshot) and re-keyed at once (`PRAGMA rekey`)
    with the same key, before it is verified and renamed into place."""
    import libsql

    quoted = key.value.replace("'", "''")
    snapshot_at = time.time()
    src = libsql.connect(str(db_path), isolation_level=None, encryption_key=key.value)
    try:
        src.execute(f"VACUUM INTO '{str(tmp).replace(chr(39), chr(39) * 2)}'")
    finally:
        src.close()
    copy = libsql.connect(str(tmp), isolation_level=None)
    try:
        copy.execute("PRAGMA journal_mode=DELETE").fetchall()
        if copy.execute(f"PRAGMA rekey='{quoted}'").fetchall() != [("ok",)]:
            raise BackupError("could not encrypt the backup copy (PRAGMA rekey failed)")
    finally:
        copy.close()
    if is_encrypted(tmp) is not True:
        raise BackupError("the backup copy is not encrypted after PRAGMA rekey; refusing to keep it")
    size = tmp.stat().st_size
    if progress is not None:
        progress(size, size)
    note = (
        "encrypted with the node's key (VACUUM INTO, then PRAGMA rekey: the copy is plaintext for a moment "
        "in the .partial file beside the target); restore it with the same key"
    )
    return None, snapshot_at, size // 4096, 0, None, note


def _fingerprint(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _copy_range(src: Path, dest: Path, length: int, done: int, total: int, progress: Progress | None) -> int:
    with open(src, "rb") as f, open(dest, "wb") as out:
        remaining = length
        while remaining:
            chunk = f.read(min(remaining, 4 << 20))
            if not chunk:
                raise BackupError(f"{src} is shorter than expected")
            out.write(chunk)
            remaining -= len(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return done


def _copy_primary(
    data_dir: Path, tmp: Path, progress: Progress | None, position_of: Callable[[], tuple[int, int] | None]
) -> tuple[tuple[int, int], float, int, int]:
    """A primary without any read transaction: its main file is the generation's base and changes only
    at a rollover, its WAL frames 1..N are final once committed. So the base and the committed frames
    are copied as bytes, the generation checked unchanged after, and SQLite's own recovery then
    folds the frames into the copy (checking each frame's checksum: every copied frame must count).
    A read transaction held by another process would instead stall the primary's next rollover
    (its checkpoint waits for every reader) and, with it, the primary's writes."""
    from edgenode.primary.wal import FRAME_SIZE, WAL_HEADER_SIZE

    db_path = data_dir / DB_PATHS[PRIMARY]
    wal_path = db_path.with_name(db_path.name + "-wal")
    tmp_wal = tmp.with_name(tmp.name + "-wal")
    for attempt in range(100):
        snapshot_at = time.time()
        position = position_of()
        if position is None:
            time.sleep(0.02)
            continue
        generation, frames = position
        base = _fingerprint(db_path)
        wal_bytes = WAL_HEADER_SIZE + frames * FRAME_SIZE if frames else 0
        total = base[0] + wal_bytes
        try:
            done = _copy_range(db_path, tmp, base[0], 0, total, progress)
            if frames:
                _copy_range(wal_path, tmp_wal, wal_bytes, done, total, progress)
        except (BackupError, FileNotFoundError):
            pass  # a rollover truncated the WAL under the copy: the check below retries
        after = position_of()
        if after is None or after[0] != generation or _fingerprint(db_path) != base or not tmp.exists():
            _remove_copy(tmp)
            time.sleep(0.02)
            continue
        conn = apsw.Connection(str(tmp))
        try:
            if frames:
                busy, in_wal, moved = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
                if busy or in_wal != frames or moved != frames:
                    raise BackupError(
                        f"the copy of the primary's WAL holds {in_wal} valid frames, {frames} were committed"
                    )
            conn.execute("PRAGMA journal_mode=DELETE")
            pages = conn.execute("PRAGMA page_count").fetchall()[0][0]
        finally:
            conn.close()
        return (generation, frames), snapshot_at, pages, attempt
    raise BackupError("the primary rolled over during every attempt to copy it; try again")


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
        source, target, again = info["source"], info["target"], info.get("again", "")
    except (OSError, msgspec.DecodeError, KeyError, TypeError):
        source, target, again = "BACKUP", "?", ""
    raise HalfRestored(
        f"{data_dir} holds an interrupted restore of {target} (from {source}); its database may be incomplete. "
        f"Run `edgenode restore --from {source}{' ' + again if again else ''} --data-dir {data_dir}"
        f"{' --as primary' if target == DB_PATHS[PRIMARY] else ''}` again to finish it, or remove "
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
    key: Secret | None = None,
) -> RestoreReport:
    """Place a verified copy of `source` as the data directory's database in one rename."""
    source = source.resolve()
    if not source.is_file():
        raise BackupError(f"no backup file at {source}")
    if key is None:
        _check_header(source)
    elif is_encrypted(source) is False:
        raise BackupError(
            f"{source} is a plaintext backup but an encryption key is set: restore it without the key "
            "(an encrypted node is restored from its own, encrypted, backups)"
        )
    total = source.stat().st_size

    def copy(staging: Path) -> int:
        # The staging file is a byte copy, so checking it checks the backup too (one pass, not two).
        _copy_range(source, staging, total, 0, total, progress)
        return total

    return restore_built(copy, str(source), data_dir, kind=kind, force=force, key=key)


def restore_built(
    build: Callable[[Path], int],
    source: str,
    data_dir: Path,
    *,
    kind: str = STANDALONE,
    force: bool = False,
    again: str = "",
    key: Secret | None = None,
) -> RestoreReport:
    """The one way a database is placed into a data directory: `build(staging)` writes the new
    database file (returns its byte count); it is fsynced, verified, and renamed into place, with the
    marker that makes a node refuse a half-restored directory written first and removed last.
    `again`: the extra arguments that repeat this restore (e.g. `--to-time T`), for that message."""
    started = time.monotonic()
    if kind not in (STANDALONE, PRIMARY):
        raise BackupError(
            f"a {kind} database is not restored: a replica bootstraps from its primary; "
            "restore the backup as a standalone node or as the primary"
        )
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
    created_dir = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(
        marker,
        msgspec.json.encode({"source": source, "again": again, "target": DB_PATHS[kind], "started_at": time.time()}),
    )
    try:
        _remove_copy(staging)
        total = build(staging)
        for suffix in ("-journal", "-wal", "-shm"):  # a builder's own leftovers, never the new database's
            staging.with_name(staging.name + suffix).unlink(missing_ok=True)
        _fsync_file(staging)
        try:
            tables = verify(staging, key=key)
        except BackupError as exc:
            raise BackupError(f"{source} is not a usable backup: {exc}") from exc
    except BaseException:
        # Nothing was replaced yet: leave the directory as this run found it.
        _remove_copy(staging)
        if not resuming:
            marker.unlink(missing_ok=True)
            if created_dir and not any(data_dir.iterdir()):
                data_dir.rmdir()
        raise
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
        source=source,
        bytes=total,
        tables=tables,
        seconds=round(time.monotonic() - started, 3),
        removed=removed,
    )
