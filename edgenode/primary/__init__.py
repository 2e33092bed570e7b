"""`edgenode primary`: a local primary that libSQL embedded replicas sync from (like `turso dev`).

Modules, one job each:
- `wal`: read and verify SQLite WAL frames (salts, running checksums) exactly as SQLite recovery does.
- `generations`: `PrimaryStore`, the on-disk state (database, generations, archives), pull, export,
  push and crash-safe rollover.
- `backend`: `PrimaryBackend`, the Hrana backend over apsw connections to the primary database.
- `app`: `create_app(settings)`, the Starlette app (sync endpoints, Hrana, /health, /metrics).
- `cli`: the `edgenode primary` and `edgenode token` commands.
- `client`: a small blocking Hrana client for scripts, tests and benchmarks.
"""

# The primary's database id on every sync response (see `generations.State.database_id`). Defined
# here, in a module without imports, because the replica's relay process checks it too.
DATABASE_ID_HEADER = "x-edgenode-database-id"
