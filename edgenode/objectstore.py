"""Where archives live: a directory or an S3-compatible bucket, behind one small interface.

Both targets make an object visible only whole: a directory target writes a hidden temp file,
fsyncs it and renames it into place (then fsyncs the directory); an S3 target uploads each object
with one complete PUT, or above the multipart threshold as a multipart upload that S3 shows only
once completed (a killed writer's unfinished uploads are aborted by the next writer's `clean`).
So a writer killed at any moment leaves either the previous set of objects or
that set plus whole new ones; a reader (restore) never sees half an object. Leftover temp files of a
killed directory writer are removed by the next writer (`DirTarget.clean`).

Keys are '/'-separated relative paths; listing returns them sorted.
"""

from __future__ import annotations

import logging
import os
import shutil
import urllib.parse
from pathlib import Path
from typing import Protocol

from edgenode.durable import fsync_dir

_TMP_PREFIX = ".tmp-"

log = logging.getLogger("edgenode.objectstore")


class ObjectStoreError(Exception):
    """A target cannot be used as given; the message says what to fix."""


class Target(Protocol):
    url: str

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: Path, sha256: str | None = None) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def get_to_file(self, key: str, dest: Path) -> int: ...
    def list(
        self, prefix: str, start_after: str | None = None, end_before: str | None = None
    ) -> list[tuple[str, int]]: ...
    def delete(self, key: str) -> None: ...
    def clean(self) -> None: ...
    def close(self) -> None: ...


class DirTarget:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ObjectStoreError(f"bad archive key {key!r}")
        return self.root / key

    def _publish(self, key: str, write: object) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{_TMP_PREFIX}{dest.name}.{os.getpid()}")
        try:
            with open(tmp, "wb") as out:
                write(out)  # type: ignore[operator]
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(dest.parent)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._publish(key, lambda out: out.write(data))

    def put_file(self, key: str, path: Path, sha256: str | None = None) -> None:
        def copy(out: object) -> None:
            with open(path, "rb") as f:
                while chunk := f.read(4 << 20):
                    out.write(chunk)  # type: ignore[attr-defined]

        self._publish(key, copy)

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def get_to_file(self, key: str, dest: Path) -> int:
        # copyfile uses the kernel's copy (copy_file_range/sendfile): a restore's snapshot copy was
        # 2.7x slower through Python reads and writes.
        shutil.copyfile(self._path(key), dest)
        return dest.stat().st_size

    def list(self, prefix: str, start_after: str | None = None, end_before: str | None = None) -> list[tuple[str, int]]:
        """Keys under prefix, sorted; with start_after / end_before only those strictly between
        (directories wholly outside are not walked)."""
        if not self.root.is_dir():
            return []  # else the walk below would start in the root's parent, outside the archive
        base = self._path(prefix.rstrip("/")) if prefix.rstrip("/") else self.root
        start = base if base.is_dir() else base.parent
        if not start.is_dir():
            return []
        out = []
        for dirpath, dirs, files in os.walk(start):
            base_key = Path(dirpath).relative_to(self.root).as_posix()
            if start_after is not None or end_before is not None:
                keep = []
                for d in dirs:
                    key = f"{base_key}/{d}/" if base_key != "." else f"{d}/"
                    if start_after is not None and key + "\uffff" < start_after:
                        continue  # every key in it sorts before start_after
                    if end_before is not None and key >= end_before:
                        continue
                    keep.append(d)
                dirs[:] = keep
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                if (start_after is not None and key <= start_after) or (end_before is not None and key >= end_before):
                    continue
                out.append((key, full.stat().st_size))
        return sorted(out)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def clean(self) -> None:
        """Remove temp files a killed writer left (they were never visible as objects)."""
        if not self.root.is_dir():
            return
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    (Path(dirpath) / name).unlink(missing_ok=True)

    def close(self) -> None:
        pass


class S3Target:
    def __init__(self, url: str, endpoint: str | None, region: str, multipart_threshold: int | None = None) -> None:
        from edgenode.s3 import MULTIPART_THRESHOLD, S3Client, S3Error

        parts = urllib.parse.urlsplit(url)
        if not parts.netloc:
            raise ObjectStoreError(f"{url}: an S3 archive URL is s3://BUCKET[/PREFIX]")
        self.url = url
        self.prefix = parts.path.strip("/") + "/" if parts.path.strip("/") else ""
        try:
            self.client = S3Client(
                parts.netloc,
                endpoint=endpoint,
                region=region,
                multipart_threshold=multipart_threshold or MULTIPART_THRESHOLD,
            )
        except S3Error as exc:
            raise ObjectStoreError(str(exc)) from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_bytes(self.prefix + key, data)

    def put_file(self, key: str, path: Path, sha256: str | None = None) -> None:
        self.client.put_file(self.prefix + key, path, sha256)

    def get_bytes(self, key: str) -> bytes:
        return self.client.get_bytes(self.prefix + key)

    def get_to_file(self, key: str, dest: Path) -> int:
        return self.client.get_to_file(self.prefix + key, dest)

    def list(self, prefix: str, start_after: str | None = None, end_before: str | None = None) -> list[tuple[str, int]]:
        n = len(self.prefix)
        listed = self.client.list(
            self.prefix + prefix,
            start_after=self.prefix + start_after if start_after is not None else None,
            end_before=self.prefix + end_before if end_before is not None else None,
        )
        return [(key[n:], size) for key, size in listed]

    def delete(self, key: str) -> None:
        self.client.delete(self.prefix + key)

    def clean(self) -> None:
        """S3 never shows an incomplete PUT; a killed writer's multipart uploads are aborted here."""
        from edgenode.s3 import S3Error

        try:
            self.client.abort_uploads(self.prefix)
        except S3Error as exc:
            # Not every S3-compatible server lists uploads; leftovers stay invisible (and a bucket
            # lifecycle rule can expire them), so shipping goes on.
            log.warning("could not list unfinished multipart uploads under %s: %s", self.url, exc)

    def close(self) -> None:
        self.client.close()


def open_target(
    url: str, *, endpoint: str | None = None, region: str = "us-east-1", multipart_threshold: int | None = None
) -> Target:
    """`s3://bucket/prefix` (with `endpoint` for a non-AWS server) or a directory path."""
    if url.startswith("s3://"):
        return S3Target(url, endpoint, region, multipart_threshold)
    if "://" in url:
        raise ObjectStoreError(f"{url}: an archive is a directory path or an s3://BUCKET/PREFIX URL")
    return DirTarget(Path(url))
