"""The image store: the local folder and the S3 backend (against moto's S3 server on loopback)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from skintriage.exceptions import ImageNotFound, InvalidKey, StorageError
from skintriage.settings import Settings
from skintriage.storage import LocalImageStore, S3ImageStore, make_key, make_store
from tests.factories import lesion_photo
from tests.stack import free_port

SECRET = "not-a-real-secret-key"  # moto accepts any credentials


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a loopback port (real HTTP, real boto3)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def s3_store(endpoint: str, bucket: str) -> S3ImageStore:
    store = S3ImageStore(bucket=bucket, endpoint_url=endpoint, access_key="testing", secret_key=SECRET)
    store.ensure_bucket()
    return store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        return LocalImageStore(tmp_path / "images")
    return s3_store(request.getfixturevalue("s3_endpoint"), f"bucket-{uuid.uuid4().hex[:12]}")


def test_put_is_content_addressed_and_round_trips(store) -> None:
    data = lesion_photo(seed=1)
    stored = store.put(data, kind="photo", ext="jpg")
    sha = hashlib.sha256(data).hexdigest()
    assert stored.sha256 == sha
    assert stored.size == len(data)
    assert stored.key == f"photo/{sha[:2]}/{sha}.jpg"
    assert store.get(stored.key) == data
    assert store.exists(stored.key)


def test_putting_the_same_bytes_twice_gives_the_same_key(store) -> None:
    data = lesion_photo(seed=2, fmt="PNG")
    first = store.put(data, kind="mask", ext="png")
    second = store.put(data, kind="mask", ext="png")
    assert first == second
    assert store.get(second.key) == data


def test_delete_removes_and_is_idempotent(store) -> None:
    stored = store.put(b"overlay bytes", kind="overlay", ext="jpg")
    store.delete(stored.key)
    assert not store.exists(stored.key)
    store.delete(stored.key)  # a second delete is not an error
    with pytest.raises(ImageNotFound):
        store.get(stored.key)


def test_missing_key_raises_image_not_found(store) -> None:
    key = make_key("photo", "ab" * 32, "jpg")
    with pytest.raises(ImageNotFound):
        store.get(key)
    assert not store.exists(key)


@pytest.mark.parametrize(
    "key",
    ["../etc/passwd", "photo/../../secret.jpg", "photo/ab/" + "ab" * 32 + ".exe", "/abs/path.jpg", "photo/zz/x.jpg"],
)
def test_keys_that_are_not_ours_are_refused(store, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.get(key)
    with pytest.raises(InvalidKey):
        store.delete(key)


def test_unknown_kind_or_extension_is_refused(store) -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        store.put(b"x", kind="thumbnail")
    with pytest.raises(ValueError, match="ext must be one of"):
        store.put(b"x", kind="photo", ext="exe")


def test_local_store_writes_under_its_root_only(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "images")
    stored = store.put(b"photo bytes", kind="photo", ext="jpg")
    path = tmp_path / "images" / stored.key
    assert path.read_bytes() == b"photo bytes"
    assert not list((tmp_path / "images").rglob(".tmp-*")), "temporary files left behind"


def test_s3_store_reports_an_unreachable_endpoint_as_storage_error() -> None:
    store = S3ImageStore(
        bucket="images", endpoint_url=f"http://127.0.0.1:{free_port()}", access_key="testing", secret_key=SECRET
    )
    store.client.meta.config.retries = {"max_attempts": 1}
    with pytest.raises(StorageError):
        store.put(b"x", kind="photo", ext="jpg")


def test_make_store_builds_each_backend_from_settings(tmp_path: Path, s3_endpoint: str) -> None:
    local = make_store(Settings(DATA_DIR=tmp_path / "data"))
    assert isinstance(local, LocalImageStore)
    assert local.root == (tmp_path / "data" / "images").resolve()

    remote = make_store(
        Settings(
            IMAGE_STORE="s3",
            S3_ENDPOINT_URL=s3_endpoint,
            S3_BUCKET="from-settings",
            S3_ACCESS_KEY="testing",
            S3_SECRET_KEY=SECRET,
        )
    )
    assert isinstance(remote, S3ImageStore)
    stored = remote.put(b"through settings", kind="heatmap", ext="jpg")
    assert remote.get(stored.key) == b"through settings"

    with pytest.raises(ValueError, match="IMAGE_STORE must be"):
        make_store(Settings(IMAGE_STORE="ftp"))
