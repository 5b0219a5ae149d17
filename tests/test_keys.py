import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amberscan import keys


@given(st.binary(max_size=2048))
def test_content_key_names_the_sha256(data: bytes) -> None:
    key = keys.content_key("tiles", data, "png")
    digest = hashlib.sha256(data).hexdigest()
    assert key == f"tiles/{digest[:2]}/{digest}.png"
    assert keys.digest_of(key) == digest


def test_same_bytes_same_key_other_bytes_other_key() -> None:
    assert keys.content_key("crops", b"a", "png") == keys.content_key("crops", b"a", "png")
    assert keys.content_key("crops", b"a", "png") != keys.content_key("crops", b"b", "png")


@pytest.mark.parametrize(
    ("kind", "ext"), [("Tiles", "png"), ("../x", "png"), ("tiles", ".png"), ("", "png")]
)
def test_bad_kind_or_extension_rejected(kind: str, ext: str) -> None:
    with pytest.raises(ValueError, match="blob"):
        keys.content_key(kind, b"x", ext)


@pytest.mark.parametrize("key", ["tiles/ab/abc.png", "tiles/zz/" + "0" * 64 + ".png", "plain"])
def test_digest_of_rejects_other_keys(key: str) -> None:
    with pytest.raises(ValueError, match="content-addressed"):
        keys.digest_of(key)
