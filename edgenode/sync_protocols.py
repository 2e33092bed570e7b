"""The two sync protocols a "Turso" URL may speak, and how each side tells which one it met.

- libSQL's sync protocol (sqld, Turso Cloud's libSQL databases, `edgenode primary`): `GET /info`,
  `GET /export/{G}`, `GET|POST /sync/{G}/{start}/{end}`. Its clients: libSQL embedded replicas
  (PyPI `libsql` and `libsql-experimental` with `sync_url`, npm `@libsql/client` / `libsql` with
  `syncUrl`), and `edgenode serve --primary-url`.
- Turso Sync (the Rust rewrite's sync engine: `tursodb --sync-server`, npm `turso`): `POST
  /pull-updates` (protobuf) for pulls, logical changes pushed over Hrana. Its clients: `pyturso`'s
  `turso.sync`, npm `@tursodatabase/sync`.

Neither side speaks the other's protocol. Both say so at once: the primary answers Turso Sync's
requests with a JSON error naming the protocols (not a bare 404 the client retries or reports as
"Not Found"); the node, when `/info` is missing, asks the URL whether it is a Turso Sync server and
stops with that diagnosis instead of retrying forever.
"""

from __future__ import annotations

import httpx

# Requests Turso Sync clients send that no libSQL sync endpoint shares.
TURSO_SYNC_PATHS = ("/pull-updates",)

PRIMARY_REFUSES_TURSO_SYNC = (
    "this is edgenode primary: it serves libSQL's sync protocol (GET /info, /export/{generation}, "
    "/sync/{generation}/{start}/{end}) for libSQL embedded replicas (PyPI libsql or libsql-experimental "
    "with sync_url, npm @libsql/client or libsql with syncUrl, edgenode serve --primary-url) and Hrana "
    "(/v2/pipeline, /v3/pipeline) for remote clients; it does not serve Turso Sync (POST /pull-updates, "
    "used by pyturso's turso.sync and npm @tursodatabase/sync). Use a libSQL client against this URL."
)


def turso_sync_server_message(url: str) -> str:
    return (
        f"{url} is a Turso Sync server (it answers POST /pull-updates, the protocol of tursodb --sync-server, "
        "pyturso's turso.sync and npm @tursodatabase/sync), not a libSQL sync primary (GET /info, "
        "/export, /sync/...): edgenode serve --primary-url needs a libSQL primary (Turso Cloud libSQL "
        "database, sqld, or edgenode primary). Not retrying."
    )


class WrongProtocol(Exception):
    """The primary URL speaks another sync protocol: retrying cannot help."""

    permanent = True  # the replica's scheduler stops retrying and reports it (scheduler.halted)


async def is_turso_sync_server(http: httpx.AsyncClient, url: str) -> bool:
    """Ask `url` for an empty Turso Sync pull (read-only: it only describes what the server has)."""
    try:
        response = await http.post(f"{url}/pull-updates", content=b"", headers={"content-type": "application/protobuf"})
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.headers.get("content-type", "").startswith("application/protobuf")
