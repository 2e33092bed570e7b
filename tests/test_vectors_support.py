"""Shared helpers for the vector tests: a real standalone LocalDatabase and generated data."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgenode.pragmas import select_profile
from edgenode.standalone import LocalDatabase

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def blob(vector: np.ndarray) -> dict[str, str]:
    return {"base64": base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()}


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """Gaussian mixture, L2-normalised: easier than real embeddings, but enough to test recall."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


async def open_db(path: Path) -> LocalDatabase:
    db = LocalDatabase(path, select_profile("auto", data_dir=path), migrate=False)
    await db.start()
    return db


async def make_items(db: LocalDatabase, vectors: np.ndarray, dim: int | None = None, start_id: int = 1) -> None:
    dim = dim or vectors.shape[1]
    await db.write(
        [
            (
                f"CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, emb F32_BLOB({dim}), cat TEXT, price REAL)",
                [],
            )
        ]
    )
    await insert_items(db, vectors, start_id)


async def insert_items(db: LocalDatabase, vectors: np.ndarray, start_id: int = 1) -> None:
    for s in range(0, len(vectors), 1000):
        await db.write(
            [
                (
                    "INSERT INTO items(id, emb, cat, price) VALUES (?, ?, ?, ?)",
                    [start_id + i, blob(vectors[i]), "abcdefghij"[(start_id + i) % 10], float(start_id + i)],
                )
                for i in range(s, min(s + 1000, len(vectors)))
            ]
        )


def exact_topk(base: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    d = 1 - base @ query
    return [int(ids[i]) for i in np.argsort(d, kind="stable")[:k]]
