"""A readers-writer lock for threads, writer-preferring, with timeouts.

The primary shares it among everything that reads the WAL or holds an SQLite transaction and
takes it exclusively to change files under SQLite's feet (rollovers, push appends); the vector
indexes share it among searches and take it exclusively for mutations hnswlib cannot run beside
a query. Writer preference keeps a steady stream of readers from starving the writer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class LockTimeout(Exception):
    """The lock could not be taken in time; callers answer 503 so clients retry."""


class RWLock:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire_shared(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._writer or self._writers_waiting:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise LockTimeout("timed out waiting for a rollover or push to finish")
                self._cond.wait(remaining)
            self._readers += 1

    def release_shared(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def acquire_exclusive(self, timeout: float | None = None, polite: bool = False) -> None:
        """Wait for every holder to leave. A polite waiter does not hold back new shared holders, so
        it never stalls anyone, but it only gets the lock at a moment nobody holds it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._writers_waiting += 0 if polite else 1
            try:
                while self._writer or self._readers:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise LockTimeout("timed out waiting for open transactions to finish")
                    self._cond.wait(remaining)
                self._writer = True
            finally:
                self._writers_waiting -= 0 if polite else 1
                if not self._writer:
                    self._cond.notify_all()

    def release_exclusive(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()

    @contextmanager
    def shared(self, timeout: float | None = None) -> Iterator[None]:
        self.acquire_shared(timeout)
        try:
            yield
        finally:
            self.release_shared()

    @contextmanager
    def shared_nowait(self) -> Iterator[bool]:
        """A shared hold only if one is free right now (yields False otherwise). It never waits, so
        an event loop may call it: the condition's own lock is only ever held for bookkeeping."""
        with self._cond:
            taken = not (self._writer or self._writers_waiting)
            if taken:
                self._readers += 1
        try:
            yield taken
        finally:
            if taken:
                self.release_shared()

    @contextmanager
    def exclusive(self, timeout: float | None = None, polite: bool = False) -> Iterator[None]:
        self.acquire_exclusive(timeout, polite)
        try:
            yield
        finally:
            self.release_exclusive()
