"""`ReaderPool`: a standalone node's one set of read-only connection processes.

Every read of the node takes its reader from here: REST reads (`LocalDatabase.read`) and Hrana
autocommit reads answered on the event loop (`try_call`), Hrana autocommit reads driven straight
from a Hrana worker thread (`call_blocking`: no hop to the loop), and protocol read transactions,
which lease a reader whole (`lease`). So `read_connections` is the number of reader processes, and
REST and Hrana load borrow each other's idle readers.

- The idle list is guarded by a `threading.Lock`, since the loop and worker threads both draw from
  it. A returned reader goes straight to the longest waiter (a loop future or a thread's event),
  so neither side can overtake the other, and a reader is idle only while nobody waits.
- One call at a time per reader process: a reader belongs to whoever took it until it is put back.
- A call that overruns its limit kills the process (the binding cannot interrupt a statement) and
  raises `ReaderStopped`; a process that died, or whose call was cancelled mid-flight (its reply
  would reach the next caller), is replaced in the background and only then idle again.
- Leases (read transactions, held for seconds) may take all but one reader, so short reads always
  keep one (with a single reader, a lease may take it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from edgenode import engine
from edgenode.owner import OwnerDied, ProcessOwner

log = logging.getLogger(__name__)
T = TypeVar("T")


class ReaderStopped(OwnerDied):
    """A reader was stopped because its statement ran past its time limit (query_timeout_ms)."""


class ReadersBusy(Exception):
    """No reader came free within the wait a worker-thread caller allowed."""


class Reader(ProcessOwner):
    """A read-only connection process; also callable from a worker thread (`call_blocking`)."""

    def call_blocking(self, limit: float, fn: Callable[..., T], *args: Any) -> T:
        """fn(conn, *args) from a worker thread, waiting on the pipe there: no hop to the loop.
        Safe without `ProcessOwner._lock` because the pool lends a reader to one caller at a time."""
        pipe = self._pipe
        if pipe is None or self._broken:
            raise OwnerDied(f"{self.name} is not running")
        try:
            pipe.send((fn, args))
            if not pipe.poll(limit):
                self._broken = True
                self.kill()
                raise ReaderStopped(f"interrupted: query ran longer than {limit * 1000:g} ms (query_timeout_ms)")
            status, payload = pipe.recv()
        except (EOFError, OSError) as exc:
            self._broken = True
            raise OwnerDied(f"{self.name} exited") from exc
        if status == "err":
            raise payload
        return payload


class _Waiter:
    """One caller waiting for a reader: the pool fills `reader` under its lock, then calls `wake`."""

    __slots__ = ("reader", "wake")

    def __init__(self, wake: Callable[[], None]) -> None:
        self.reader: Reader | None = None
        self.wake = wake


class ReaderPool:
    def __init__(self, size: int, opener: Callable[..., tuple[Any, Any]], *args: Any) -> None:
        self.readers = [Reader(f"edgenode-reader-{i}", opener, *args) for i in range(size)]
        self._lock = threading.Lock()
        # Most recently returned first: under light load one process serves, its page cache warm.
        self._idle: list[Reader] = []
        self._waiters: deque[_Waiter] = deque()
        self._leases = asyncio.Semaphore(max(1, size - 1))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.replaced = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await asyncio.gather(*(reader.start() for reader in self.readers))
        for reader in self.readers:
            self.put(reader)

    async def stop(self, on_close: tuple[str, ...] = ()) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*(reader.close(on_close) for reader in self.readers), return_exceptions=True)

    # -- the idle list (any thread) ----------------------------------------------------------------

    def put(self, reader: Reader) -> None:
        """Give a healthy reader back: to the longest waiter, else to the idle list."""
        with self._lock:
            if not self._waiters:
                self._idle.append(reader)
                return
            waiter = self._waiters.popleft()
            waiter.reader = reader
        waiter.wake()

    def take_now(self) -> Reader | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    async def take(self) -> Reader:
        """A reader, waiting on the loop for one to come back if none is idle."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[None] = loop.create_future()

            def arrive() -> None:
                if not ready.done():
                    ready.set_result(None)

            def wake() -> None:
                # From the loop's own thread (a REST read putting its reader back): no self-pipe write.
                if threading.get_ident() == self._loop_thread:
                    loop.call_soon(arrive)
                else:
                    loop.call_soon_threadsafe(arrive)

            waiter = _Waiter(wake)
            self._waiters.append(waiter)
        try:
            await ready
        except asyncio.CancelledError:
            with self._lock:
                reader = waiter.reader
                if reader is None:
                    self._waiters.remove(waiter)
            if reader is not None:
                self.put(reader)  # it arrived as we gave up: pass it on
            raise
        assert waiter.reader is not None
        return waiter.reader

    def take_blocking(self, wait: float) -> Reader:
        """A reader for a worker thread, waiting at most `wait` s (then `ReadersBusy`)."""
        event = threading.Event()
        with self._lock:
            if self._idle:
                return self._idle.pop()
            waiter = _Waiter(event.set)
            self._waiters.append(waiter)
        if not event.wait(wait):
            with self._lock:
                if waiter.reader is None:
                    self._waiters.remove(waiter)
                    raise ReadersBusy(f"database is busy: no reader free within {wait:g} s")
        assert waiter.reader is not None
        return waiter.reader

    # -- calls ---------------------------------------------------------------------------------------

    async def call(self, limit: float, fn: Callable[..., T], *args: Any) -> T:
        """fn(conn, *args) on a reader, from the loop, waiting for one if need be."""
        return await self._run(await self.take(), limit, fn, *args)

    async def try_call(self, limit: float, fn: Callable[..., T], *args: Any) -> T | None:
        """fn(conn, *args) on a reader idle now, else None (the caller waits for one elsewhere)."""
        reader = self.take_now()
        if reader is None:
            return None
        return await self._run(reader, limit, fn, *args)

    async def _run(self, reader: Reader, limit: float, fn: Callable[..., T], *args: Any) -> T:
        # Past `limit` the process is stopped (the call then fails with OwnerDied) and replaced.
        # A timer, not asyncio.wait_for: no task per read.
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            reader.kill()

        timer = asyncio.get_running_loop().call_later(limit, expire)
        try:
            with self._giving_back(reader):
                return await reader.call(fn, *args)
        except OwnerDied as exc:
            if expired:
                raise ReaderStopped(
                    f"interrupted: query ran longer than {limit * 1000:g} ms (query_timeout_ms)"
                ) from exc
            raise
        finally:
            timer.cancel()

    @contextlib.contextmanager
    def _giving_back(self, reader: Reader) -> Iterator[None]:
        """Gives `reader` back when the block ends: replaced when its process died, or when a
        cancelled call retired it (ProcessOwner.call: its reply would reach the next caller), else
        returned to the idle list."""
        try:
            yield
        except (OwnerDied, asyncio.CancelledError):
            self.replace(reader)
            raise
        except BaseException:
            self.put(reader)
            raise
        self.put(reader)

    def call_blocking(self, wait: float, limit: float, fn: Callable[..., T], *args: Any) -> T:
        """fn(conn, *args) from a worker thread; wait at most `wait` s for a reader."""
        reader = self.take_blocking(wait)
        with self._giving_back(reader):
            return reader.call_blocking(limit, fn, *args)

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Reader]:
        """One reader alone for as long as the caller holds it (a protocol stream's read transaction).
        Raising OwnerDied (or being cancelled) inside gives the reader up for replacement."""
        async with self._leases:
            reader = await self.take()
            with self._giving_back(reader):
                yield reader

    async def schema_version(self, limit: float) -> int | None:
        """The file's schema cookie read on a reader; None when that reader died (cannot tell)."""
        try:
            return await self.call(limit, engine.schema_version)
        except OwnerDied:
            return None

    # -- replacement ---------------------------------------------------------------------------------

    def replace(self, reader: Reader) -> None:
        """Stop `reader` and start it again in the background (from any thread); idle once it is up."""
        reader.kill()
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._restart_later(reader)
        else:
            loop.call_soon_threadsafe(self._restart_later, reader)

    def _restart_later(self, reader: Reader) -> None:
        async def restart() -> None:
            try:
                await reader.restart()
            except Exception:
                log.exception("restarting %s failed", reader.name)
                return
            self.replaced += 1
            self.put(reader)

        task = asyncio.create_task(restart())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
