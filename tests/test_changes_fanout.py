"""The hub's fan-out index (`ChangeHub._fan_out`) offers every subscriber exactly what offering
each event to every subscriber (`Subscriber._wants`, the rule it indexes) would: randomized runs of
transactions, marked and unmarked, with subscribers coming and going mid-transaction, catching up
from cursors behind, at, and (a replica's) ahead of the hub, and reading their queues at random.

In-process: the rule is pure bookkeeping, and a real node could not make registrations land
between two given events; the database is a stand-in the hub only asks for its compaction point.
The stream end to end is tests/test_changes.py's.
"""

from __future__ import annotations

import asyncio
import json
import random
from types import SimpleNamespace
from typing import Any

import pytest

from edgenode import feed
from edgenode.auth import Authenticator
from edgenode.changes.hub import ChangeHub, Event, Filter, Subscriber

TABLES = ("a", "b", "c", "d")


class NoFeedState:
    """A database whose feed was never compacted; it answers the hub's look at a cursor's entry
    (`feed.read_event_at`) from the events offered so far."""

    role = "replica"  # cursors ahead of the hub are valid (they wait)

    def __init__(self, history: list[Event]) -> None:
        self.history = history

    async def read(self, sql: str, params: Any = None) -> Any:
        if sql == feed.EVENT_AT_SQL:
            found = [e for e in self.history if e.seq == params[0] and e.op != "commit"]
            row = {k: str(v) for k, v in (found[0].row or {}).items()} if found else {}
            rows = [[e.seq, e.table, e.rowid, _OPS[e.op], json.dumps(row)] for e in found]
            return SimpleNamespace(rows=rows)
        raise RuntimeError("no such table: _edgenode_feed_state")


_OPS = {name: letter for letter, name in feed.CAPTURE_OPS.items()}


class EveryoneAsked(ChangeHub):
    """The rule without the index: every event offered to every subscriber."""

    def _fan_out(self, event: Event) -> None:
        for sub in list(self.subscribers):
            if sub._wants(event):
                sub.offer(event)


def _hub(cls: type[ChangeHub], history: list[Event]) -> ChangeHub:
    hub = cls(NoFeedState(history), Authenticator(), retention=10**6, buffer=10**6, heartbeat=15)
    hub.position = 0
    hub._ready.set()
    return hub


def _queued(sub: Subscriber) -> list[int]:
    return [e.seq for e in sub.queue._queue]  # type: ignore[attr-defined]


def _newest(sub: Subscriber) -> tuple[int, int | None]:
    queue = sub.queue._queue  # type: ignore[attr-defined]
    return len(queue), (queue[-1].seq if queue else None)


async def _run(seed: int) -> int:
    rnd = random.Random(seed)
    history: list[Event] = []
    indexed, reference = _hub(ChangeHub, history), _hub(EveryoneAsked, history)
    pairs: list[tuple[Subscriber, Subscriber]] = []
    seq = 0

    offered = 0

    async def write(_: Event) -> None:
        return None

    async def join() -> None:
        tables = frozenset(rnd.sample(TABLES, rnd.randint(1, 3)))
        filt = Filter(tables, "k", rnd.randrange(3)) if rnd.random() < 0.3 else Filter(tables)
        after = None if rnd.random() < 0.4 else max(0, seq + rnd.randint(-12, 4))
        twins = []
        for hub in (indexed, reference):
            sub = await hub.subscribe(filt, after, None)
            for event in history:  # its catch-up from the feed, (after, start]
                if sub.after < event.seq <= sub.start and sub._wants(event):
                    await hub._deliver(sub, event, write)
            sub.after = max(sub.after, sub.start)
            twins.append(sub)
        pairs.append((twins[0], twins[1]))

    async def read_some() -> None:
        for pair in rnd.sample(pairs, min(len(pairs), 3)):
            take = rnd.randint(0, pair[0].queue.qsize())
            for sub, hub in zip(pair, (indexed, reference), strict=True):
                for _ in range(take):
                    await hub._deliver(sub, sub.queue.get_nowait(), write)

    def offer(event: Event) -> None:
        nonlocal offered
        history.append(event)
        for hub in (indexed, reference):
            hub._fan_out(event)
        for mine, theirs in pairs:  # the newest of each queue here, whole queues at the end
            assert _newest(mine) == _newest(theirs), (event, mine.filter, mine.start)

    for _ in range(3):
        await join()
    for _ in range(400):
        first = seq + 1
        for _ in range(rnd.randint(1, 4)):
            seq += 1
            table = rnd.choice(TABLES)
            offer(Event(seq, table, rnd.choice(("insert", "update", "delete")), seq, {"k": rnd.randrange(3)}))
            if rnd.random() < 0.15:  # a page ends inside the transaction: a subscriber joins there
                indexed.position = reference.position = seq
                await join()
        if rnd.random() < 0.8:  # a marked unit; the others are a Turso primary's, without markers
            seq += 1
            offer(Event(seq, "", "commit", None, None, first=first))
        indexed.position = reference.position = seq
        if rnd.random() < 0.2:
            await join()
        if pairs and rnd.random() < 0.1:
            gone = pairs.pop(rnd.randrange(len(pairs)))
            indexed.unsubscribe(gone[0])
            reference.unsubscribe(gone[1])
        await read_some()
    for mine, theirs in pairs:
        assert _queued(mine) == _queued(theirs)
        offered += len(_queued(mine))
    # Nobody left behind in the index.
    for sub in indexed.subscribers:
        assert all(sub in indexed.by_table[t] for t in sub.filter.tables)
    assert sum(len(s) for s in indexed.by_table.values()) == sum(len(s.filter.tables) for s in indexed.subscribers)
    return offered


@pytest.mark.parametrize("seed", range(6))
def test_the_table_index_offers_each_subscriber_exactly_what_asking_everyone_would(seed: int) -> None:
    assert asyncio.run(_run(seed)) > 0
