"""What the blob store's refusals mean to a stream (#26 defect 3), on real MinIO: keys it refuses
and an anonymous request (AccessDenied) are a configuration error that stops the process naming
the variables, as a missing bucket does; neither is a transient failure retried for ever."""

from __future__ import annotations

import pytest

from amberscan.common.blobstore import BlobStore
from amberscan.common.settings import Settings, replace
from amberscan.errors import PoisonMessage, TransientError

pytestmark = pytest.mark.stack
KEY = "tiles/00/" + "0" * 64 + ".png"


@pytest.mark.parametrize(
    ("keys", "code"),
    [
        ({"secret_key": "not-the-secret"}, "SignatureDoesNotMatch"),
        ({"access_key": "nobody-known", "secret_key": "not-the-secret"}, "InvalidAccessKeyId"),
        ({"access_key": "", "secret_key": ""}, "AccessDenied"),  # anonymous: the bucket's policy
    ],
)
async def test_refused_keys_stop_the_process_not_retried(
    stack_settings: Settings, keys: dict[str, str], code: str
) -> None:
    await BlobStore(stack_settings.s3).ensure_bucket()
    store = BlobStore(replace(stack_settings, s3=keys).s3)
    with pytest.raises(BaseException) as raised:  # noqa: PT011 - which one is the question
        await store.get(KEY)
    error = raised.value
    assert not isinstance(error, TransientError), f"{code} retried as transient: {error}"
    assert isinstance(error, SystemExit) and not isinstance(error, Exception | PoisonMessage)
    message = str(error)
    assert code in message and stack_settings.s3.bucket in message, message
    assert "AMBERSCAN_S3_ACCESS_KEY" in message and "AMBERSCAN_S3_SECRET_KEY" in message
