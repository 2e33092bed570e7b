"""Versions of edgenode and the engines under it, for `version` and `/api/v1/status`."""

from __future__ import annotations

import functools
import platform
from importlib.metadata import PackageNotFoundError, version

from edgenode import __version__


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


@functools.cache
def _libsql_sqlite() -> str:
    """The SQLite inside libsql, asked of the engine: the binding's `sqlite_version_info` is a
    constant of its Python shim (3.42.0 in libsql 0.1.11, whose engine is 3.45.1). Cached: one
    in-memory connection per process, not one per status request."""
    import libsql

    conn = libsql.connect(":memory:")
    try:
        return str(conn.execute("SELECT sqlite_version()").fetchone()[0])
    finally:
        conn.close()


def versions() -> dict[str, str]:
    import apsw

    return {
        "edgenode": __version__,
        "python": platform.python_version(),
        "libsql": _pkg("libsql"),
        "libsql_sqlite": _libsql_sqlite(),
        "apsw": apsw.apswversion(),
        "apsw_sqlite": apsw.sqlite_lib_version(),
        "sqlite_vec": _pkg("sqlite-vec"),
        "hnswlib": _pkg("hnswlib"),
        "starlette": _pkg("starlette"),
        "msgspec": _pkg("msgspec"),
    }
