"""Local-first writes on a replica node (`--write-mode local-first`; design: docs/local-first.md).

Beside the `Forwarder` (forward mode), the same `ReplicaDatabase.write` seam lands here:

- `LocalFirst.write`: the write commits locally and durably and is answered at once with its
  `write_id`. Concurrent writes are combined into one owner call (`connection.apply_local`): one
  replica transaction with a savepoint per write and one fsync of the outbox for the whole group.
- the pusher task sends the oldest undecided writes to the primary in one batch
  (`idempotency.push_group`: each write atomic on its own, each decided exactly once), records
  the decisions in the outbox, and asks for a pull so the node converges. Failures back off
  (100 ms to 30 s with jitter); a successful sync retries at once, so a returning primary is
  noticed without a restart.

Runs on the event loop; pushes (blocking HTTP) run in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from edgenode.crash import armed, crash_point
from edgenode.errors import DatabaseError, SQLError
from edgenode.hrana.backend import HranaError
from edgenode.hrana.client import HranaClient, HranaHTTPError
from edgenode.idempotency import HEADER, Decision, IdempotencyKeyReused, push_bytes, push_group
from edgenode.replica import connection
from edgenode.replica.outbox import parse_write_id, write_id
from edgenode.results import ExecResult, PlainStatement

if TYPE_CHECKING:
    from edgenode.idempotency import KeyedWrite
    from edgenode.replica.metrics import ReplicaMetrics

log = logging.getLogger("edgenode.replica")

Call = Callable[..., Awaitable[Any]]
MIN_BACKOFF = 0.1
MAX_BACKOFF = 30.0
AUTH_RECHECK = 60.0
MAX_BATCH = 256  # writes per push request (outbox.undecided's default)


class PushTooLarge(DatabaseError):
    status = 413
    code = "too_large"
    hrana_code = "SQLITE_TOOBIG"


class OutboxNotFound(DatabaseError):
    status = 404
    code = "not_found"


def check_push_size(statements: list[tuple[str, Any]], fingerprint: str, limit: int) -> None:
    """Refuse, before it is acknowledged, a write whose push alone would exceed the primary's body
    limit: queued, it could never be sent, and every later write would wait behind it."""
    packed = len(msgspec.msgpack.encode(statements))
    args = sum(len(a) for _, a in statements if isinstance(a, list | dict))
    # An upper bound of the JSON request (a string escapes to at most 6 bytes a byte, an integer
    # becomes a typed object, each statement adds its outcome record): most writes stop here.
    if 6 * packed + 1500 * len(statements) + 64 * args + 16384 <= limit:
        return
    size = push_bytes(statements, fingerprint)
    if size > limit:
        raise PushTooLarge(
            f"this write would need a {size}-byte push to the primary, over max_push_bytes={limit} "
            f"({len(statements)} statements); split it into smaller writes, or raise --max-push-bytes "
            "together with the primary's --max-body-bytes"
        )


class LocalFirst:
    def __init__(
        self,
        call: Call,
        url: str,
        token: str | None,
        timeout: float,
        retention: float,
        metrics: ReplicaMetrics,
        on_pushed: Callable[[], None],
        database: Callable[[], Awaitable[str | None]],
        following: Callable[[], str | None],
        max_push_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._call = call
        self.url = url
        self.client = HranaClient(url, token, timeout=timeout)
        self.retention = retention
        self.metrics = metrics
        self._on_pushed = on_pushed
        # Asks the primary which database it serves: checked before the first push and after every
        # failed one (a primary can be replaced while it is away), against the one the queue belongs to.
        self._database = database
        self._verified = False
        self._following = following  # the database the replica follows (the queue is claimed for it)
        self.node_id: str | None = None
        self.max_push_bytes = max_push_bytes
        # Writes per push request: halved by a 413 (the batch was over the primary's body limit),
        # doubled back after each accepted push.
        self.batch_limit = MAX_BATCH
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._combiner: asyncio.Task[None] | None = None
        self._pusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.failures = 0
        self.last_error: str | None = None
        self.paused: str | None = None
        self.pushes = 0
        self.last_push_at: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._pusher = asyncio.create_task(self._push_loop(), name="edgenode-pusher")

    async def stop(self) -> None:
        for task in (self._pusher, self._combiner):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        await asyncio.to_thread(self.client.close)

    def wake(self) -> None:
        """Try the queue now (a write was queued, a sync succeeded: the primary may be back)."""
        self._wake.set()

    # -- the write path (§3) ---------------------------------------------------------------------

    async def write(
        self,
        statements: list[tuple[str, list[Any]]],
        local: list[PlainStatement],
        keyed: KeyedWrite | None,
    ) -> tuple[list[ExecResult], str, bool]:
        """Commit here and queue; returns (local results, write id, replayed)."""
        fingerprint = keyed.fingerprint if keyed else _fingerprint(statements)
        await self.check_size(statements, fingerprint)
        item = (keyed.key if keyed else None, fingerprint, statements, local)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._combiner is None or self._combiner.done():
            self._combiner = asyncio.create_task(self._combine())
        kind, *rest = await future
        if kind == "error":
            message, index = rest
            raise SQLError(message, index=index)
        if kind == "reused":
            raise IdempotencyKeyReused(
                f"{HEADER} {item[0]!r} was already used for a different request; "
                "a retry must send the same statements and parameters, a new write needs a new key"
            )
        seq, results = rest
        assert self.node_id is not None
        if kind == "ok":
            self.metrics.writes.labels("queued").inc()
            self.wake()
            if armed("N3"):  # §6: after the response (it goes out well within this delay)
                asyncio.get_running_loop().call_later(0.3, crash_point, "N3")
        return results, write_id(self.node_id, seq), kind == "replayed"

    async def check_size(self, statements: list[tuple[str, Any]], fingerprint: str) -> None:
        if len(statements) > 64:  # the exact measure of a large write takes a while: off the loop
            await asyncio.to_thread(check_push_size, statements, fingerprint, self.max_push_bytes)
        else:
            check_push_size(statements, fingerprint, self.max_push_bytes)

    async def _combine(self) -> None:
        # Whatever queued while the previous group ran forms the next group: one owner call, one fsync.
        while self._queue:
            group, self._queue = self._queue, []
            try:
                outcomes = await self._call(
                    connection.apply_local, [item for item, _ in group], self.retention, self._following()
                )
            except BaseException as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), outcome in zip(group, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)

    # -- the pusher (§5) -------------------------------------------------------------------------

    async def _push_loop(self) -> None:
        delay = 0.0
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay or None)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                more = await self.push_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure backs off and retries
                self.failures += 1
                self.last_error = str(exc) or type(exc).__name__
                if self.failures == 1 or self.failures % 20 == 0:
                    log.warning("local-first push failed (%d in a row): %s", self.failures, self.last_error)
                base = AUTH_RECHECK if self.paused else min(MAX_BACKOFF, MIN_BACKOFF * 2 ** min(self.failures - 1, 10))
                delay = base * (0.5 + random.random() / 2)
                continue
            self.failures = 0
            self.paused = None
            delay = 0.001 if more else 0.0  # a full batch: go on at once; an empty queue: wait to be woken

    async def push_once(self) -> bool:
        """Push the oldest undecided writes; True when more may be waiting."""
        node_id, writes, confirmed, owner_database = await self._call(connection.outbox_batch, self.batch_limit)
        self.node_id = node_id
        if not writes:
            return False
        if not self._verified:
            try:
                database_id = await self._database()
            except Exception as exc:
                self._pause_if_refused(exc)
                raise
            if database_id is not None and owner_database is None:
                await self._call(connection.outbox_claim, database_id)
            elif database_id is not None and owner_database != database_id:
                # The primary at this URL now serves another database: these writes were meant for the
                # old one. Pushing them would apply them somewhere they were never checked against.
                self.paused = (
                    f"halted: the queued writes belong to database {owner_database}, the primary now serves "
                    f"{database_id}; stop the node and move DATA_DIR/outbox.db away to drop them "
                    "(or replay them by hand)"
                )
                raise HranaError(self.paused, "HALTED")
            self._verified = True
        try:
            decisions = await asyncio.to_thread(push_group, self.client, node_id, writes, confirmed)
        except HranaHTTPError as exc:
            if exc.status == 413:
                return await self._too_large(writes, exc)
            self._verified = False
            self._pause_if_refused(exc)
            await self._call(connection.outbox_record, [Decision(w.seq, "undecided") for w in writes], str(exc))
            raise
        except HranaError as exc:
            self._verified = False
            await self._call(connection.outbox_record, [Decision(w.seq, "undecided") for w in writes], str(exc))
            raise
        crash_point("N7")  # §6: the primary decided the batch, the node has not recorded it
        counts = await self._call(connection.outbox_record, decisions, None)
        crash_point("N8")  # §6: recorded, the pull that shows the writes not yet run
        self.pushes += 1
        self.last_push_at = time.time()
        self.metrics.outbox_pending.set(counts["pending_now"])
        self.metrics.outbox_conflicts.set(counts["conflicts_now"])
        for outcome in ("applied", "rejected", "undecided"):
            if counts[outcome]:
                self.metrics.outbox_decisions.labels(outcome).inc(counts[outcome])
        self._on_pushed()
        self.batch_limit = min(MAX_BATCH, self.batch_limit * 2)
        if counts["undecided"] and not counts["applied"] and not counts["rejected"]:
            raise HranaError("the primary decided none of the batch (it did not commit)", "UNDECIDED")
        return True

    async def _too_large(self, writes: list[Any], exc: HranaHTTPError) -> bool:
        """The primary refused the request for its size (nothing ran). Several writes: send fewer per
        request. One write: it can never be sent, so it becomes a conflict with the primary's error
        (its local effects vanish at the next pull) and the writes behind it flow again."""
        if len(writes) > 1:
            self.batch_limit = max(1, len(writes) // 2)
            log.info("local-first push over the primary's body limit: %d writes per push now", self.batch_limit)
            return True
        error = {
            "code": "BODY_TOO_LARGE",
            "message": f"the primary refused the push for its size ({exc}); split the write into smaller "
            "ones, or raise the primary's --max-body-bytes, then retry it",
        }
        counts = await self._call(connection.outbox_record, [Decision(writes[0].seq, "rejected", error=error)], None)
        log.warning("local-first write %s is a conflict: %s", write_id(self.node_id or "", writes[0].seq), exc)
        self.metrics.outbox_pending.set(counts["pending_now"])
        self.metrics.outbox_conflicts.set(counts["conflicts_now"])
        self.metrics.outbox_decisions.labels("rejected").inc()
        self._on_pushed()
        return True

    def _pause_if_refused(self, exc: Exception) -> None:
        """A 401/403 is not a conflict and not an outage: the writes stay pending, the pushes pause
        (re-checked every AUTH_RECHECK seconds) and `status`/`outbox` say why."""
        status = getattr(exc, "status", None)
        if status in (401, 403):
            self.paused = (
                f"paused: the primary refused this node's credentials ({status}); the queued writes stay pending "
                "until --primary-token is fixed (restart the node with the right token)"
            )

    # -- reporting and operators ------------------------------------------------------------------

    async def outbox(self) -> dict[str, Any]:
        status = await self._call(connection.outbox_status)
        self.metrics.outbox_pending.set(status["pending"])
        self.metrics.outbox_conflicts.set(status["failed"])
        return {**status, **self.status_extra()}

    def status_extra(self) -> dict[str, Any]:
        return {
            "push_failures": self.failures,
            "push_error": self.last_error if self.failures else None,
            "paused": self.paused,
            "last_push_at": self.last_push_at,
        }

    def _seq(self, text: str) -> int:
        seq = parse_write_id(self.node_id or "", text)
        if seq is None:
            raise OutboxNotFound(f"no write {text!r} on this node (write ids look like {self.node_id}-<n>)")
        return seq

    async def entry(self, text: str) -> dict[str, Any]:
        seq = self._seq(text)
        entry = await self._call(connection.outbox_entry, seq)
        if isinstance(entry, int):
            if seq > entry:
                raise OutboxNotFound(
                    f"write {text!r} was never issued on this node "
                    f"(its last write id is {seq_name(self.node_id, entry)})"
                )
            raise OutboxNotFound(f"write {text!r} is no longer kept on this node (applied and forgotten, or discarded)")
        return entry

    async def conflicts(self) -> list[dict[str, Any]]:
        return await self._call(connection.outbox_conflicts)

    async def resolve(self, text: str, action: str) -> dict[str, Any]:
        """`retry`: queue the conflict's statements again as a new write; `discard`: drop it."""
        result = await self._call(connection.outbox_resolve, self._seq(text), action, self.retention)
        if result is None:
            raise OutboxNotFound(f"no conflict {text!r} on this node")
        if action == "retry":
            kind, *rest = result
            if kind == "error":
                raise SQLError(f"the retried write fails here: {rest[0]}")
            self.wake()
            assert self.node_id is not None
            return {"write_id": write_id(self.node_id, rest[0]), "pending": True}
        return {"discarded": text}


def seq_name(node_id: str | None, seq: int) -> str:
    return write_id(node_id or "", seq) if seq > 0 else "none yet"


def _fingerprint(statements: list[tuple[str, list[Any]]]) -> str:
    from edgenode.idempotency import fingerprint

    return fingerprint(statements)
