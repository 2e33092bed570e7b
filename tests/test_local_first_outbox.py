"""The local-first outbox file (`edgenode.replica.outbox`) and the `write_mode` setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgenode.config import ConfigError, load_settings
from edgenode.idempotency import REJECTED, Decision
from edgenode.replica.outbox import Outbox, parse_write_id, write_id
from edgenode.results import ExecResult

BIG = 2**63 - 1


def queue(outbox: Outbox, value: object, key: str | None = None) -> int:
    statements = [("INSERT INTO t (v) VALUES (?)", [value])]
    local = [("INSERT INTO t (v) VALUES (?)", [value], True, True)]
    return outbox.append([(key, f"fp-{value!r}", statements, local, [ExecResult(1, 7)])], retention=60)[0]


def test_writes_queue_in_seq_order_with_exact_values_and_survive_a_reopen(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    node = outbox.node_id
    assert [queue(outbox, BIG), queue(outbox, b"\x00\xff", key="k1"), queue(outbox, 1.5)] == [1, 2, 3]
    outbox.close()
    outbox = Outbox(tmp_path / "outbox.db")
    assert outbox.node_id == node
    batch = outbox.undecided()
    assert [(w.seq, w.statements[0][1]) for w in batch] == [(1, [BIG]), (2, [b"\x00\xff"]), (3, [1.5])]
    assert outbox.find_key("k1") == (2, "fp-b'\\x00\\xff'", [ExecResult(1, 7)])
    assert outbox.status()["pending"] == 3 and outbox.confirmed() == 0
    assert parse_write_id(node, write_id(node, 12)) == 12 and parse_write_id(node, "other-12") is None


def test_decisions_move_writes_to_pushed_or_conflicts_and_a_pull_settles_them(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    for value in range(4):
        queue(outbox, value)
    error = {"code": "SQLITE_CONSTRAINT", "message": "UNIQUE constraint failed: t.v"}
    counts = outbox.record(
        [Decision(1, "applied", results=[(1, 10)]), Decision(2, "rejected", error=error), Decision(3, "undecided")],
        failure="timeout",
    )
    assert counts == {"applied": 1, "rejected": 1, "undecided": 1}
    assert outbox.confirmed() == 2  # write 3 is still pending
    assert [c["error"] for c in outbox.conflicts()] == [error]
    assert [seq for seq, _ in outbox.replayable()] == [1, 3, 4]
    # A pull shows writes up to 3 decided: 1 is done, 3 (its reply lost) takes its recorded outcome.
    assert outbox.pending_up_to(3) == [3]
    outbox.settle(3, {3: REJECTED})
    assert [seq for seq, _ in outbox.replayable()] == [4]
    assert outbox.entry(1)["state"] == "applied" and outbox.entry(3)["state"] == "conflict"
    assert outbox.status() | {"oldest_pending_s": None} == outbox.status() | {
        "pending": 1,
        "pushed": 1,
        "failed": 2,
        "oldest_pending_s": None,
        "pushed_not_pulled": 0,
        "pulled_hwm": 3,
    }
    taken = outbox.take_conflict(2)
    assert taken is not None and taken[1] == [("INSERT INTO t (v) VALUES (?)", [1])]
    assert outbox.take_conflict(2) is None and len(outbox.conflicts()) == 1


def test_local_first_needs_a_primary_and_reads_its_flag_and_environment() -> None:
    assert load_settings(env={"EDGENODE_WRITE_MODE": "local-first", "EDGENODE_PRIMARY_URL": "http://p"}).write_mode == (
        "local-first"
    )
    assert load_settings(env={}).write_mode == "forward"
    with pytest.raises(ConfigError, match="write_mode"):
        load_settings({"write_mode": "local-first"}, env={})
    with pytest.raises(ConfigError, match="write_mode"):
        load_settings({"write_mode": "later", "primary_url": "http://p"}, env={})


def test_a_local_first_relay_refuses_to_push_frames_and_still_pulls() -> None:
    import asyncio

    import httpx

    from edgenode.replica.relay import RelayApp

    async def ask(refuse: bool, method: str) -> tuple[int, str]:
        # Upstream is a closed port: a forwarded request is 424 "primary unreachable", a refused push 424 at once.
        app = RelayApp("http://127.0.0.1:9", 1.0, refuse_push=refuse)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://relay") as client:
            response = await client.request(method, "/sync/1/4/5", content=b"x" * 10)
            return response.status_code, response.text

    status, text = asyncio.run(ask(True, "POST"))
    assert status == 424 and "never pushed" in text
    status, text = asyncio.run(ask(False, "POST"))
    assert status == 424 and "unreachable" in text  # forward mode passes pushes on
    status, text = asyncio.run(ask(True, "GET"))
    assert "unreachable" in text  # pulls pass through


def test_a_write_id_with_a_seq_beyond_sqlite_integers_or_non_ascii_digits_names_no_write() -> None:
    node = "n1"
    assert parse_write_id(node, f"{node}-{2**63 - 1}") == 2**63 - 1
    for seq in (str(2**63), "9" * 30, "\u00b2", "\u0661", "", "-1", "1 "):
        assert parse_write_id(node, f"{node}-{seq}") is None
