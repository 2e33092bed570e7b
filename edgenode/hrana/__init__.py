"""Hrana over HTTP (v1, v2 and v3 pipeline, v3 cursor) for any database backend.

- `backend`: the seam. A `Backend` opens one `Session` per stream; sessions run SQL and raise
  `HranaError(message, code)`. No node- or primary-specific code lives in this package.
- `sql`: helpers for backends (statement splitting, `BEGIN TRANSACTION READONLY` detection, named
  argument lookup, SQLite message/apsw exception -> error code).
- `protocol`, `values`: msgspec wire types and the value codec (exact i64, base64 blobs).
- `server`: `HranaServer(backend, authenticate, ...)`, whose `.routes()` mount at the host root.
- `client`: `HranaClient`, a small synchronous pipeline client (used to forward writes to a primary).
"""

from edgenode.hrana.backend import Backend, Col, DescribeResult, HranaError, Session, StmtResult, Value

__all__ = ["Backend", "Col", "DescribeResult", "HranaError", "Session", "StmtResult", "Value"]
