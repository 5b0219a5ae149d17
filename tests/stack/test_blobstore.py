"""Blob store round trips against a real MinIO server."""

import hashlib

import pytest

from amberscan.common.blobstore import BlobStore, MissingBlob
from amberscan.common.settings import Settings

pytestmark = pytest.mark.stack


async def test_round_trip_with_sha256_key(stack_settings: Settings) -> None:
    store = BlobStore(stack_settings.s3)
    await store.ensure_bucket()
    await store.ensure_bucket()  # idempotent
    data = bytes(range(256)) * 100
    key = await store.put(data, "tiles", "png", "image/png")
    digest = hashlib.sha256(data).hexdigest()
    assert key == f"tiles/{digest[:2]}/{digest}.png"
    assert await store.get(key) == data
    assert await store.exists(key)
    assert await store.put(data, "tiles", "png") == key  # same bytes, same object
    assert await store.list("tiles/") == [key]


async def test_missing_blob_is_a_clear_poison_error(stack_settings: Settings) -> None:
    store = BlobStore(stack_settings.s3)
    await store.ensure_bucket()
    key = "tiles/00/" + "0" * 64 + ".png"
    assert not await store.exists(key)
    with pytest.raises(MissingBlob, match=key):
        await store.get(key)
