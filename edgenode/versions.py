"""Versions of edgenode and the engines under it, for `version` and `/api/v1/status`."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from edgenode import __version__


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    import apsw
    import libsql

    return {
        "edgenode": __version__,
        "python": platform.python_version(),
        "libsql": _pkg("libsql"),
        "libsql_sqlite": ".".join(map(str, libsql.sqlite_version_info)),
        "apsw": apsw.apswversion(),
        "apsw_sqlite": apsw.sqlite_lib_version(),
        "sqlite_vec": _pkg("sqlite-vec"),
        "hnswlib": _pkg("hnswlib"),
        "starlette": _pkg("starlette"),
        "msgspec": _pkg("msgspec"),
    }
