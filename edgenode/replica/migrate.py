"""Migrations of a replica node run on the primary, through the write path, never on the replica file."""

from __future__ import annotations

from typing import Any

from edgenode.config import Settings
from edgenode.hrana.client import BatchStepError, HranaClient
from edgenode.migrations import MigrationTarget
from edgenode.replica.identity import normalize_url


class PrimaryTarget(MigrationTarget):
    """Each migration is one atomic Hrana request (BEGIN … COMMIT) to the primary."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = normalize_url(url)
        self.client = HranaClient(self.url, token, timeout=timeout)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        result = self.client.execute(sql)
        return [tuple(row) for row in result.rows]

    def run_atomic(self, statements: list[tuple[str, list[Any]]]) -> None:
        try:
            self.client.execute_batch_atomic([(sql, params) for sql, params in statements])
        except BatchStepError as exc:
            raise RuntimeError(exc.message) from exc

    def close(self) -> None:
        self.client.close()


def target_for(settings: Settings) -> PrimaryTarget:
    assert settings.primary_url, "target_for is for replica nodes"
    return PrimaryTarget(settings.primary_url, settings.primary_token, timeout=max(30.0, settings.sync_timeout))
