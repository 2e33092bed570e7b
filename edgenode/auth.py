"""Bearer-token authentication shared by the node, the primary and the Hrana endpoints.

Two kinds of credentials are accepted, as sqld does: static tokens (one read-write, one
read-only) compared in constant time, and Ed25519-signed JWTs whose claim `a` says `ro` or
`rw` (a missing claim means full access, as in sqld).

Revocation is key rotation, as on Turso: replacing the key file makes every token signed with the
old key invalid. A node calls `refresh_key` now and then (the change stream's heartbeat, see
`edgenode.changes`) and swaps the key in place, so every part of the node sharing this
authenticator refuses old tokens from then on. A key file that cannot be read keeps the old key
(a rotation caught half-written must not lock everyone out); it is logged once.

`access_token` is the one place a token may come in a URL's query, for browsers' `EventSource`
and `WebSocket`, which cannot set headers; only routes that say so take it (`api/routing.py`),
and log lines never show it (`edgenode.http_server`).
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

# PyJWT and cryptography are imported where JWTs are used: they cost ~0.17 s of CPU at every
# start, and most nodes run with static tokens only.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

QUERY_TOKEN = "access_token"
# Identifies one version of the key file: a rotation replaces it (new inode) or rewrites it.
KeyStamp = tuple[int, int, int, int]


class Access(enum.Enum):
    READ = "ro"
    WRITE = "rw"

    @property
    def can_write(self) -> bool:
        return self is Access.WRITE


class AuthError(Exception):
    """Missing or invalid credentials: always answered with 401."""


class TokenExpired(AuthError):
    """A JWT past its `exp`."""


@dataclass(eq=False)
class Authenticator:
    auth_token: str | None = None
    read_token: str | None = None
    jwt_public_key: Ed25519PublicKey | None = None
    jwt_key_file: Path | None = None  # re-read by `refresh_key` when it changes
    _key_stamp: KeyStamp | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, auth_token: str | None, read_token: str | None, jwt_key_file: str | None) -> Authenticator:
        if not jwt_key_file:
            return cls(auth_token=auth_token, read_token=read_token)
        path = Path(jwt_key_file)
        stamp = _stamp(path)  # before the read: a change after it is seen by the next refresh
        key = load_public_key(path)
        return cls(auth_token, read_token, key, path, stamp)

    async def refresh_key(self) -> bool:
        """Re-read the key file if it changed since it was read; True when the key is now another
        one (tokens signed with the old key no longer verify). The file is read off the event
        loop; the key is swapped on it, so a request is checked against one key or the other."""
        if self.jwt_key_file is None:
            return False
        stamp, loaded = await asyncio.to_thread(_read_if_changed, self.jwt_key_file, self._key_stamp)
        if stamp == self._key_stamp:
            return False
        self._key_stamp = stamp
        if isinstance(loaded, Exception):
            log.warning("the JWT key file changed but cannot be used (keeping the previous key): %s", loaded)
            return False
        if loaded is None or _raw(loaded) == _raw(self.jwt_public_key):
            return False
        self.jwt_public_key = loaded
        log.warning("the JWT key in %s was rotated: tokens signed with the previous key are refused", self.jwt_key_file)
        return True

    @property
    def enabled(self) -> bool:
        return bool(self.auth_token or self.read_token or self.jwt_public_key)

    def check(self, authorization: str | None) -> Access:
        """Map an `Authorization` header value to an access level, or raise AuthError."""
        if not self.enabled:
            return Access.WRITE
        if not authorization:
            raise AuthError("missing Authorization header: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("malformed Authorization header: expected 'Bearer <token>'")
        # Check every static token even after a match so timing does not tell which one it was.
        is_rw = self.auth_token is not None and hmac.compare_digest(token.encode(), self.auth_token.encode())
        is_ro = self.read_token is not None and hmac.compare_digest(token.encode(), self.read_token.encode())
        if is_rw:
            return Access.WRITE
        if is_ro:
            return Access.READ
        if self.jwt_public_key is not None and token.count(".") == 2:
            return self._check_jwt(token)
        raise AuthError("invalid token")

    def check_query_token(self, token: str) -> Access:
        """`check` for a token given as `?access_token=`; errors name where the token came from."""
        if not self.enabled:
            return Access.WRITE
        if not token.strip():
            raise AuthError(f"{QUERY_TOKEN} is empty: give the token, ?{QUERY_TOKEN}=<token>")
        try:
            return self.check(f"Bearer {token}")
        except AuthError as exc:
            raise type(exc)(f"{QUERY_TOKEN}: {exc}") from exc

    def expires_at(self, authorization: str | None) -> float | None:
        """When an accepted credential stops being valid (a JWT's `exp`, Unix seconds), else None.
        Call after `check` accepted it: the signature is not verified again."""
        if self.jwt_public_key is None or not authorization:
            return None
        token = authorization.partition(" ")[2].strip()
        if token.count(".") != 2 or token in (self.auth_token, self.read_token):
            return None
        import jwt

        try:
            exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
        except jwt.PyJWTError:
            return None
        return float(exp) if isinstance(exp, int | float) else None

    def _check_jwt(self, token: str) -> Access:
        import jwt

        try:
            claims = jwt.decode(
                token, self.jwt_public_key, algorithms=["EdDSA"], options={"require": [], "verify_aud": False}
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired("token expired") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        claim = claims.get("a")
        if claim in (None, "rw", "rwa"):
            return Access.WRITE
        if claim in ("ro", "roa"):
            return Access.READ
        raise AuthError(f"invalid token: unknown access claim a={claim!r}")


def query_token(query_string: bytes) -> str | None:
    """The `access_token` of a raw query string, None when there is none."""
    if QUERY_TOKEN.encode() not in query_string and b"%" not in query_string:
        return None  # the common case, without parsing
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name == QUERY_TOKEN:
            return value
    return None


def _stamp(path: Path) -> KeyStamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size)


def _read_if_changed(path: Path, known: KeyStamp | None) -> tuple[KeyStamp | None, Ed25519PublicKey | Exception | None]:
    """(stamp, key) of the file when its stamp differs from `known`; blocking (run in a thread)."""
    stamp = _stamp(path)
    if stamp == known:
        return known, None
    if stamp is None:
        return None, AuthError(f"cannot stat {path}")
    try:
        return stamp, load_public_key(path)
    except AuthError as exc:
        return stamp, exc


def _raw(key: Ed25519PublicKey | None) -> bytes:
    from cryptography.hazmat.primitives import serialization

    if key is None:
        return b""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise AuthError(f"cannot read Ed25519 public key from {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise AuthError(f"{path} is not an Ed25519 public key")
    return key


def generate_keypair(directory: Path) -> tuple[Path, Path]:
    """Write `jwt_private.pem` (mode 0600) and `jwt_public.pem` into directory."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    private_path = directory / "jwt_private.pem"
    public_path = directory / "jwt_public.pem"
    private_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path


def mint_token(private_key_pem: bytes, access: Access, ttl_seconds: int | None = None) -> str:
    import jwt
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_key_pem, password=None)
    claims: dict[str, object] = {"a": access.value, "iat": int(time.time())}
    if ttl_seconds is not None:
        claims["exp"] = int(time.time()) + ttl_seconds
    return jwt.encode(claims, key, algorithm="EdDSA")
