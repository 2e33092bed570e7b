"""The primary watcher: learn of new commits as they happen instead of at the next interval.

`edgenode primary` holds a pull open while `wait_ms` is given (`GET /sync/G/F+1/F+2?wait_ms=N`)
and answers as soon as frame F+1 exists, or with "checkpoint needed" after N ms. The watcher
keeps one such request open and asks the scheduler for a sync when it returns with news. Frames
it receives are discarded (the libsql client pulls them itself): a commit costs one extra small
response. A primary that ignores `wait_ms` (Turso) answers at once; after a few of those the
watcher turns itself off and the interval alone drives syncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from edgenode.config import Settings
from edgenode.replica.files import Position
from edgenode.replica.scheduler import Scheduler
from edgenode.tls import client_context

log = logging.getLogger("edgenode.replica")

# Short enough that a primary's graceful shutdown does not wait long on an open poll.
WAIT_MS = 2_000
IMMEDIATE_LIMIT = 3


class Watcher:
    def __init__(
        self,
        primary_url: str,
        settings: Settings,
        scheduler: Scheduler,
        *,
        position: Callable[[], Position | None],
        writes_in_flight: Callable[[], int],
    ) -> None:
        self.primary_url = primary_url
        self.settings = settings
        self.scheduler = scheduler
        self.position = position
        self.writes_in_flight = writes_in_flight
        self.enabled = True
        self.wakeups = 0
        self.errors = 0
        self.disabled_reason: str | None = None
        self._immediate = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="replica-watcher")

    async def stop(self) -> None:
        self.enabled = False
        if self._task:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=5.0)

    def status(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "wakeups": self.wakeups,
            "errors": self.errors,
            "disabled_reason": self.disabled_reason,
        }

    async def _run(self) -> None:
        token = self.settings.primary_token
        headers = {"authorization": f"Bearer {token}"} if token else {}
        timeout = httpx.Timeout(WAIT_MS / 1000 + self.settings.sync_timeout)
        async with httpx.AsyncClient(headers=headers, timeout=timeout, verify=client_context()) as http:
            while self.enabled:
                position = self.position()
                if position is None or self.scheduler.failures or self.scheduler.phase:
                    await asyncio.sleep(self.settings.sync_interval)
                    continue
                try:
                    news = await self._poll(http, position.generation, position.frame)
                except (httpx.HTTPError, msgspec.DecodeError, ValueError) as exc:
                    self.errors += 1
                    log.debug("watcher poll failed: %s", exc)
                    await asyncio.sleep(self.settings.sync_interval)
                    continue
                if news and self.position() != position:
                    continue  # a sync moved the replica while the poll was out: ask again from there
                if news:
                    self.wakeups += 1
                    if self.writes_in_flight():
                        # Likely that write's own commit: its read-your-writes sync brings it; a sync
                        # started now would only make that write wait for two.
                        await self.scheduler.wait_finished(self.settings.sync_interval)
                        continue
                    with contextlib.suppress(Exception):
                        await self.scheduler.sync_after()
                    if self.position() == position:
                        # The sync did not move (failing, or frames beyond what it pulled): do not spin.
                        await asyncio.sleep(self.settings.sync_interval)

    async def _poll(self, http: httpx.AsyncClient, generation: int, frame: int) -> bool:
        url = f"{self.primary_url}/sync/{generation}/{frame + 1}/{frame + 2}"
        began = time.monotonic()
        response = await http.get(url, params={"wait_ms": WAIT_MS})
        elapsed = time.monotonic() - began
        if response.status_code == 200 or response.status_code == 410:
            return True
        if response.status_code == 400:
            body = msgspec.json.decode(response.content)
            if isinstance(body, dict) and isinstance(body.get("generation"), int) and body["generation"] > generation:
                return True
            if elapsed < WAIT_MS / 4000:
                self._immediate += 1
                if self._immediate >= IMMEDIATE_LIMIT:
                    self.enabled = False
                    self.disabled_reason = "the primary does not hold pulls open (no wait_ms support)"
                    log.info("long-poll off: %s; interval syncs only", self.disabled_reason)
            else:
                self._immediate = 0
            return False
        raise ValueError(f"watcher poll answered {response.status_code}")
