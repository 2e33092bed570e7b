"""Request/response types of the vector API (msgspec) and the one error type it raises."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from edgenode.api.errors import ApiError

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MAX_DIM = 4096
MAX_K = 1000
MAX_EF = 10_000
MAX_BATCH = 1000

Metric = Literal["cosine", "l2", "ip"]
Mode = Literal["auto", "ann", "exact"]
State = Literal["loading", "building", "ready", "error"]


class HnswParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # M=16/efC=200/ef=64 measured recall 0.965 on real MiniLM data at 100k (docs/design.md).
    m: Annotated[int, msgspec.Meta(ge=4, le=128)] = 16
    ef_construction: Annotated[int, msgspec.Meta(ge=8, le=2000)] = 200
    ef_search: Annotated[int, msgspec.Meta(ge=1, le=MAX_EF)] = 64


class CollectionSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    table: str
    column: str
    dim: Annotated[int, msgspec.Meta(ge=1, le=MAX_DIM)]
    metric: Metric = "cosine"
    filter_columns: list[str] = []
    hnsw: HnswParams = msgspec.field(default_factory=HnswParams)

    def validate(self) -> None:
        for label, ident in [("table", self.table), ("column", self.column)] + [
            ("filter column", c) for c in self.filter_columns
        ]:
            if not NAME_RE.match(ident):
                raise ApiError(400, "invalid_collection", f"{label} {ident!r} is not a plain SQL identifier")
        if self.table.lower().startswith(("_edgenode", "sqlite_", "_litestream", "libsql_")):
            raise ApiError(400, "invalid_collection", f"table {self.table!r} is internal and cannot be indexed")
        lowered = [c.lower() for c in self.filter_columns]
        if len(set(lowered)) != len(lowered):
            raise ApiError(400, "invalid_collection", "filter_columns has duplicates")
        if self.column.lower() in lowered:
            raise ApiError(400, "invalid_collection", "the embedding column cannot be a filter column")
        if any(c in ("rowid", "oid", "_rowid_") for c in lowered):
            raise ApiError(400, "invalid_collection", "rowid cannot be a filter column")


class Filter(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    sql: str
    params: list[str | int | float | bool | None] = []


class SearchRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    vector: list[float] | None = None
    vectors: list[list[float]] | None = None
    k: int = 10
    filter: Filter | None = None
    mode: Mode = "auto"
    ef: int | None = None
    include: list[str] = []


class Hit(msgspec.Struct):
    rowid: int
    distance: float
    row: dict[str, Any] | None = None


class SearchResult(msgspec.Struct):
    results: list[Hit]
    mode: Literal["ann", "exact"]
    candidates: int
    elapsed_ms: float


class SearchBatchResult(msgspec.Struct):
    batch: list[SearchResult]
    elapsed_ms: float


class CollectionInfo(msgspec.Struct, kw_only=True):
    name: str
    table: str
    column: str
    dim: int
    metric: Metric
    filter_columns: list[str]
    hnsw: HnswParams
    size: int
    state: State
    position: int
    build_seconds: float | None
    progress: float
    deleted: int
    skipped: int
    loaded_from_disk: bool
    builds: int
    resumed_from: int = 0
    error: str | None = None


class CollectionList(msgspec.Struct):
    collections: list[CollectionInfo]
