"""The lease of a local-first node's replica connection by one interactive transaction (§7 of
docs/local-first.md).

The node has one replica connection, in one process that runs one call at a time. A Hrana
interactive transaction in local-first mode runs on it across several requests (BEGIN, statements,
COMMIT), so from its BEGIN to its end every other caller (reads, other writes, the pull cycle,
which would cut the WAL under the open transaction) waits at `gate`. The holder passes with its
token. Calls already queued when the lease is taken run first: the owner's lock is FIFO and the
holder's BEGIN queues behind them. A holder that overstays `timeout` is ended by the caller's
watchdog (rolled back), so a stuck client costs the others at most that long.
"""

from __future__ import annotations

import asyncio


class LeaseBusy(Exception):
    """Another transaction held the connection for the whole wait."""


class Lease:
    def __init__(self) -> None:
        self._holder: object | None = None
        self._free = asyncio.Event()
        self._free.set()

    @property
    def held(self) -> bool:
        return self._holder is not None

    def holds(self, token: object) -> bool:
        return self._holder is token

    async def gate(self, token: object | None = None) -> None:
        """Return when the caller may use the connection (nobody else holds the lease)."""
        while self._holder is not None and self._holder is not token:
            await self._free.wait()

    async def acquire(self, token: object, wait: float) -> None:
        try:
            async with asyncio.timeout(wait):
                while self._holder is not None:
                    await self._free.wait()
        except TimeoutError:
            raise LeaseBusy(f"another transaction held this node's connection for {wait:g} s") from None
        self._holder = token
        self._free.clear()

    def release(self, token: object) -> None:
        if self._holder is token:
            self._holder = None
            self._free.set()
