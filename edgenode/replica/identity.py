"""Which primary a replica belongs to, and whether the local replica can be used as it is.

The sync protocol carries no database identity: a replica pointed at another primary would apply
that primary's frames blindly. So the node records the primary's URL (and the primary's database
id when it reports one in `/info`) next to the replica, and wipes the replica when they differ.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import msgspec

from edgenode.durable import atomic_write
from edgenode.replica.files import InvalidInfo, ReplicaFiles


class Identity(msgspec.Struct, kw_only=True):
    primary_url: str
    database_id: str | None = None
    bootstrapped_generation: int
    bootstrapped_at: float


def normalize_url(url: str) -> str:
    """The same primary however it is spelled: libsql:// is https://, default ports, no trailing slash."""
    parts = urlsplit(url.strip())
    scheme = {"libsql": "https", "wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    host = (parts.hostname or "").lower()
    port = parts.port
    if port is None or (scheme, port) in (("https", 443), ("http", 80)):
        netloc = host
    else:
        netloc = f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def read_identity(files: ReplicaFiles) -> Identity | None:
    try:
        return msgspec.json.decode(files.identity.read_bytes(), type=Identity)
    except (OSError, msgspec.DecodeError):
        return None


def write_identity(files: ReplicaFiles, primary_url: str, database_id: str | None, generation: int) -> None:
    identity = Identity(
        primary_url=normalize_url(primary_url),
        database_id=database_id,
        bootstrapped_generation=generation,
        bootstrapped_at=time.time(),
    )
    atomic_write(files.identity, msgspec.json.encode(identity))


def local_problem(files: ReplicaFiles, primary_url: str) -> str | None:
    """Why the replica on disk cannot be used for `primary_url` (None: it can, or there is none)."""
    if not files.exists():
        return None
    identity = read_identity(files)
    if identity is None:
        return "the replica has no identity file (an interrupted bootstrap, or files from elsewhere)"
    if identity.primary_url != normalize_url(primary_url):
        return f"the replica belongs to {identity.primary_url}, not {normalize_url(primary_url)}"
    if not files.db.exists():
        return "invalid local state: the identity and progress files exist but the database file does not"
    try:
        files.read_info()
    except InvalidInfo as exc:
        return f"invalid local state: {exc}"
    return None


def database_id_problem(files: ReplicaFiles, reported: str | None) -> str | None:
    """A primary that reports a database id must report the one the replica was built from."""
    identity = read_identity(files)
    if identity is None or reported is None or identity.database_id is None:
        return None
    if identity.database_id != reported:
        return f"the primary now reports database {reported}, the replica was built from {identity.database_id}"
    return None
