"""A small S3 client: SigV4-signed PUT, GET, DELETE and ListObjectsV2 over httpx.

Why not boto3: the archive needs four calls on one bucket, and boto3 + botocore add ~80 MB to the
single-file binary and seconds to its start; SigV4 is one documented HMAC chain
(docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html). Works with AWS and with
S3-compatible servers (MinIO, R2, moto) through path-style URLs on a configurable endpoint.

Every PUT is one complete object (S3 makes it visible only when the whole body arrived and its
`x-amz-content-sha256` matched), so a writer killed mid-upload leaves no partial object. An object
above `multipart_threshold` goes up as a multipart upload instead (one part in memory at a time,
each part signed with its own SHA-256; S3 shows the object only when the upload is completed): a
failed upload is aborted at once, and one left by a killed writer is invisible until
`abort_uploads` (called when the archiver starts) removes it.
Credentials come from the standard AWS_* environment variables and are never logged or returned.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
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
MULTIPART_THRESHOLD = 64 << 20
MIN_PART = 5 << 20  # S3's smallest part (all but the last)
MAX_PART = 16 << 20

log = logging.getLogger("edgenode.s3")


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
        multipart_threshold: int = MULTIPART_THRESHOLD,
    ) -> None:
        self.bucket = bucket
        self.multipart_threshold = multipart_threshold
        self.part_size = max(MIN_PART, min(multipart_threshold, MAX_PART))
        self.multipart_uploads = 0  # completed ones, for status and tests
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
        if len(data) > self.multipart_threshold:
            view = memoryview(data)
            self._multipart(key, (bytes(view[i : i + self.part_size]) for i in range(0, len(data), self.part_size)))
            return
        self._request("PUT", key, content=data, payload_sha256=hashlib.sha256(data).hexdigest())

    def put_file(self, key: str, path: Path, sha256: str | None = None) -> None:
        """Upload a file as one object, streamed from disk (multipart above the threshold)."""
        size = path.stat().st_size
        if size > self.multipart_threshold:

            def parts() -> Iterator[bytes]:
                with open(path, "rb") as f:
                    while part := f.read(self.part_size):
                        yield part

            self._multipart(key, parts())
            return
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

    def _multipart(self, key: str, parts: Iterator[bytes]) -> None:
        """Create, upload each part, complete; abort on any failure (no orphaned parts billed)."""
        created = self._request("POST", key, query={"uploads": ""})
        upload_id = ET.fromstring(created.content).findtext(_NS + "UploadId")
        if not upload_id:
            raise S3Error(f"S3 POST {self.bucket}/{key}?uploads: no UploadId in the answer")
        try:
            etags: list[str] = []
            for number, part in enumerate(parts, 1):
                answer = self._request(
                    "PUT",
                    key,
                    query={"partNumber": str(number), "uploadId": upload_id},
                    content=part,
                    payload_sha256=hashlib.sha256(part).hexdigest(),
                )
                etags.append(answer.headers.get("etag", ""))
            body = (
                "<CompleteMultipartUpload>"
                + "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in enumerate(etags, 1))
                + "</CompleteMultipartUpload>"
            ).encode()
            done = self._request(
                "POST",
                key,
                query={"uploadId": upload_id},
                content=body,
                payload_sha256=hashlib.sha256(body).hexdigest(),
            )
            # S3 may answer 200 and report the failure in the body (it streams the answer while it assembles).
            if ET.fromstring(done.content).tag.endswith("Error"):
                code = ET.fromstring(done.content).findtext("Code")
                raise S3Error(f"S3 complete multipart {self.bucket}/{key}: {code}", 200, code)
        except BaseException:
            self.abort_upload(key, upload_id)
            raise
        self.multipart_uploads += 1

    def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            self._request("DELETE", key, query={"uploadId": upload_id}, ok=(200, 204, 404))
        except S3Error as exc:
            log.warning("could not abort the multipart upload of %s/%s (it stays invisible): %s", self.bucket, key, exc)

    def abort_uploads(self, prefix: str) -> int:
        """Abort every unfinished multipart upload under prefix (a killed writer's); their parts were
        never visible as an object. Returns how many."""
        root = ET.fromstring(self._request("GET", "", query={"uploads": "", "prefix": prefix}).content)
        aborted = 0
        for upload in root.iter(_NS + "Upload"):
            key, upload_id = upload.findtext(_NS + "Key"), upload.findtext(_NS + "UploadId")
            if key and upload_id:
                self.abort_upload(key, upload_id)
                aborted += 1
        return aborted

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

    def list(self, prefix: str, start_after: str | None = None, end_before: str | None = None) -> list[tuple[str, int]]:
        """Every (key, size) under prefix, in key order (follows continuation tokens); with
        start_after / end_before only the keys strictly between (S3 starts there; the paging stops
        at end_before)."""
        out: list[tuple[str, int]] = []
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            elif start_after is not None:
                query["start-after"] = start_after
            root = ET.fromstring(self._request("GET", "", query=query).content)
            for item in root.iter(_NS + "Contents"):
                key = item.findtext(_NS + "Key") or ""
                if end_before is not None and key >= end_before:
                    return out
                out.append((key, int(item.findtext(_NS + "Size") or 0)))
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
