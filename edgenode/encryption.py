"""Encryption at rest of a standalone node's database: the key, the checks at start, what is covered.

The key comes from the environment (`EDGENODE_ENCRYPTION_KEY`) or a file (`encryption_key_file`),
never from a flag (it would show in `ps`) and never into `Settings`, logs or status: it travels as
a `Secret`, whose repr hides it, to the connection processes, which hand it to libSQL's
`encryption_key` (libSQL encrypts every page of the database file and of its WAL).

What libSQL's encryption does not cover is said at start, file by file (`coverage`): the vector
indexes and sqlite-vec sidecars (`vectors/`), the full-text indexes (`text/`) and backups hold the
data in plaintext, so a node with a key refuses to start until `allow_plaintext_derived` accepts
that. Where libSQL cannot encrypt (a synced replica) or edgenode does not (the primary, plain
SQLite through apsw whose sync protocol ships raw WAL frames), start is refused in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgenode.config import Settings

KEY_ENV = "EDGENODE_ENCRYPTION_KEY"
SQLITE_MAGIC = b"SQLite format 3\x00"


class EncryptionError(Exception):
    """A key problem that stops the start; the message is one line saying what to do."""


class Secret:
    """The key; printing or logging it shows nothing of it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:  # sent to connection processes by pickle
        return (Secret, (self.value,))


def load_key(settings: Settings, env: dict[str, str] | None = None) -> Secret | None:
    return load_key_from(settings.encryption_key_file, env)


def load_key_from(key_file: str | None, env: dict[str, str] | None = None) -> Secret | None:
    """The key from the environment or from `key_file` (one of them, not both), or None."""
    env = dict(os.environ) if env is None else env
    from_env = env.get(KEY_ENV) or None
    if from_env and key_file:
        raise EncryptionError(f"both {KEY_ENV} and encryption_key_file are set; keep one")
    if from_env:
        return Secret(from_env)
    if not key_file:
        return None
    path = Path(key_file)
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise EncryptionError(f"cannot read the encryption key file {path}: {exc.strerror}") from None
    if not value:
        raise EncryptionError(f"the encryption key file {path} is empty")
    return Secret(value)


def is_encrypted(path: Path) -> bool | None:
    """True/False for an existing database file with content, None when there is nothing yet."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        return None
    return None if not head else head != SQLITE_MAGIC


def check_database(path: Path, key: Secret | None) -> None:
    """Refuse, before anything opens it for writing, a database the key does not fit."""
    encrypted = is_encrypted(path)
    if encrypted is None:
        return
    if encrypted and key is None:
        raise EncryptionError(
            f"{path} is encrypted (or not a SQLite database): give its key in {KEY_ENV} or encryption_key_file"
        )
    if not encrypted and key is not None:
        raise EncryptionError(
            f"{path} is a plaintext database but an encryption key is set: start without the key "
            "(encrypting an existing database in place is not supported; restore it into a new data dir)"
        )
    if key is not None:
        import libsql

        try:
            # Read-only probe: a wrong key fails on the first page and nothing is written.
            conn = libsql.connect(f"file:{path}?mode=ro", encryption_key=key.value)
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
            conn.close()
        except Exception:
            raise EncryptionError(
                f"{path} cannot be read with this encryption key (wrong key?); nothing was changed"
            ) from None


def coverage(data_dir: Path, db_name: str) -> list[tuple[str, bool]]:
    """(what, encrypted) for the database and every file derived from it."""
    return [
        (f"{data_dir / db_name} and its -wal (libSQL encryption_key)", True),
        (f"{data_dir / 'vectors'}/ (HNSW indexes, sqlite-vec sidecars)", False),
        (f"{data_dir / 'text'}/ (FTS5 full-text indexes)", False),
        ("backups (edgenode backup, POST /api/v1/backup): encrypted with the same key", True),
    ]


def check_start(settings: Settings, db_name: str, role: str) -> tuple[Secret | None, list[str]]:
    """The key and the lines to print at start; raises EncryptionError when the node must not start."""
    key = load_key(settings)
    if key is None:
        if role == "standalone":
            check_database(settings.data_path / db_name, None)  # an encrypted file needs its key
        return None, []
    if role == "replica":
        raise EncryptionError(
            "encryption at rest is not available on a replica (libSQL refuses an encryption key on a synced "
            f"replica); unset {KEY_ENV} / encryption_key_file, or run standalone"
        )
    if role == "primary":
        raise EncryptionError(
            "edgenode primary does not encrypt its database (plain SQLite whose sync protocol ships raw WAL "
            f"frames); unset {KEY_ENV} / encryption_key_file for the primary"
        )
    check_database(settings.data_path / db_name, key)
    covered = coverage(settings.data_path, db_name)
    lines = [f"encryption at rest: {'encrypted' if enc else 'NOT encrypted'}: {what}" for what, enc in covered]
    if not settings.allow_plaintext_derived:
        plain = "; ".join(what for what, enc in covered if not enc)
        raise EncryptionError(
            f"with an encryption key these stay plaintext: {plain}. Start with --allow-plaintext-derived "
            "(EDGENODE_ALLOW_PLAINTEXT_DERIVED=1) to accept that"
        )
    return key, lines
