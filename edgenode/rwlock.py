"""A readers-writer lock for threads, writer-preferring, with timeouts.

The primary shares it among everything that reads the WAL or holds an SQLite transaction and
takes it exclusively to change files under SQLite's feet (rollovers, push appends); the vector
indexes share it among searches and take it exclusively for mutations hnswlib cannot run beside
a query. Writer preference keeps a steady stream of readers from starving the writer.

Shared holders may also name a *mode*: holders of different modes never overlap, holders of one
mode share. hnswlib's search breadth (ef) is a setting of the whole index, not of a query, so
each ef is a mode: queries at one ef run together, and the first holder of a new mode switches
the setting (`on_mode`, called while nobody holds the lock) before any of them searches. A
holder waiting for another mode holds back new arrivals of the current one, so modes take turns.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any


class LockTimeout(Exception):
    """The lock could not be taken in time; callers answer 503 so clients retry."""


class RWLock:
    def __init__(self, on_mode: Callable[[Any], None] | None = None) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._on_mode = on_mode
        self._mode: Hashable = None  # the mode of the current shared holders (kept once they leave)
        self._modes_waiting: Counter[Hashable] = Counter()
        # Threads asleep on the condition; with none, a release skips notify_all (a search on the
        # event loop takes and releases the lock for every query).
        self._sleepers = 0

    def _wait(self, timeout: float | None) -> None:
        self._sleepers += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._sleepers -= 1

    def _wake(self) -> None:
        if self._sleepers:
            self._cond.notify_all()

    def _blocked(self, mode: Hashable) -> bool:
        if self._writer or self._writers_waiting:
            return True
        if mode is None or not self._readers:
            return False
        if mode != self._mode:
            return True
        return any(n for m, n in self._modes_waiting.items() if m != mode)

    def _enter_shared(self, mode: Hashable) -> None:
        if mode is not None and mode != self._mode:
            # Nobody holds the lock here (_blocked said so), so the switch cannot race a holder.
            if self._on_mode is not None:
                self._on_mode(mode)
            self._mode = mode
        self._readers += 1

    def acquire_shared(self, timeout: float | None = None, mode: Hashable = None) -> None:
        """`mode` None shares with holders of any mode (and never switches it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if mode is not None:
                self._modes_waiting[mode] += 1
            try:
                while self._blocked(mode):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise LockTimeout("timed out waiting for a rollover or push to finish")
                    self._wait(remaining)
            except BaseException:
                self._wake()  # a waiting mode may have held others back
                raise
            finally:
                if mode is not None:
                    self._modes_waiting[mode] -= 1
                    if not self._modes_waiting[mode]:
                        del self._modes_waiting[mode]
            self._enter_shared(mode)

    def release_shared(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._wake()

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
                    self._wait(remaining)
                self._writer = True
            finally:
                self._writers_waiting -= 0 if polite else 1
                if not self._writer:
                    self._wake()

    def release_exclusive(self) -> None:
        with self._cond:
            self._writer = False
            self._wake()

    @contextmanager
    def shared(self, timeout: float | None = None, mode: Hashable = None) -> Iterator[None]:
        self.acquire_shared(timeout, mode)
        try:
            yield
        finally:
            self.release_shared()

    def try_acquire_shared(self, mode: Hashable = None) -> bool:
        """A shared hold only if one is free right now. It never waits, so an event loop may call
        it: the condition's own lock is only ever held for bookkeeping."""
        with self._cond:
            if self._blocked(mode):
                return False
            self._enter_shared(mode)
            return True

    @contextmanager
    def shared_nowait(self, mode: Hashable = None) -> Iterator[bool]:
        """`try_acquire_shared` as a context (yields whether it was taken)."""
        taken = self.try_acquire_shared(mode)
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
