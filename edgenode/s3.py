"""A small S3 client: SigV4-signed PUT, GET, DELETE and ListObjectsV2 over httpx.

Why not boto3: the archive needs four calls on one bucket, and boto3 + botocore add ~80 MB to the
single-file binary and seconds to its start; SigV4 is one documented HMAC chain
(docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html). Works with AWS and with
S3-compatible servers (MinIO, R2, moto) through path-style URLs on a configurable endpoint.

Every PUT is one complete object (S3 makes it visible only when the whole body arrived and its
`x-amz-content-sha256` matched), so a writer killed mid-upload leaves no partial object.
Credentials come from the standard AWS_* environment variables and are never logged or returned.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UPLOAD_CHUNK = 1 << 20


class S3Error(Exception):
    """An S3 call failed; the message names the call, the status and S3's own error code."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = ""
    session_token: str | None = None

    def __repr__(self) -> str:  # never print the secret (settings dumps, tracebacks)
        return f"Credentials(access_key={self.access_key[:4]}…)"

    @classmethod
    def from_env(cls) -> Credentials:
        access = os.environ.get("AWS_ACCESS_KEY_ID")
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not access or not secret:
            raise S3Error("an s3:// archive needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
        return cls(access, secret, os.environ.get("AWS_SESSION_TOKEN") or None)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _canonical_query(query: dict[str, str]) -> str:
    return "&".join(
        f"{urllib.parse.quote(k, safe='~')}={urllib.parse.quote(v, safe='~')}" for k, v in sorted(query.items())
    )


class S3Client:
    """One bucket on one endpoint. Thread-safe (httpx.Client is)."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        region: str = "us-east-1",
        credentials: Credentials | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.bucket = bucket
        self.region = region
        self.endpoint = (endpoint or f"https://s3.{region}.amazonaws.com").rstrip("/")
        self.credentials = credentials or Credentials.from_env()
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    # -- signing -------------------------------------------------------------------------------

    def _url_path(self, key: str) -> str:
        bucket = "/" + urllib.parse.quote(self.bucket, safe="")
        return bucket + ("/" + urllib.parse.quote(key, safe="/~") if key else "")

    def _signed_headers(self, method: str, path: str, query: dict[str, str], payload_sha256: str) -> dict[str, str]:
        now = dt.datetime.now(dt.UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        host = urllib.parse.urlsplit(self.endpoint).netloc
        headers = {"host": host, "x-amz-content-sha256": payload_sha256, "x-amz-date": amz_date}
        if self.credentials.session_token:
            headers["x-amz-security-token"] = self.credentials.session_token
        canonical_query = _canonical_query(query)
        names = sorted(headers)
        canonical = "\n".join(
            [
                method,
                path,
                canonical_query,
                "".join(f"{n}:{headers[n].strip()}\n" for n in names),
                ";".join(names),
                payload_sha256,
            ]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = _hmac(("AWS4" + self.credentials.secret_key).encode(), day)
        for part in (self.region, "s3", "aws4_request"):
            key = _hmac(key, part)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.credentials.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        del headers["host"]  # httpx sets it from the URL, identically
        return headers

    def _request(
        self,
        method: str,
        key: str,
        *,
        query: dict[str, str] | None = None,
        content: bytes | Iterator[bytes] | None = None,
        payload_sha256: str = _EMPTY_SHA256,
        extra: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        query = query or {}
        path = self._url_path(key)
        headers = self._signed_headers(method, path, query, payload_sha256)
        headers.update(extra or {})
        url = self.endpoint + path + ("?" + _canonical_query(query) if query else "")
        try:
            response = self._http.request(method, url, headers=headers, content=content)
        except httpx.HTTPError as exc:
            raise S3Error(f"S3 {method} {self.bucket}/{key}: {exc}") from exc
        if response.status_code not in ok:
            code = None
            try:
                code = ET.fromstring(response.content).findtext("Code")
            except ET.ParseError:
                pass
            raise S3Error(
                f"S3 {method} {self.bucket}/{key}: HTTP {response.status_code} {code or ''}".strip(),
                response.status_code,
                code,
            )
        return response

    # -- calls ---------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        self._request("PUT", key, content=data, payload_sha256=hashlib.sha256(data).hexdigest())

    def put_file(self, key: str, path: Path, sha256: str | None = None) -> None:
        """Upload a file as one object (up to S3's 5 GB single-PUT limit), streamed from disk."""
        size = path.stat().st_size
        if sha256 is None:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(_UPLOAD_CHUNK):
                    digest.update(chunk)
            sha256 = digest.hexdigest()

        def body() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while chunk := f.read(_UPLOAD_CHUNK):
                    yield chunk

        self._request("PUT", key, content=body(), payload_sha256=sha256, extra={"content-length": str(size)})

    def get_bytes(self, key: str) -> bytes:
        return self._request("GET", key).content

    def get_to_file(self, key: str, dest: Path) -> int:
        path = self._url_path(key)
        headers = self._signed_headers("GET", path, {}, _EMPTY_SHA256)
        written = 0
        try:
            with self._http.stream("GET", self.endpoint + path, headers=headers) as response:
                if response.status_code != 200:
                    raise S3Error(f"S3 GET {self.bucket}/{key}: HTTP {response.status_code}", response.status_code)
                with open(dest, "wb") as out:
                    for chunk in response.iter_bytes(_UPLOAD_CHUNK):
                        out.write(chunk)
                        written += len(chunk)
        except httpx.HTTPError as exc:
            raise S3Error(f"S3 GET {self.bucket}/{key}: {exc}") from exc
        return written

    def delete(self, key: str) -> None:
        self._request("DELETE", key, ok=(200, 204))

    def list(self, prefix: str) -> list[tuple[str, int]]:
        """Every (key, size) under prefix, in key order (follows continuation tokens)."""
        out: list[tuple[str, int]] = []
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            root = ET.fromstring(self._request("GET", "", query=query).content)
            for item in root.iter(_NS + "Contents"):
                out.append((item.findtext(_NS + "Key") or "", int(item.findtext(_NS + "Size") or 0)))
            if root.findtext(_NS + "IsTruncated") != "true":
                return out
            token = root.findtext(_NS + "NextContinuationToken")

    def create_bucket(self) -> None:
        """For tests and first use against a local server; an existing bucket of ours is fine."""
        try:
            self._request("PUT", "")
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
