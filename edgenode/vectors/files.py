"""A collection's files, written durably (fsync, rename, directory fsync: `edgenode.durable`).

Per collection definition, `<data_dir>/vectors/<name>-<uid12>/` holds `current.json` (the
generation in use), `sidecar-<gen>.sqlite` (vectors + filter columns + feed position),
`index-<gen>.hnsw(.json)` (HNSW + stamp) and, while a build runs, `build.json` (its checkpoint).
Functions here block (file I/O, fsync): call them from worker threads.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from edgenode.durable import atomic_write
from edgenode.vectors.exact import Sidecar
from edgenode.vectors.hnsw import HnswIndex
from edgenode.vectors.state import Collection

log = logging.getLogger(__name__)

CURRENT = "current.json"
BUILD_NOTE = "build.json"


def write_current(directory: Path, gen: int) -> None:
    atomic_write(directory / CURRENT, json.dumps({"gen": gen}).encode())


def forget_build(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / BUILD_NOTE).unlink()


def remove_gen(sidecar_path: Path, index_path: Path) -> None:
    for path in (
        sidecar_path,
        sidecar_path.with_name(sidecar_path.name + "-wal"),
        sidecar_path.with_name(sidecar_path.name + "-shm"),
        index_path,
        index_path.with_name(index_path.name + ".json"),
        index_path.with_name(index_path.name + ".tmp"),
    ):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def open_persisted(c: Collection, head: int, compacted: int) -> tuple[int, Sidecar, HnswIndex | None, int] | None:
    """Persisted sidecar (+ index if it checks out), or None when a full build is needed."""
    try:
        gen = int(json.loads((c.dir / CURRENT).read_text())["gen"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    sidecar_path, index_path = c.files(gen)
    if not sidecar_path.exists():
        return None
    try:
        sidecar = Sidecar(sidecar_path, c.spec, c.definition.uid)
        ok = sidecar.stamped_identity() == sidecar.identity() and compacted <= sidecar.position <= head
    except Exception:
        log.warning("vector sidecar %s is unreadable; rebuilding", sidecar_path)
        return None
    if not ok:
        sidecar.close()
        return None
    loaded = HnswIndex.load(index_path, c.expected_stamp(), c.spec.hnsw.ef_search)
    if loaded is None:
        log.warning("vector index %s is missing, corrupt or foreign; rebuilding from the sidecar", index_path)
        return gen, sidecar, None, sidecar.position
    index, stamp = loaded
    if not compacted <= stamp.position <= head:
        return gen, sidecar, None, sidecar.position
    return gen, sidecar, index, stamp.position


def checkpoint_build(c: Collection, gen: int, index: HnswIndex, position: int, last: int, done: int) -> None:
    """Index first, then the note that names it: a crash between them leaves an older note
    whose index stamp no longer matches, and the build starts over."""
    _, index_path = c.files(gen)
    stamp = index.save(index_path, c.definition.uid, position)
    note = {
        "uid": c.definition.uid,
        "gen": gen,
        "position": position,
        "last": last,
        "done": done,
        "sha256": stamp.sha256,
    }
    atomic_write(c.dir / BUILD_NOTE, json.dumps(note).encode())


def resume_build(c: Collection, gen: int, compacted: int) -> tuple[Sidecar, HnswIndex, int, int, int] | None:
    """The checkpointed state of an interrupted build of generation `gen`, when it is still
    usable: same definition, its feed position not compacted away, files intact."""
    try:
        note = json.loads((c.dir / BUILD_NOTE).read_text())
        uid, note_gen, position = note["uid"], int(note["gen"]), int(note["position"])
        last, done, sha256 = int(note["last"]), int(note["done"]), str(note["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    sidecar_path, index_path = c.files(gen)
    if uid != c.definition.uid or note_gen != gen or position < compacted or not sidecar_path.exists():
        return None
    loaded = HnswIndex.load(index_path, c.expected_stamp(), c.spec.hnsw.ef_search)
    if loaded is None or loaded[1].sha256 != sha256 or loaded[1].position != position:
        return None
    try:
        sidecar = Sidecar(sidecar_path, c.spec, c.definition.uid)
    except Exception:
        return None
    return sidecar, loaded[0], position, last, done
