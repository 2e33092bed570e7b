"""The node's own sync scheduler (not the library's background loop, whose errors are swallowed).

One sync at a time, on an interval; after a failure, exponential backoff with jitter. Writes,
freshness-bounded reads, `POST /api/v1/sync` and the primary watcher ask for "a sync that starts
after now" and share it: every waiter registered before a sync starts is answered by that sync.

State (derived, so it never disagrees with the facts it summarises):
  bootstrapping  no usable replica yet, downloading one
  resyncing      replacing the replica (other primary, conflict, invalid state, generation gone)
  error          the last sync failed (reads go on from the local replica)
  stale          the last sync worked but lag exceeds max_lag, or no sync yet since start
  synced         the last sync worked and lag is within max_lag
  halted         a failure retrying cannot fix (an exception with `permanent = True`, such as a
                 primary URL that speaks another sync protocol): no more syncs, `halted` says why
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("edgenode.replica")


@dataclass
class SyncOutcome:
    started: float
    duration: float
    frames: int
    changed: bool
    # False when the sync was cut into a slice (relay.py): the replica has not caught up yet.
    complete: bool = True


class SyncFailed(Exception):
    """The sync a caller waited for failed; the message is the sync's error."""


class Scheduler:
    def __init__(
        self,
        sync: Callable[[], Awaitable[SyncOutcome]],
        *,
        interval: float,
        timeout: float,
        max_lag: float,
        max_backoff: float | None = None,
    ) -> None:
        self._sync = sync
        self.interval = interval
        self.timeout = timeout
        self.max_lag = max_lag
        self.max_backoff = max_backoff if max_backoff is not None else max(2.0, min(30.0, 8 * interval))
        self.phase: str | None = None  # "bootstrapping" / "resyncing" while the replica is replaced
        self.caught_up_at: float | None = None  # monotonic start of the last successful sync
        self.last_sync_at: float | None = None  # wall clock end of the last successful sync
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.failures = 0
        self.syncs = 0
        self.errors = 0
        self.started_count = 0
        self.finished_count = 0
        self.running = False
        self._wake = asyncio.Event()
        self._finished = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[SyncOutcome]]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.halted: str | None = None

    # -- state -----------------------------------------------------------------------------------

    def lag(self) -> float | None:
        return None if self.caught_up_at is None else max(0.0, time.monotonic() - self.caught_up_at)

    @property
    def state(self) -> str:
        if self.halted:
            return "halted"
        if self.phase:
            return self.phase
        if self.failures:
            return "error"
        lag = self.lag()
        if lag is None or lag > self.max_lag:
            return "stale"
        return "synced"

    def status(self) -> dict[str, Any]:
        lag = self.lag()
        return {
            "state": self.state,
            "lag_seconds": None if lag is None else round(lag, 3),
            "last_sync": self.last_sync_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "consecutive_failures": self.failures,
            "halted": self.halted,
            "syncs": self.syncs,
            "sync_errors": self.errors,
            "interval_seconds": self.interval,
            "timeout_seconds": self.timeout,
            "max_lag_seconds": self.max_lag,
            "next_delay_seconds": round(self._delay(jitter=False), 3),
        }

    # -- control ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="replica-sync")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task:
            # Let a running sync finish (it is bounded by the timeout); cancelling it kills its process.
            done, _ = await asyncio.wait([self._task], timeout=self.timeout + 1.0)
            if not done:
                self._task.cancel()
                await asyncio.wait([self._task], timeout=5.0)
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(SyncFailed("the node is stopping"))
        self._waiters.clear()

    async def sync_after(self, limit: float | None = None) -> SyncOutcome:
        """Wait for a sync that starts after this call (bounded by `limit` seconds, else the sync timeout)."""
        if self.halted:
            raise SyncFailed(self.halted)
        future: asyncio.Future[SyncOutcome] = asyncio.get_running_loop().create_future()
        # A caller that gave up must not leave "exception never retrieved" behind.
        future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        self._waiters.append((self.started_count + 1, future))
        self._wake.set()
        limit = limit if limit is not None else self.timeout + 1.0
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
            async with asyncio.timeout(limit):
                return await asyncio.shield(future)
        except TimeoutError:
            raise SyncFailed(f"no sync completed within {limit:.1f} s ({self.last_error or 'still running'})") from None

    async def sync_until(self, reached: Callable[[], bool], limit: float | None = None) -> None:
        """Until `reached()` holds, checked now and after each sync that ends (bounded by `limit`
        seconds, else the sync timeout). A sync running now may already cover it, so it is waited for
        rather than repeated; otherwise the next sync starts at once. Callers waiting together share
        the syncs. Raises SyncFailed when a sync it waited for fails, or on timeout."""
        if reached():
            return
        limit = limit if limit is not None else self.timeout + 1.0
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limit):
                while not reached():
                    if self.halted:
                        raise SyncFailed(self.halted)
                    future: asyncio.Future[SyncOutcome] = loop.create_future()
                    future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
                    if self.running:
                        self._waiters.append((self.started_count, future))
                    else:
                        self._waiters.append((self.started_count + 1, future))
                        self._wake.set()
                    await asyncio.shield(future)
        except TimeoutError:
            why = self.last_error or "still running"
            raise SyncFailed(f"no sync reached it within {limit:.1f} s ({why})") from None

    def trigger(self) -> None:
        self._wake.set()

    async def wait_finished(self, limit: float) -> None:
        """Until the next sync ends (however it ends), at most `limit` seconds."""
        finished = self._finished
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await finished.wait()

    # -- loop ------------------------------------------------------------------------------------

    def _delay(self, jitter: bool = True) -> float:
        if not self.failures:
            return self.interval
        base = min(self.max_backoff, self.interval * 2 ** (self.failures - 1))
        return base * random.uniform(0.5, 1.5) if jitter else base

    async def _run(self) -> None:
        while not self._stopping:
            if not self._waiters:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._delay()):
                        await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            await self.run_once()

    async def run_once(self) -> None:
        self.started_count += 1
        number = self.started_count
        self.running = True
        started = time.monotonic()
        try:
            outcome = await self._sync()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures += 1
            self.errors += 1
            self.last_error = str(exc) or type(exc).__name__
            self.last_error_at = time.time()
            if getattr(exc, "permanent", False):
                self.halted = self.last_error
                self._stopping = True
                log.error("sync stopped: %s", self.halted)
            elif self.failures == 1 or self.failures % 10 == 0:
                log.warning("sync failed (%d in a row): %s", self.failures, self.last_error)
            self._answer(number, error=SyncFailed(self.last_error))
        else:
            if self.failures:
                log.info("sync works again after %d failure(s)", self.failures)
            self.failures = 0
            self.syncs += 1
            self.last_sync_at = time.time()
            if outcome.complete:
                self.caught_up_at = max(self.caught_up_at or 0.0, started)
                self._answer(number, outcome=outcome)
            else:
                # Waiters need a sync that caught up; the next one starts at once.
                self._waiters = [(max(needed, number + 1), future) for needed, future in self._waiters]
                self._wake.set()
        finally:
            self.running = False
            self.finished_count = number
            finished, self._finished = self._finished, asyncio.Event()
            finished.set()

    def _answer(self, number: int, outcome: SyncOutcome | None = None, error: Exception | None = None) -> None:
        keep = []
        for needed, future in self._waiters:
            if needed > number:
                keep.append((needed, future))
            elif not future.done():
                if error is not None:
                    future.set_exception(error)
                else:
                    assert outcome is not None
                    future.set_result(outcome)
        self._waiters = keep
