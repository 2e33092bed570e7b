"""Request/response types of the text API (msgspec). Errors are the HTTP API's `ApiError`
(edgenode.api.errors: status, stable code, message), so every route answers bad input the same way."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from edgenode.api.errors import ApiError
from edgenode.vectors.models import NAME_RE, Filter, State

MAX_K = 1000
MAX_OFFSET = 10_000
MAX_QUERY_CHARS = 2000
MAX_COLUMNS = 16

# unicode61 with diacritics removed (the default), Porter stemming over it (English), or
# trigrams (substring search, and text without spaces between words such as CJK).
Tokenizer = Literal["unicode61", "porter", "trigram"]
TOKENIZE = {
    "unicode61": "unicode61 remove_diacritics 2",
    "porter": "porter unicode61 remove_diacritics 2",
    "trigram": "trigram remove_diacritics 1",
}
Syntax = Literal["fts5", "plain", "any"]
Arm = Literal["text", "vector"]


class TextSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    table: str
    columns: list[str]
    filter_columns: list[str] = []
    tokenizer: Tokenizer = "unicode61"

    def validate(self) -> None:
        if not self.columns:
            raise ApiError(400, "invalid_collection", "columns must name at least one text column")
        if len(self.columns) > MAX_COLUMNS:
            raise ApiError(400, "invalid_collection", f"at most {MAX_COLUMNS} text columns")
        for label, ident in [
            ("table", self.table),
            *(("column", c) for c in self.columns),
            *(("filter column", c) for c in self.filter_columns),
        ]:
            if not NAME_RE.match(ident):
                raise ApiError(400, "invalid_collection", f"{label} {ident!r} is not a plain SQL identifier")
        if self.table.lower().startswith(("_edgenode", "sqlite_", "_litestream", "libsql_")):
            raise ApiError(400, "invalid_collection", f"table {self.table!r} is internal and cannot be indexed")
        for label, names in (("columns", self.columns), ("filter_columns", self.filter_columns)):
            lowered = [c.lower() for c in names]
            if len(set(lowered)) != len(lowered):
                raise ApiError(400, "invalid_collection", f"{label} has duplicates")
            if any(c in ("rowid", "oid", "_rowid_", "rank") for c in lowered):
                raise ApiError(400, "invalid_collection", f"{label} may not name rowid or rank")


class Hybrid(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Reciprocal rank fusion: score = (1 - weight) / (rank_constant + text rank)
    #                                 + weight / (rank_constant + vector rank), ranks from 1.
    weight: float = 0.5
    rank_constant: int = 60
    candidates: int = 100  # per arm, at least k + offset


class SearchRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    q: str | None = None
    k: int = 10
    offset: int = 0
    syntax: Syntax = "fts5"
    filter: Filter | None = None
    weights: dict[str, float] = {}
    snippet_tokens: int = 16
    include: list[str] = []  # table columns returned with each hit, as `row`
    vector: list[float] | None = None
    collection: str | None = None
    hybrid: Hybrid = msgspec.field(default_factory=Hybrid)


class Hit(msgspec.Struct, omit_defaults=True):
    rowid: int
    score: float
    snippet: str | None = None
    arms: list[Arm] | None = None
    text_rank: int | None = None
    vector_rank: int | None = None
    distance: float | None = None
    row: dict[str, Any] | None = None


class SearchResult(msgspec.Struct):
    results: list[Hit]
    mode: Literal["text", "hybrid"]
    elapsed_ms: float


class TextCollectionInfo(msgspec.Struct, kw_only=True):
    name: str
    table: str
    columns: list[str]
    filter_columns: list[str]
    tokenizer: Tokenizer
    size: int
    state: State
    position: int
    build_seconds: float | None
    progress: float
    loaded_from_disk: bool
    builds: int
    error: str | None = None


class TextCollectionList(msgspec.Struct):
    collections: list[TextCollectionInfo]
