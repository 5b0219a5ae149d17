"""The S3-compatible blob store (MinIO) holding tile images, crops and models.

Writers store an object before producing the message that names it, so a consumer never sees a
key without its object. Keys are content-addressed (`amberscan.keys`), so a rewrite after
redelivery is the same object.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import TypeVar

import urllib3
from minio import Minio
from minio.error import S3Error

from amberscan import keys
from amberscan.common.settings import S3Config
from amberscan.errors import PoisonMessage, TransientError

T = TypeVar("T")


class MissingBlob(PoisonMessage):
    """A message names a blob that is not in the store."""


class MissingBucket(SystemExit):
    """The configured bucket does not exist: a configuration error, not a missing blob.

    Retrying cannot help and dead-lettering would fail every tile of every scan, so it is a
    `SystemExit`: no handler's catch-all turns it into a dead letter, and the process stops with
    this message (exit status 1) for the operator to fix `AMBERSCAN_S3_BUCKET` or the store.
    """


class AccessRefused(SystemExit):
    """The blob store refuses the service's keys (AccessDenied, an unknown key, a bad
    signature): a configuration error, which, as `MissingBucket`, stops the process with this
    message rather than retrying for ever or dead-lettering every tile."""


# S3 error codes of a store that is busy, starting or short of space: worth a retry. Any other
# code with a 5xx status is retried too; other 4xx codes are the request's own fault (poison).
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "OperationAborted",
        "XMinioServerNotInitialized",
        "XMinioStorageFull",
    }
)
REFUSED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccountProblem",
    }
)


class BlobStore:
    """Async facade over the MinIO client (its calls run in threads, off the event loop)."""

    def __init__(self, s3: S3Config, bucket: str | None = None) -> None:
        self.bucket = bucket or s3.bucket
        self.endpoint = s3.endpoint
        self.client = Minio(
            s3.endpoint,
            access_key=s3.access_key,
            secret_key=s3.secret_key,
            secure=s3.secure,
            # Fail fast and let the caller's retry policy decide, rather than urllib3's own.
            http_client=urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=5, read=60),
                retries=urllib3.Retry(total=2, backoff_factor=0.2),
                maxsize=16,
            ),
        )

    def _missing_bucket(self, what: str) -> str:
        return (
            f"configuration error: bucket {self.bucket!r} does not exist on the blob store at "
            f"{self.endpoint} ({what}); create it or set AMBERSCAN_S3_BUCKET"
        )

    async def require_bucket(self) -> None:
        """Stop with `MissingBucket` unless the bucket exists (for services that only read)."""
        if not await self._call(lambda: self.client.bucket_exists(self.bucket), "check bucket"):
            raise MissingBucket(self._missing_bucket("check bucket"))

    async def ensure_bucket(self) -> None:
        """Create the bucket if missing."""

        def create() -> None:
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as error:  # another process won the race
                    if error.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

        await self._call(create, "create bucket")

    def remove_bucket(self) -> None:
        """Delete every object and then the bucket (tests and chaos runs clean up with this)."""
        from minio.deleteobjects import DeleteObject

        if not self.client.bucket_exists(self.bucket):
            return
        objects = self.client.list_objects(self.bucket, recursive=True)
        for _ in self.client.remove_objects(
            self.bucket, (DeleteObject(o.object_name) for o in objects)
        ):
            pass
        self.client.remove_bucket(self.bucket)

    async def put(self, data: bytes, kind: str, ext: str, content_type: str = "") -> str:
        """Store `data` under its content-addressed key and return the key."""
        key = keys.content_key(kind, data, ext)
        await self.put_at(key, data, content_type)
        return key

    async def put_at(self, key: str, data: bytes, content_type: str = "") -> None:
        """Store `data` under an explicit key (for names that are not content-addressed)."""
        await self._call(
            lambda: self.client.put_object(
                self.bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type or "application/octet-stream",
            ),
            f"put {key}",
        )

    async def get(self, key: str) -> bytes:
        """The bytes stored under `key`.

        Raises:
            MissingBlob: no object under that key (a poison message: retrying will not help).
            TransientError: the store did not answer.
        """

        def read() -> bytes:
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return await self._call(read, f"get {key}")

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        try:
            await self._call(lambda: self.client.stat_object(self.bucket, key), f"stat {key}")
        except MissingBlob:
            return False
        return True

    async def list(self, prefix: str) -> list[str]:
        """Keys under `prefix`, sorted."""
        return await self._call(
            lambda: sorted(
                o.object_name for o in self.client.list_objects(self.bucket, prefix, recursive=True)
            ),
            f"list {prefix}",
        )

    async def _call(self, fn: Callable[[], T], what: str) -> T:
        try:
            return await asyncio.to_thread(fn)
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject"):
                raise MissingBlob(
                    f"blob {self.bucket}/{what.split(' ', 1)[-1]} not found"
                ) from None
            if error.code == "NoSuchBucket":
                raise MissingBucket(self._missing_bucket(what)) from None
            if error.code in REFUSED_CODES:
                raise AccessRefused(
                    f"configuration error: the blob store at {self.endpoint} refused {what} in "
                    f"bucket {self.bucket!r} ({error.code}: {error.message}); check "
                    "AMBERSCAN_S3_ACCESS_KEY, AMBERSCAN_S3_SECRET_KEY and the bucket's policy"
                ) from None
            status = getattr(error.response, "status", 500)
            if error.code in TRANSIENT_CODES or status >= 500:
                raise TransientError(f"blob store {what}: {error.code} {error.message}") from error
            raise PoisonMessage(f"blob store {what}: {error.code} {error.message}") from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise TransientError(f"blob store {what}: {error}") from error
