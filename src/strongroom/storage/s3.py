"""A repository in an S3-compatible object store (AWS S3, Ceph RADOS Gateway, MinIO…).

Locations, as restic writes them:

- `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`: a custom endpoint, path-style
  addressing (what self-hosted gateways expect); `s3:HOST/BUCKET` means https.
- `s3://BUCKET[/PREFIX]`: the endpoint from STRONGROOM_S3_ENDPOINT, else
  AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS itself.

Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws, instance roles); never from the
location, so they never reach a log or an error message. The region is boto3's
(AWS_DEFAULT_REGION, the profile), else us-east-1.

Why it fits the contract: a single PUT is atomic (readers see the old state or
the whole object) and durable when it returns, and S3 has been strongly
consistent for reads and listings since 2020 (Ceph always was). Exclusive
`create` is a conditional PUT (`If-None-Match: *`); a server that ignores or
rejects that header gets HEAD-then-PUT, which is not atomic, and the backend
then says so in `capabilities.atomic_create`. Names below `tmp/` are reserved
(as in the local backend) for the probe that finds that out.

The bucket is created on the first write that finds it missing, so `init` on a
new bucket just works; reads of a missing bucket fail with a message naming it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, TypeVar

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from strongroom.errors import (
    InvalidObjectName,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StorageFull,
    TransientStorageError,
    UsageError,
)
from strongroom.storage.base import Capabilities, Content, ObjectInfo, check_name, content_bytes

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client

T = TypeVar("T")

TMP_DIR = "tmp"
PARALLEL_REQUESTS = 8
# Streamed objects (data packs, 16 MiB by default) stay in memory up to this size,
# then spill to a temporary file; they go up in one PUT up to _MULTIPART_BYTES.
_SPOOL_BYTES = 8 << 20
_MULTIPART_BYTES = 64 << 20
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
    "403",
}
_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404"}
_QUOTA_CODES = {"QuotaExceeded", "EntityTooLarge"}
_TRANSIENT_CODES = {"SlowDown", "Throttling", "RequestTimeout", "ServiceUnavailable"}


def _code(err: botocore.exceptions.ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


@dataclass(frozen=True)
class S3Location:
    endpoint: str | None  # None: AWS, found by boto3
    bucket: str
    prefix: str  # "" or "some/path/" (always ends with a slash)


def parse_location(location: str) -> S3Location:
    """Split an `s3:` location; UsageError if it is malformed or carries credentials."""
    if not location.startswith("s3:"):
        raise UsageError(f"not an S3 location: {location}")
    rest = location[len("s3:") :]
    if rest.startswith("//"):
        endpoint = (
            os.environ.get("STRONGROOM_S3_ENDPOINT")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )
        path = rest[2:]
    else:
        url = urllib.parse.urlsplit(rest if "://" in rest else "https://" + rest)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise UsageError(f"S3 location {location}: expected s3:http(s)://HOST/BUCKET[/PREFIX]")
        if url.username is not None or url.password is not None:
            raise UsageError(
                "S3 credentials do not belong in the repository location: "
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        if url.query or url.fragment:
            raise UsageError(f"S3 location {location}: no query or fragment expected")
        endpoint = f"{url.scheme}://{url.netloc}"
        path = url.path.lstrip("/")
    bucket, _, prefix = path.partition("/")
    if not _BUCKET.match(bucket):
        raise UsageError(
            f"S3 location {location}: {bucket!r} is not a valid bucket name "
            "(3-63 lowercase letters, digits, dots and hyphens)"
        )
    prefix = prefix.strip("/")
    return S3Location(endpoint, bucket, prefix + "/" if prefix else "")


class S3Backend:
    """Objects as keys `PREFIX/NAME` in one bucket; thread-safe (one boto3 client,
    which is; sessions are not, so there is only the one made here)."""

    def __init__(
        self,
        location: str,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        attempts: int = 3,
    ) -> None:
        """Build the client (credentials are looked up now; the store is not contacted).
        `attempts` counts botocore's tries per request (standard retry mode:
        throttling, 5xx, connection errors; 3 keep a dead endpoint's error under ~6 s)."""
        self.location = location
        self._where = parse_location(location)
        self.bucket = self._where.bucket
        self._endpoint_name = self._where.endpoint or "AWS S3"
        self.capabilities = Capabilities(
            atomic_create=True,
            ranged_get=True,
            listing_consistent=True,
            parallel_requests=PARALLEL_REQUESTS,
            remote=True,
        )
        self._conditional: bool | None = None  # does the server honour If-None-Match?
        self._probe_lock = threading.Lock()
        self._bucket_lock = threading.Lock()
        self._bucket_known = False  # ensure_bucket() succeeded once
        session = boto3.session.Session()
        config = Config(
            region_name=session.region_name or "us-east-1",
            retries={"mode": "standard", "max_attempts": attempts},
            # room for our requests plus the multipart uploader's threads
            max_pool_connections=2 * PARALLEL_REQUESTS,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            s3={"addressing_style": "path" if self._where.endpoint else "auto"},
            # Objects are authenticated by the repository layer; the flexible
            # checksums boto3 sends by default are refused by many S3-compatible
            # servers (Ceph before 19, older MinIO), so only where S3 requires them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: S3Client = session.client(
            "s3", endpoint_url=self._where.endpoint, config=config
        )
        self._transfer = TransferConfig(
            multipart_threshold=_MULTIPART_BYTES,
            multipart_chunksize=_MULTIPART_BYTES // 4,
            max_concurrency=PARALLEL_REQUESTS // 2,
        )

    # --- helpers -------------------------------------------------------------

    def _key(self, name: str) -> str:
        if check_name(name).split("/", 1)[0] == TMP_DIR:
            raise InvalidObjectName(f"object name {name!r} is reserved for temporary objects")
        return self._where.prefix + name

    def _error(self, err: Exception, what: str, name: str = "") -> StorageError:
        """One user-facing line for a boto3/botocore failure; never the credentials."""
        if isinstance(err, botocore.exceptions.ClientError):
            info = err.response.get("Error", {})
            code = _code(err)
            status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in _NOT_FOUND_CODES and not name:  # a bucket-wide request
                return StorageError(f"S3 bucket {self.bucket} not found at {self._endpoint_name}")
            if code in _NOT_FOUND_CODES:
                return ObjectNotFound(f"object {name} not found in {self.location}")
            if code == "NoSuchBucket":
                return StorageError(
                    f"S3 bucket {self.bucket} does not exist at {self._endpoint_name}"
                )
            if code in _AUTH_CODES:
                return StorageError(
                    f"S3 access denied for bucket {self.bucket} ({code}): check "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the "
                    "bucket's permissions"
                )
            if code in _QUOTA_CODES:
                return StorageFull(f"S3 quota exceeded in bucket {self.bucket} while {what}")
            message = " ".join(str(info.get("Message") or "").split())
            detail = f"{code or status}{': ' + message if message else ''}"
            if status >= 500 or code in _TRANSIENT_CODES:
                return TransientStorageError(f"S3 server error while {what}: {detail}")
            return StorageError(f"S3 error while {what}: {detail}")
        if isinstance(err, botocore.exceptions.NoCredentialsError):
            return StorageError(
                "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE)"
            )
        if isinstance(
            err, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError
        ):
            reason = str(getattr(err, "kwargs", {}).get("error", "")) or type(err).__name__
            errno_part = re.search(r"\[Errno[^\]]*\].*", reason)  # urllib3 wraps it in noise
            reason = errno_part.group(0) if errno_part else reason
            return TransientStorageError(
                f"cannot reach S3 endpoint {self._endpoint_name} while {what}: "
                + " ".join(reason.split())
            )
        return StorageError(f"S3 error while {what}: " + " ".join(str(err).split()))

    def _call(self, what: str, name: str, request: Callable[[], T]) -> T:
        try:
            return request()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
            raise self._error(err, what, name) from None

    def _write(self, what: str, name: str, request: Callable[[], T]) -> T:
        """Like `_call`, but a missing bucket is created and the write tried again."""
        try:
            return request()
        except botocore.exceptions.ClientError as err:
            if _code(err) != "NoSuchBucket":
                raise self._error(err, what, name) from None
        except botocore.exceptions.BotoCoreError as err:
            raise self._error(err, what, name) from None
        self.ensure_bucket()
        return self._call(what, name, request)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (in the client's region); idempotent."""
        with self._bucket_lock:
            try:
                self._client.head_bucket(Bucket=self.bucket)
                self._bucket_known = True
                return
            except botocore.exceptions.ClientError as err:
                if _code(err) not in ("404", "NoSuchBucket"):
                    raise self._error(err, f"checking bucket {self.bucket}") from None
            except botocore.exceptions.BotoCoreError as err:
                raise self._error(err, f"checking bucket {self.bucket}") from None
            region = self._client.meta.region_name
            try:
                if region == "us-east-1" or self._where.endpoint:
                    self._client.create_bucket(Bucket=self.bucket)
                else:
                    self._client.create_bucket(
                        Bucket=self.bucket,
                        CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                    )
            except botocore.exceptions.ClientError as err:
                if _code(err) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise self._error(err, f"creating bucket {self.bucket}") from None
            except botocore.exceptions.BotoCoreError as err:
                raise self._error(err, f"creating bucket {self.bucket}") from None
            self._bucket_known = True

    def _head(self, name: str) -> int | None:
        """The object's size, or None if it does not exist."""
        try:
            return self._client.head_object(Bucket=self.bucket, Key=self._key(name))[
                "ContentLength"
            ]
        except botocore.exceptions.ClientError as err:
            mapped = self._error(err, f"looking up {name}", name)
            if isinstance(mapped, ObjectNotFound):
                return None
            raise mapped from None
        except botocore.exceptions.BotoCoreError as err:
            raise self._error(err, f"looking up {name}", name) from None

    def _put_if_absent(self, what: str, name: str, key: str, body: bytes) -> str:
        """A conditional PUT; returns "created", or the S3 error code that says why
        not: PreconditionFailed (the key exists), ConditionalRequestConflict (AWS:
        another conditional PUT of the key is in flight), NotImplemented."""

        def attempt() -> str:
            try:
                self._client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
            except botocore.exceptions.ClientError as err:
                code = _code(err)
                if code in ("PreconditionFailed", "ConditionalRequestConflict", "NotImplemented"):
                    return code
                raise
            return "created"

        return self._write(what, name, attempt)

    def _conditional_put_works(self) -> bool:
        """Find out once whether the server honours `If-None-Match: *` on PUT, by
        creating a probe object under tmp/ twice: the second must be refused."""
        with self._probe_lock:
            if self._conditional is None:
                key = f"{self._where.prefix}{TMP_DIR}/probe-{secrets.token_hex(8)}"
                what = "probing conditional writes"
                try:
                    first = self._put_if_absent(what, key, key, b"")
                    second = self._put_if_absent(what, key, key, b"") if first == "created" else ""
                finally:
                    try:
                        self._client.delete_object(Bucket=self.bucket, Key=key)
                    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                        pass  # an invisible leftover below tmp/: not worth failing for
                self._conditional = second == "PreconditionFailed"
                if not self._conditional:
                    self.capabilities = dataclasses.replace(self.capabilities, atomic_create=False)
            return self._conditional

    # --- contract ------------------------------------------------------------

    def put(self, name: str, data: Content) -> None:
        """One PUT: atomic and durable when it returns. Parts are joined into one
        buffer (botocore signs and sends a single body; the large, streamed data
        packs go through `open_temp` instead)."""
        key = self._key(name)
        body = content_bytes(data)
        self._write(
            f"writing {name}",
            name,
            lambda: self._client.put_object(Bucket=self.bucket, Key=key, Body=body),
        )

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        """A conditional PUT (`If-None-Match: *`): atomic where the server honours
        it; otherwise HEAD then PUT (capabilities.atomic_create turns False)."""
        key = self._key(name)
        body = bytes(data)
        if not self._conditional_put_works():
            if self._head(name) is not None:
                raise ObjectExists(f"object {name} already exists")
            self.put(name, body)
            return
        for _ in range(3):
            outcome = self._put_if_absent(f"creating {name}", name, key, body)
            if outcome == "created":
                return
            if outcome == "PreconditionFailed":
                raise ObjectExists(f"object {name} already exists")
            # ConditionalRequestConflict: a racing create of the same key; ask again
        raise TransientStorageError(f"S3 kept reporting conflicts while creating {name}")

    def get(self, name: str) -> bytes:
        key = self._key(name)

        def fetch() -> bytes:
            with closing(self._client.get_object(Bucket=self.bucket, Key=key)["Body"]) as body:
                return body.read()

        return self._call(f"reading {name}", name, fetch)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """One ranged GET; past the object's end the answer is short or empty."""
        key = self._key(name)
        if length <= 0:
            self.size(name)  # still ObjectNotFound for a missing object
            return b""

        def fetch() -> bytes:
            try:
                response = self._client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}"
                )
            except botocore.exceptions.ClientError as err:
                if _code(err) == "InvalidRange":
                    return b""  # offset at or past the end (the object exists)
                raise
            with closing(response["Body"]) as body:
                return body.read()

        return self._call(f"reading {name}", name, fetch)

    def size(self, name: str) -> int:
        found = self._head(name)
        if found is None:
            raise ObjectNotFound(f"object {name} not found in {self.location}")
        return found

    def exists(self, name: str) -> bool:
        return self._head(name) is not None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Pages of up to 1000 keys, fetched as the caller iterates."""
        skip = len(self._where.prefix)
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._where.prefix + prefix
        )
        iterator = iter(pages)
        while True:
            page = self._call(f"listing {prefix or 'objects'}", "", lambda: next(iterator, None))
            if page is None:
                return
            for obj in page.get("Contents", []):
                name = obj["Key"][skip:]
                if name.split("/", 1)[0] != TMP_DIR:
                    yield ObjectInfo(name, obj["Size"])

    def delete(self, name: str) -> None:
        """HEAD first: S3's DELETE succeeds for a missing key, the contract does not."""
        key = self._key(name)
        if self._head(name) is None:
            raise ObjectNotFound(f"object {name} not found in {self.location}")
        self._call(
            f"deleting {name}",
            name,
            lambda: self._client.delete_object(Bucket=self.bucket, Key=key),
        )

    def close(self) -> None:
        self._client.close()

    def open_temp(self) -> _S3Temp:
        """A spooled temporary file (memory, then disk) uploaded whole on commit."""
        return _S3Temp(self)

    def _upload(self, name: str, stream: IO[bytes]) -> None:
        key = self._key(name)
        # upload_fileobj closes the stream when it fails, so a missing bucket
        # cannot be created after the fact and the upload tried again (as
        # `_write` does for put): it is made sure of before, once.
        if not self._bucket_known:
            self.ensure_bucket()
        stream.seek(0)
        self._call(
            f"writing {name}",
            name,
            lambda: self._client.upload_fileobj(stream, self.bucket, key, Config=self._transfer),
        )


class _S3Temp:
    """Invisible until `commit`: nothing reaches the server before it (a multipart
    upload, used above 64 MiB, is also invisible until it completes)."""

    def __init__(self, backend: S3Backend) -> None:
        self._backend = backend
        # closed by commit or abort, not by a with-block: it outlives this call
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
        self._file: tempfile.SpooledTemporaryFile[bytes] | None = spool

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._file is None:
            raise StorageError("write to a temporary object after commit or abort")
        try:
            self._file.write(data)
        except OSError as err:
            self.abort()
            raise StorageError(f"spooling an object for upload: {err.strerror or err}") from err

    def commit(self, name: str) -> None:
        if self._file is None:
            raise StorageError("commit of a temporary object after commit or abort")
        try:
            self._backend._upload(name, self._file)
        finally:
            self.abort()

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
