"""A schema version the owner publishes and its HTTP workers read: eight bytes of shared memory.

The owner writes its schema mirror's version here before it acknowledges the DDL that changed it;
a worker compares it with its own mirror's version on each request it answers, a memory read,
and rebuilds its mirror when they differ. The cell is an unlinked temporary file mapped by both
(inherited as a file descriptor), which works on Linux and macOS alike.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile

_FORMAT = "<q"
_SIZE = struct.calcsize(_FORMAT)
UNKNOWN = -1


class SchemaEpoch:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, _SIZE)

    @classmethod
    def create(cls) -> SchemaEpoch:
        handle = tempfile.TemporaryFile()  # unlinked: nothing left behind after kill -9
        fd = os.dup(handle.fileno())
        handle.close()
        os.ftruncate(fd, _SIZE)
        epoch = cls(fd)
        epoch.publish(UNKNOWN)
        return epoch

    def publish(self, version: int) -> None:
        struct.pack_into(_FORMAT, self._map, 0, version)

    def read(self) -> int:
        return struct.unpack_from(_FORMAT, self._map, 0)[0]

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)
