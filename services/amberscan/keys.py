"""Blob key layout in the object store. Pure: bytes in, keys out.

Content-addressed keys (`KIND/ab/abcdef….EXT`, the sha256 of the bytes) make writes idempotent:
a redelivered message rewrites the same object under the same key, and nothing is stored twice.
"""

from __future__ import annotations

import hashlib
import re

_KIND = re.compile(r"^[a-z][a-z0-9-]*(/[a-z0-9][a-z0-9._-]*)*$")
_EXT = re.compile(r"^[a-z0-9]{1,8}$")

TILE_IMAGES = "tiles"
MODELS = "models"


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def content_key(kind: str, data: bytes, ext: str) -> str:
    """The content-addressed key of `data` under `kind`.

    Args:
        kind: a lowercase path prefix such as "tiles" or "labels".
        data: the object's bytes.
        ext: file extension without the dot ("png", "json").

    Raises:
        ValueError: if kind or ext are not plain lowercase names.
    """
    if not _KIND.match(kind):
        raise ValueError(f"blob kind {kind!r} must be a lowercase path like 'tiles' or 'models/x'")
    if not _EXT.match(ext):
        raise ValueError(f"blob extension {ext!r} must be 1-8 lowercase letters or digits")
    digest = sha256_hex(data)
    return f"{kind}/{digest[:2]}/{digest}.{ext}"


def digest_of(key: str) -> str:
    """The sha256 a content-addressed key names.

    Raises:
        ValueError: if `key` is not a content-addressed key.
    """
    name = key.rsplit("/", 1)[-1]
    digest = name.split(".", 1)[0]
    if not re.fullmatch(r"[0-9a-f]{64}", digest) or f"/{digest[:2]}/" not in key:
        raise ValueError(f"{key!r} is not a content-addressed blob key")
    return digest
