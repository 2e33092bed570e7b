"""Bearer-token authentication shared by the node, the primary and the Hrana endpoints.

Two kinds of credentials are accepted, as sqld does: static tokens (one read-write, one
read-only) compared in constant time, and Ed25519-signed JWTs whose claim `a` says `ro` or
`rw` (a missing claim means full access, as in sqld).
"""

from __future__ import annotations

import enum
import hmac
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# PyJWT and cryptography are imported where JWTs are used: they cost ~0.17 s of CPU at every
# start, and most nodes run with static tokens only.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class Access(enum.Enum):
    READ = "ro"
    WRITE = "rw"

    @property
    def can_write(self) -> bool:
        return self is Access.WRITE


class AuthError(Exception):
    """Missing or invalid credentials: always answered with 401."""


@dataclass(frozen=True)
class Authenticator:
    auth_token: str | None = None
    read_token: str | None = None
    jwt_public_key: Ed25519PublicKey | None = None

    @classmethod
    def from_settings(cls, auth_token: str | None, read_token: str | None, jwt_key_file: str | None) -> Authenticator:
        key = load_public_key(Path(jwt_key_file)) if jwt_key_file else None
        return cls(auth_token=auth_token, read_token=read_token, jwt_public_key=key)

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
            raise AuthError("token expired") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        claim = claims.get("a")
        if claim in (None, "rw", "rwa"):
            return Access.WRITE
        if claim in ("ro", "roa"):
            return Access.READ
        raise AuthError(f"invalid token: unknown access claim a={claim!r}")


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
