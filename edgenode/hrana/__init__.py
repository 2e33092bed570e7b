"""Hrana over HTTP (v1, v2 and v3 pipeline, v3 cursor) for any database backend.

`backend` is the seam: a backend opens one `Session` per stream and runs SQL; this package does
the protocol. No node- or primary-specific code lives here.
"""

from edgenode.hrana.backend import Backend, Col, DescribeResult, HranaError, Session, StmtResult, Value

__all__ = ["Backend", "Col", "DescribeResult", "HranaError", "Session", "StmtResult", "Value"]
