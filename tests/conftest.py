from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.procs import Proc, start

RW, RO = "rw-secret-token", "ro-secret-token"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A standalone node with a read-write and a read-only token, shared by a test module."""
    tmp = tmp_path_factory.mktemp("node")
    proc = start(
        [
            "serve",
            "--data-dir",
            str(tmp / "data"),
            "--auth-token",
            RW,
            "--read-token",
            RO,
            "--max-body-bytes",
            "65536",
            "--max-rows",
            "1000",
        ],
        tmp,
        "node",
        ready_path="/ready",
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def rw(node: Proc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {RW}"}, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def ro(node: Proc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {RO}"}, timeout=30) as client:
        yield client


def data_dir(proc: Proc) -> Path:
    return Path(proc.args[proc.args.index("--data-dir") + 1])
