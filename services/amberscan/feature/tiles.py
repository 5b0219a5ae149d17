"""Decoded tile images for the feature stage, each read once from the blob store.

A tile's ~30 superpixels arrive together (one partition, keyed by tile), so the stage cuts every
crop from one decoded image instead of fetching a PNG per crop; the last few tiles stay decoded
(least recently used first out) while their superpixels are in flight.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import numpy as np
from numpy.typing import NDArray

from amberscan.common.blobstore import BlobStore
from amberscan.vision.imageio import decode_image


class TileImages:
    """`await tiles.get(key, name)`: the RGB image stored under `key`, decoded once."""

    def __init__(self, store: BlobStore, capacity: int = 32) -> None:
        self.store = store
        self.capacity = max(capacity, 1)
        self._images: OrderedDict[str, NDArray[np.uint8]] = OrderedDict()
        self._loading: dict[str, asyncio.Task[NDArray[np.uint8]]] = {}
        self.reads = 0

    async def get(self, key: str, name: str) -> NDArray[np.uint8]:
        """The decoded image; concurrent callers for one key share one read.

        Raises:
            MissingBlob, InvalidImage: the blob is missing or not an image (poison).
            TransientError: the blob store did not answer.
        """
        image = self._images.get(key)
        if image is not None:
            self._images.move_to_end(key)
            return image
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._load(key, name))
            loading.add_done_callback(lambda _task: self._loading.pop(key, None))
        return await asyncio.shield(loading)

    async def _load(self, key: str, name: str) -> NDArray[np.uint8]:
        data = await self.store.get(key)
        self.reads += 1
        image = await asyncio.to_thread(decode_image, data, name)
        self._images[key] = image
        while len(self._images) > self.capacity:
            self._images.popitem(last=False)
        return image
