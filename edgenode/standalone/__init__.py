"""Standalone mode: the node's data is a plain local libSQL file.

Modules, one job each:
  database.py   `LocalDatabase`: the writer and reader processes, REST reads and writes, leases
  sessions.py   Hrana sessions over it: autocommit statements and interactive transactions
"""

from edgenode.standalone.database import DB_FILE, LocalDatabase

__all__ = ["DB_FILE", "LocalDatabase"]
