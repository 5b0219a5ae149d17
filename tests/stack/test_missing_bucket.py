"""A missing bucket is a configuration error, not a missing blob (#10, defect 4), on real MinIO.

A missing blob is one poison message; a missing bucket would fail every tile of every scan, so
it must stop the process with a message naming the bucket and the store, and must not be
something a stage's catch-all turns into a dead letter.
"""

from __future__ import annotations

import pytest

from amberscan.common.blobstore import BlobStore, MissingBlob, MissingBucket
from amberscan.common.settings import Settings
from amberscan.errors import PoisonMessage

pytestmark = pytest.mark.stack


async def test_a_missing_bucket_stops_with_a_clear_message(stack_settings: Settings) -> None:
    store = BlobStore(stack_settings.s3)  # the test's bucket is not created
    assert not issubclass(MissingBucket, Exception | PoisonMessage)  # no `except Exception`
    with pytest.raises(MissingBucket) as raised:
        await store.get("tiles/00/" + "0" * 64 + ".png")
    message = str(raised.value)
    assert stack_settings.s3.bucket in message and stack_settings.s3.endpoint in message
    assert "AMBERSCAN_S3_BUCKET" in message
    with pytest.raises(MissingBucket):
        await store.require_bucket()
    await store.ensure_bucket()
    await store.require_bucket()
    with pytest.raises(MissingBlob):  # with the bucket there, a missing key is poison again
        await store.get("tiles/00/" + "0" * 64 + ".png")
