"""Content-addressed image store: a local folder by default, an S3-compatible bucket for deployments.

Images never go into the database or the logs; rows keep only the key and the SHA-256.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from skintriage.exceptions import ImageNotFound, InvalidKey, StorageError
from skintriage.settings import Settings

log = logging.getLogger(__name__)

KINDS = ("photo", "mask", "overlay", "heatmap")
EXTENSIONS = ("jpg", "png", "webp", "heic", "bin")
KEY_RE = re.compile(r"^(photo|mask|overlay|heatmap)/[0-9a-f]{2}/[0-9a-f]{64}\.(jpg|png|webp|heic|bin)$")


@dataclass(frozen=True)
class StoredImage:
    """Where an image lies and what it is."""

    key: str
    sha256: str
    size: int


def make_key(kind: str, sha256: str, ext: str) -> str:
    """Build the content-addressed key for an image."""
    key = f"{kind}/{sha256[:2]}/{sha256}.{ext}"
    check_key(key)
    return key


def check_key(key: str) -> str:
    """Refuse anything that is not one of our keys (path traversal, odd characters)."""
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        raise InvalidKey("not an image key of this store")
    return key


class ImageStore(Protocol):
    """The small storage interface every backend implements."""

    def put(self, data: bytes, *, kind: str = "photo", ext: str = "jpg") -> StoredImage:
        """Store bytes under their SHA-256 and return the key (idempotent)."""

    def get(self, key: str) -> bytes:
        """Return the bytes under a key or raise ImageNotFound."""

    def delete(self, key: str) -> None:
        """Delete a key; deleting a missing key is not an error."""

    def exists(self, key: str) -> bool:
        """Whether a key holds an image."""

    def stored_before(self, cutoff: datetime) -> Iterator[str]:
        """Keys of the images last written (or put again) before cutoff, for the orphan sweep."""

    def written_before(self, key: str, cutoff: datetime) -> bool:
        """Whether the image under key exists and was last written (or put again) before cutoff."""

    def remove_stale_temporaries(self, cutoff: datetime) -> int:
        """Delete half-written files older than cutoff; return how many."""


def _prepare(data: bytes, kind: str, ext: str) -> tuple[str, str]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if ext not in EXTENSIONS:
        raise ValueError(f"ext must be one of {EXTENSIONS}, got {ext!r}")
    sha = hashlib.sha256(data).hexdigest()
    return sha, make_key(kind, sha, ext)


class LocalImageStore:
    """Images as files under a root folder (DATA_DIR/images), written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:
            raise InvalidKey("key escapes the store")
        return path

    def put(self, data: bytes, *, kind: str = "photo", ext: str = "jpg") -> StoredImage:
        """Store bytes under their SHA-256 and return the key (idempotent)."""
        sha, key = _prepare(data, kind, ext)
        path = self._path(key)
        try:
            os.utime(path)  # put again: the orphan sweep must see it as new (the bytes are already there)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except OSError as exc:
                Path(tmp).unlink(missing_ok=True)
                raise StorageError(f"could not write image: {exc.strerror}") from exc
        return StoredImage(key=key, sha256=sha, size=len(data))

    def get(self, key: str) -> bytes:
        """Return the bytes under a key or raise ImageNotFound."""
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise ImageNotFound("no image under that key") from exc

    def delete(self, key: str) -> None:
        """Delete a key; deleting a missing key is not an error."""
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        """Whether a key holds an image."""
        return self._path(key).is_file()

    def stored_before(self, cutoff: datetime) -> Iterator[str]:
        """Keys of the images last written before cutoff (files that are not our keys are left alone)."""
        limit = cutoff.timestamp()
        for path in self.root.glob("*/*/*"):
            key = path.relative_to(self.root).as_posix()
            if KEY_RE.fullmatch(key) and path.stat().st_mtime < limit:
                yield key

    def written_before(self, key: str, cutoff: datetime) -> bool:
        """Whether the image under key exists and was last written (or put again) before cutoff."""
        try:
            return self._path(key).stat().st_mtime < cutoff.timestamp()
        except FileNotFoundError:
            return False

    def remove_stale_temporaries(self, cutoff: datetime) -> int:
        """Delete half-written `.tmp-*` files (a process killed mid-write) older than cutoff; return how many."""
        limit, removed = cutoff.timestamp(), 0
        for path in self.root.glob("*/*/.tmp-*"):
            if path.stat().st_mtime < limit:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


class S3ImageStore:
    """Images as objects in an S3-compatible bucket (MinIO in compose), so machines can share them."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        access_key: str | None,
        secret_key: str | None,
        region: str = "us-east-1",
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=30),
        )

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put(self, data: bytes, *, kind: str = "photo", ext: str = "jpg") -> StoredImage:
        """Store bytes under their SHA-256 and return the key (idempotent)."""
        from botocore.exceptions import BotoCoreError, ClientError

        sha, key = _prepare(data, kind, ext)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not store image in bucket {self.bucket}: {type(exc).__name__}") from exc
        return StoredImage(key=key, sha256=sha, size=len(data))

    def get(self, key: str) -> bytes:
        """Return the bytes under a key or raise ImageNotFound."""
        from botocore.exceptions import BotoCoreError, ClientError

        check_key(key)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise ImageNotFound("no image under that key") from exc
            raise StorageError(f"could not read image: {type(exc).__name__}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"could not read image: {type(exc).__name__}") from exc

    def delete(self, key: str) -> None:
        """Delete a key; deleting a missing key is not an error."""
        check_key(key)
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def exists(self, key: str) -> bool:
        """Whether a key holds an image."""
        from botocore.exceptions import ClientError

        check_key(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            return False
        return True

    def written_before(self, key: str, cutoff: datetime) -> bool:
        """Whether the object under key exists and was last written before cutoff (every put rewrites it)."""
        from botocore.exceptions import ClientError

        check_key(key)
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["LastModified"] < cutoff
        except ClientError:
            return False

    def remove_stale_temporaries(self, cutoff: datetime) -> int:
        """Nothing to do: an S3 put is atomic, a failed one leaves no object."""
        return 0

    def stored_before(self, cutoff: datetime) -> Iterator[str]:
        """Keys of the images last written before cutoff (objects that are not our keys are left alone)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        for page in pages:
            for item in page.get("Contents", []):
                if KEY_RE.fullmatch(item["Key"]) and item["LastModified"] < cutoff:
                    yield item["Key"]


def make_store(settings: Settings) -> ImageStore:
    """The image store the settings ask for."""
    if settings.image_store == "local":
        return LocalImageStore(settings.data_dir / "images")
    if settings.image_store == "s3":
        store = S3ImageStore(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            access_key=settings.s3_access_key.get_secret_value() if settings.s3_access_key else None,
            secret_key=settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None,
            region=settings.s3_region,
        )
        store.ensure_bucket()
        return store
    raise ValueError(f"IMAGE_STORE must be 'local' or 's3', got {settings.image_store!r}")
