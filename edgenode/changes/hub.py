"""`ChangeHub`: one reader of the change feed fanning events out to subscribers (see the package doc)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from edgenode import feed
from edgenode.auth import Authenticator, AuthError, TokenExpired
from edgenode.values import to_json

log = logging.getLogger(__name__)

PAGE = 1000  # feed rows per read
RENAMES_RETRY = 2.0  # seconds between two attempts to follow renamed tables
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Filter:
    """Which changes a subscriber takes: tables, and optionally one column equal to a value
    (judged on the new row, or the deleted row for a delete)."""

    tables: frozenset[str]
    column: str | None = None
    value: Any = None

    def takes(self, table: str, row: dict[str, Any] | None) -> bool:
        if table not in self.tables:
            return False
        if self.column is None:
            return True
        return row is not None and row.get(self.column) == self.value and self.value is not None


@dataclass
class Event:
    seq: int
    table: str  # "" for a commit marker
    op: str  # insert | update | delete | commit
    rowid: int | None
    row: dict[str, Any] | None  # captured values (the old row for a delete)
    first: int | None = None  # a commit marker: the seq of its transaction's first change
    _payload: bytes | None = None

    @classmethod
    def from_feed(cls, seq: int, tbl: str, rid: int, op: str, row: str | None) -> Event:
        if op == feed.COMMIT_OP:
            return cls(seq, "", "commit", None, None, first=rid)
        return cls(seq, tbl, feed.CAPTURE_OPS[op], rid, feed.decode_row(row))

    def payload(self) -> bytes:
        """The event as JSON, encoded once for every subscriber and both transports."""
        if self._payload is None:
            if self.op == "commit":
                body: dict[str, Any] = {
                    "cursor": self.seq,
                    "table": None,
                    "op": "commit",
                    "rowid": None,
                    "row": None,
                    "first": self.first,
                }
            else:
                row = None
                if self.op != "delete" and self.row is not None:
                    row = {k: to_json(v) for k, v in self.row.items()}
                body = {"cursor": self.seq, "table": self.table, "op": self.op, "rowid": self.rowid, "row": row}
            self._payload = _encoder.encode(body)
        return self._payload


class Ended(Exception):
    """The stream ends with this reason, sent to the client as a last event."""

    def __init__(self, kind: str, reason: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.kind = kind  # "resync" or "error"
        self.body: dict[str, Any] = {"reason": reason, "message": message, **extra}

    def payload(self) -> bytes:
        return _encoder.encode(self.body)


@dataclass(eq=False)  # one subscriber, hashed by identity
class Subscriber:
    filter: Filter
    after: int  # everything up to here was delivered (the client's cursor)
    buffer: int
    expires_at: float | None = None
    authorization: str | None = None  # its credential ("Bearer <token>"), checked again on a key rotation
    queue: asyncio.Queue[Event] = field(init=False)
    start: int = 0  # the hub's position at registration: the queue holds events past it
    last_change: int = 0  # seq of the last change delivered (commit events follow their changes)
    last_taken: int = 0  # seq of the last change handed over (queued or delivered)
    cut: Ended | None = None
    guard: asyncio.Timeout | None = None
    on_slow: Callable[[], None] = lambda: None  # the hub counts cut-offs

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.buffer)

    def offer(self, event: Event) -> None:
        """Called by the hub; never waits."""
        if self.cut is not None:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.on_slow()
            self.cut_off(
                Ended(
                    "error",
                    "slow_subscriber",
                    f"more than {self.buffer} events waited for this subscriber; reconnect with its cursor",
                    cursor=self.after,
                )
            )

    def cut_off(self, reason: Ended, grace: float = 5.0) -> None:
        self.cut = reason
        while not self.queue.empty():
            self.queue.get_nowait()
        # A wake-up for a reader parked on the empty queue: a stale marker it recognizes.
        self.queue.put_nowait(Event(-1, "", "cut", None, None))
        if self.guard is not None:
            # A connection that cannot take even the reason within `grace` is closed.
            self.guard.reschedule(asyncio.get_running_loop().time() + grace)

    def _wants(self, event: Event) -> bool:
        if event.seq <= self.after:
            return False
        if event.op == "commit":
            # Judged again at delivery (last_change): a transaction may straddle registration.
            return event.first is not None and (self.last_taken >= event.first or event.first <= self.start)
        if self.filter.takes(event.table, event.row):
            self.last_taken = event.seq
            return True
        return False


Write = Callable[[Event], Awaitable[None]]


class ChangeHub:
    """One reader of the feed; subscribers register, are served, and unsubscribe."""

    def __init__(
        self,
        db: Any,
        authenticator: Authenticator,
        *,
        retention: int,
        buffer: int,
        heartbeat: float,
        poll_interval: float = 1.0,
        compact_threshold: int | None = None,
    ) -> None:
        self.db = db
        self.authenticator = authenticator
        self.retention = retention
        self.buffer = buffer
        self.heartbeat = heartbeat
        self.poll_interval = poll_interval
        # Trimmed to `retention` once it holds twice that: compaction runs now and then, not per commit.
        self.compact_threshold = compact_threshold or 2 * retention
        self.position: int | None = None  # None until the feed could be read once
        self.subscribers: set[Subscriber] = set()
        # Fan-out index: a change is offered only to its table's subscribers, and a commit marker
        # only to those that may want it (see `_fan_out`).
        self.by_table: dict[str, set[Subscriber]] = {}
        self._took: dict[Subscriber, None] = {}  # took a change since the last commit marker
        # Registered subscribers, until a commit marker passes what they were registered at.
        self._joined: dict[Subscriber, int] = {}
        self._last_marker = 0  # seq of the last commit marker fanned out
        self.delivered = 0
        self.cut = 0
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._key_task: asyncio.Task[None] | None = None
        self.revoked = 0
        self._since_compact = 0
        self._compacting = False
        self._background: set[asyncio.Task[None]] = set()
        self._renames_lock = asyncio.Lock()
        self._renames_next = 0.0
        feed.add_consumer(db, self)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.db.add_change_listener(self._changed)
        self._task = asyncio.create_task(self._run())
        if self.authenticator.jwt_key_file is not None:
            self._key_task = asyncio.create_task(self._watch_key())

    async def stop(self) -> None:
        for task in (self._task, self._key_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for sub in list(self.subscribers):
            sub.cut_off(Ended("error", "shutting_down", "the node is stopping; reconnect with your cursor"), 1.0)

    def status(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "subscribers": len(self.subscribers),
            "delivered": self.delivered,
            "cut_off": self.cut,
            "revoked": self.revoked,
            "retention": self.retention,
        }

    # -- feed consumer (edgenode.feed.Consumer) ---------------------------------------------------

    def feed_floor(self) -> int | None:
        return None if self.position is None else max(0, self.position - self.retention)

    def feed_tables(self) -> set[str]:
        return set()  # the stream's triggers are its own, not the vector/text ones

    async def table_recreated(self, table: str) -> None:
        pass  # a subscriber reads changes as they come; its own triggers went with the table

    async def rename_statements(self, old: str, new: str) -> list[tuple[str, list]]:
        return []  # the capture moves with the feed's triggers (feed.follow_renames)

    def table_unfollowable(self, old: str, new: str) -> None:
        pass  # its subscribers are told when the renames are followed (`follow_renames`)

    # -- revocation ------------------------------------------------------------------------------

    async def _watch_key(self) -> None:
        """Every heartbeat, re-read the JWT key file if it changed (`Authenticator.refresh_key`);
        on a rotation, end the streams whose token no longer verifies."""
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                rotated = await self.authenticator.refresh_key()
            except Exception:
                log.exception("checking the JWT key file failed")
                continue
            if rotated:
                self.revoke()  # in the loop step of the swap: no subscriber registers in between

    def revoke(self) -> None:
        """End every stream whose credential the authenticator refuses now."""
        verdicts: dict[str | None, AuthError | None] = {}  # one signature check per distinct token
        for sub in list(self.subscribers):
            if sub.authorization not in verdicts:
                try:
                    self.authenticator.check(sub.authorization)
                    verdicts[sub.authorization] = None
                except AuthError as exc:
                    verdicts[sub.authorization] = exc
            refused = verdicts[sub.authorization]
            if refused is not None:
                self.revoked += 1
                sub.cut_off(_refused(refused))

    # -- reading ---------------------------------------------------------------------------------

    async def _changed(self) -> None:
        self._wake.set()  # all a commit or sync pays: the reader runs on its own

    def _upto(self, head: int) -> int:
        bound = self.db.feed_bound()
        return head if bound is None else min(head, bound)

    async def _run(self) -> None:
        while True:
            try:
                ready = self.position is not None  # subscribers first wait for the first read, not this
                if ready and feed.renames_suspected(self.db) and time.monotonic() >= self._renames_next:
                    # Not again for a while: on a replica the move reaches its schema with a sync.
                    self._renames_next = time.monotonic() + RENAMES_RETRY
                    try:
                        await self.follow_renames()
                    except Exception as exc:
                        log.warning("following renamed tables failed (retrying): %s", exc)
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("reading the change feed failed (retrying): %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()

    async def _read(self) -> None:
        upto = self._upto(await feed.head(self.db))
        if self.position is None:
            self.position = upto
            self._ready.set()
            return
        while self.position < upto:
            rows = await feed.read_events(self.db, self.position, upto, PAGE)
            for row in rows:
                self._fan_out(Event.from_feed(*row))
            self.position = rows[-1][0] if len(rows) == PAGE else upto
            self._since_compact += len(rows)
        if self._since_compact >= max(self.retention // 2, 1) and not self._compacting:
            self._since_compact = 0
            self._compacting = True
            task = asyncio.create_task(self._compact())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _fan_out(self, event: Event) -> None:
        """Offer `event` to every subscriber whose `_wants` takes it, asking only those that may.

        A change: its table's subscribers. A commit marker (its unit's first change `first`): a
        subscriber wants it when it took a change at or past `first`, or was registered at a
        position or with a cursor at or past `first` (`Subscriber._wants`). Every writer starts a
        unit after the previous unit's marker (`edgenode.commit_marks`), so those are the
        subscribers that took a change since the last marker (`_took`) and those registered at or
        past it (`_joined`); were a marker ever to name a first change at or before the previous
        marker, every subscriber is asked, as before the index. Nothing here awaits, so no
        subscriber comes or goes while the sets are walked."""
        if event.op != "commit":
            for sub in self.by_table.get(event.table, ()):
                if sub._wants(event):
                    sub.offer(event)
                    self._took[sub] = None
            return
        if event.first is not None and event.first > self._last_marker:
            candidates: Any = {**self._took, **self._joined}
        else:
            candidates = self.subscribers
        for sub in candidates:
            if sub._wants(event):
                sub.offer(event)
        self._took.clear()
        if self._joined:
            self._joined = {sub: mark for sub, mark in self._joined.items() if mark > event.seq}
        self._last_marker = event.seq

    async def _compact(self) -> None:
        try:
            floor = self.feed_floor()
            if floor is not None:
                await feed.compact(self.db, floor, self.compact_threshold, 0)
        except Exception:
            log.exception("compacting the change feed failed")
        finally:
            self._compacting = False

    # -- subscribing -----------------------------------------------------------------------------

    async def subscribe(self, filt: Filter, after: int | None, authorization: str | None = None) -> Subscriber:
        """Register a subscriber; raises Ended when its cursor can no longer be served, AuthError
        when its credential (`authorization`, as a bearer header) is refused."""
        await asyncio.wait_for(self._ready.wait(), 30)
        assert self.position is not None
        if after is not None:
            compacted = await feed.compacted_through(self.db)
            if after < compacted:
                raise _expired(after, compacted)
            if after > self.position and self.db.role == "standalone":
                # A standalone node numbers its own changes: a cursor past them was given out by
                # a database this file no longer is (restored from a backup, replaced, or commits
                # lost with a disk). Waiting for the numbers to come back would skip real changes.
                # A replica's cursors are its primary's, so one ahead of a lagging replica is
                # valid there and simply waits.
                raise _ahead(after, self.position)
        open_transaction = after is not None and await self._takes_change_at(filt, after)
        assert self.position is not None
        # Checked again here, in the loop step that registers it: a key rotated since the request
        # was let in (the revocation pass has run) must not leave it streaming.
        self.authenticator.check(authorization)
        expires_at = self.authenticator.expires_at(authorization)
        sub = Subscriber(filt, self.position if after is None else after, self.buffer, expires_at, authorization)
        if open_transaction:
            # The cursor names a change this subscription takes, so the client got it: a
            # transaction it stopped inside of still ends with its commit event on this connection.
            sub.last_change = sub.last_taken = after
        sub.on_slow = self._count_cut
        sub.start = self.position  # in one loop step with the check above: no event falls between
        self.subscribers.add(sub)
        for table in filt.tables:
            self.by_table.setdefault(table, set()).add(sub)
        self._joined[sub] = max(sub.start, sub.last_taken)
        return sub

    async def _takes_change_at(self, filt: Filter, cursor: int) -> bool:
        """Whether the feed's entry at `cursor` is a change `filt` takes. A cursor may come from
        another subscription (another table, another filter) or be a commit event's: the
        transaction it is in then has nothing of this subscription's before the cursor, and its
        commit event must not come alone. A cursor this node has not read yet (a replica behind
        its client) cannot be judged: it is trusted, as the client's last event."""
        assert self.position is not None
        if cursor > self.position:
            return True
        row = await feed.read_event_at(self.db, cursor)
        if row is None:
            return False
        event = Event.from_feed(*row)
        return filt.takes(event.table, event.row)

    async def follow_renames(self) -> dict[str, str]:
        """Follow the tables renamed since their triggers were made (`feed.follow_renames`) and end
        the streams of their old names, saying the new one: its changes, old and new, are there."""
        async with self._renames_lock:
            renames = await feed.follow_renames(self.db)
        for old, new in renames.items():
            log.warning("table %s was renamed to %s; its triggers and collections follow it", old, new)
            for sub in list(self.by_table.get(old, ())):
                sub.cut_off(_renamed(old, new, sub.after))
        return renames

    def _count_cut(self) -> None:
        self.cut += 1

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        for table in sub.filter.tables:
            subs = self.by_table.get(table)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self.by_table[table]
        self._took.pop(sub, None)
        self._joined.pop(sub, None)

    async def serve(self, sub: Subscriber, write: Write, heartbeat: Callable[[], Awaitable[None]]) -> Ended:
        """Deliver to `sub` until it ends; returns the reason to send last. The caller unsubscribes."""
        async with asyncio.timeout(None) as guard:
            sub.guard = guard
            try:
                await self._catch_up(sub, write)
                while True:
                    if sub.cut is not None:
                        return sub.cut
                    wait = self.heartbeat
                    if sub.expires_at is not None:
                        wait = min(wait, sub.expires_at - time.time())
                        if wait <= 0:
                            return _token_expired()
                    if sub.queue.empty():
                        try:
                            # wait_for costs a task: only paid when the queue is empty
                            event = await asyncio.wait_for(sub.queue.get(), wait)
                        except TimeoutError:
                            await heartbeat()
                            continue
                    else:
                        event = sub.queue.get_nowait()
                    if event.seq >= 0:
                        await self._deliver(sub, event, write)
            except Ended as ended:
                return ended

    async def _catch_up(self, sub: Subscriber, write: Write) -> None:
        position = sub.after
        while position < sub.start:
            rows = await feed.read_events(self.db, position, sub.start, PAGE)
            compacted = await feed.compacted_through(self.db)
            if position < compacted:  # compacted while this subscriber was catching up
                raise _expired(position, compacted)
            for row in rows:
                event = Event.from_feed(*row)
                if sub._wants(event):
                    await self._deliver(sub, event, write)
            position = rows[-1][0] if len(rows) == PAGE else sub.start
            if sub.cut is not None:
                return
        sub.after = max(sub.after, sub.start)

    async def _deliver(self, sub: Subscriber, event: Event, write: Write) -> None:
        if event.op == "commit" and (event.first is None or sub.last_change < event.first):
            return
        await write(event)
        sub.after = max(sub.after, event.seq)
        if event.op != "commit":
            sub.last_change = event.seq
        self.delivered += 1


def _token_expired() -> Ended:
    return Ended("error", "token_expired", "the token expired; reconnect with a new one")


def _refused(exc: AuthError) -> Ended:
    if isinstance(exc, TokenExpired):
        return _token_expired()
    return Ended(
        "error",
        "token_revoked",
        f"this token is no longer accepted ({exc}): the node's JWT key was rotated; reconnect with a new token",
    )


def _renamed(old: str, new: str, cursor: int) -> Ended:
    if not feed.followable(new):
        message = (
            f"table {old!r} was renamed to {new!r}, which cannot be captured (not a plain identifier); "
            "rename it to a plain name and capture that"
        )
    else:
        message = (
            f"table {old!r} was renamed to {new!r}; subscribe to {new!r} with your cursor: "
            "its changes are recorded under the new name"
        )
    return Ended("error", "table_renamed", message, table=old, renamed_to=new, cursor=cursor)


def _ahead(cursor: int, position: int) -> Ended:
    return Ended(
        "resync",
        "cursor_ahead",
        f"cursor {cursor} is ahead of this node's changes (last {position}): the database was restored "
        "or replaced since the cursor was given; reload the tables' current rows, then subscribe without a cursor",
        cursor=cursor,
        last=position,
    )


def _expired(cursor: int, compacted: int) -> Ended:
    return Ended(
        "resync",
        "cursor_expired",
        f"cursor {cursor} is older than the changes this node keeps (from {compacted + 1}); "
        "reload the tables' current rows, then subscribe without a cursor",
        cursor=cursor,
        oldest=compacted,
    )
