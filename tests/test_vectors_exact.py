"""Sidecar (edgenode.vectors.exact): what it keeps between searches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgenode.api.errors import ApiError
from edgenode.vectors.exact import MMAP_BYTES, Sidecar
from edgenode.vectors.models import CollectionSpec


def test_a_filter_is_checked_once_per_text_and_typed_parameters(tmp_path: Path) -> None:
    spec = CollectionSpec(table="items", column="emb", dim=4, metric="cosine", filter_columns=["cat"])
    sidecar = Sidecar(tmp_path / "sidecar.sqlite", spec, "uid")
    try:
        one = np.ones(4, dtype="<f4").tobytes()
        sidecar.apply([(1, one, [1]), (2, one, [2])], [], 1)
        first = sidecar.compile_filter("cat = ?", [1])
        assert sidecar.compile_filter("cat = ?", [1]) is first
        # 1.0 equals 1 in Python but binds as REAL: it gets its own compiled filter with its own type.
        as_float = sidecar.compile_filter("cat = ?", [1.0])
        assert as_float is not first and type(as_float.params[0]) is float
        # Refusals are not kept: the same bad filter is refused every time.
        for _ in range(2):
            with pytest.raises(ApiError, match="filter columns"):
                sidecar.compile_filter("price > ?", [1])
        assert sidecar.matching_rowids(first, 10) == [1]
    finally:
        sidecar.close()


def test_every_connection_gets_every_pragma(tmp_path: Path) -> None:
    # A multi-statement string would stop after journal_mode's answer row: each setting must hold.
    spec = CollectionSpec(table="items", column="emb", dim=4, metric="cosine")
    sidecar = Sidecar(tmp_path / "sidecar.sqlite", spec, "uid")
    try:
        for conn in (sidecar.writer, sidecar._reader()):
            assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
            assert conn.execute("PRAGMA synchronous").fetchall() == [(1,)]  # NORMAL
            assert conn.execute("PRAGMA mmap_size").fetchall() == [(MMAP_BYTES,)]
    finally:
        sidecar.close()


def test_a_filter_that_gives_a_non_boolean_past_the_sampled_rows_is_refused_where_it_runs(tmp_path: Path) -> None:
    spec = CollectionSpec(table="items", column="emb", dim=4, metric="cosine", filter_columns=["cat"])
    sidecar = Sidecar(tmp_path / "sidecar.sqlite", spec, "uid")
    try:
        one = np.ones(4, dtype="<f4").tobytes()
        # compile_filter samples 16 rows: all 0 or 1 here; row 40 gives 5.
        sidecar.apply([(i, one, [5 if i == 40 else i % 2]) for i in range(1, 50)], [], 1)
        compiled = sidecar.compile_filter("cat", [])
        assert sidecar.matching([1, 2, 3], compiled) == {1, 3}
        with pytest.raises(ApiError, match="boolean expression, but it gave 5"):
            sidecar.matching_rowids(compiled, 100)
        with pytest.raises(ApiError, match="boolean expression, but it gave 5"):
            sidecar.matching([39, 40], compiled)
    finally:
        sidecar.close()
