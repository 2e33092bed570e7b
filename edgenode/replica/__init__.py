"""Replica mode: the node keeps an embedded libSQL replica of a primary (Turso or `edgenode primary`)."""

from __future__ import annotations

from typing import Any

__all__ = ["ReplicaDatabase"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m edgenode.replica.relay` does not import the database layer first.
    if name == "ReplicaDatabase":
        from edgenode.replica.database import ReplicaDatabase

        return ReplicaDatabase
    raise AttributeError(name)
