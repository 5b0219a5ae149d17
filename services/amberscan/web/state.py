"""The web app's keys and the resources it holds while it runs.

`resources` is the app's `cleanup_ctx`: the database pool and blob store are opened on startup
and closed on cleanup (the map's pool, and the downloads' own: `limits.py`), and the map's aggregates (`vector_tiles.MapCells`) refreshed meanwhile. The caches here hold decoded tile images (a reviewer clicks around one
tile many times, a projection's tooltips hover over one tile often), the stored tile images'
bytes for the imagery layer (`StoredImages`, with its drawing slots) and the classifiers'
thresholds by version.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web
from numpy.typing import NDArray

from amberscan.common.blobstore import BlobStore, MissingBlob
from amberscan.common.db import Database
from amberscan.common.settings import WebSettings
from amberscan.errors import AmberscanError
from amberscan.vision.imageio import decode_image
from amberscan.vision.labels import decode_labels
from amberscan.vision.segment import Segmentation, boundaries
from amberscan.web import core
from amberscan.web.explore import LabelledFeatures
from amberscan.web.limits import Budget, Busy
from amberscan.web.vector_tiles import MapCells


@dataclass(frozen=True)
class TileImage:
    image: NDArray[np.uint8]
    segmentation: Segmentation
    edges: NDArray[np.bool_]


class ImageCache:
    """The last few decoded tile images and segmentations, by blob key."""

    def __init__(self, store: BlobStore, size: int = 16) -> None:
        self.store = store
        self.size = size
        self.entries: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def _hit(self, key: tuple[str, str]) -> Any:
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        return None

    def _keep(self, key: tuple[str, str], value: Any) -> None:
        self.entries[key] = value
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    async def image(self, image_key: str) -> NDArray[np.uint8]:
        """The decoded tile image (MissingBlob when the store has none)."""
        key = (image_key, "")
        cached = self._hit(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        data = await self.store.get(image_key)
        image = await asyncio.to_thread(decode_image, data, image_key)
        self._keep(key, image)
        return image

    async def tile(self, image_key: str, labels_key: str) -> TileImage:
        """Image, segmentation and edges of a detection's tile; 404 when a blob is missing."""
        key = (image_key, labels_key)
        cached = self._hit(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        if not image_key or not labels_key:
            raise web.HTTPNotFound(text="this detection has no stored tile image or label image")
        try:
            image_bytes, label_bytes = await asyncio.gather(
                self.store.get(image_key), self.store.get(labels_key)
            )
        except MissingBlob as error:
            raise web.HTTPNotFound(text=str(error)) from None

        def decode() -> TileImage:
            image = decode_image(image_bytes, image_key)
            segmentation = Segmentation.from_labels(decode_labels(label_bytes))
            if segmentation.labels.shape != image.shape[:2]:
                raise AmberscanError(
                    f"label image {labels_key} is {segmentation.labels.shape}, "
                    f"tile image {image_key} is {image.shape[:2]}"
                )
            return TileImage(image, segmentation, boundaries(segmentation))

        tile = await asyncio.to_thread(decode)
        self._keep(key, tile)
        return tile


class StoredImages:
    """The scan tiles' stored images as bytes, for the imagery layer (#27): the last
    `max_bytes` of them by blob key (content-addressed, so never stale; a map view asks for
    one scan tile from several map tiles), and `renders` slots of drawing, so a burst of map
    tiles queues rather than takes every core."""

    def __init__(self, store: BlobStore, wait_s: float, max_bytes: int = 64 << 20) -> None:
        self.store = store
        self.wait_s = wait_s
        self.max_bytes = max_bytes
        self.entries: OrderedDict[str, bytes] = OrderedDict()
        self.held = 0
        self.renders = asyncio.Semaphore(2)

    async def get(self, key: str) -> bytes:
        """The blob's bytes (MissingBlob when the store has none)."""
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        data = await self.store.get(key)
        if key not in self.entries:  # another request may have read it meanwhile
            self.entries[key] = data
            self.held += len(data)
        while self.held > self.max_bytes and len(self.entries) > 1:
            self.held -= len(self.entries.popitem(last=False)[1])
        return data

    @contextlib.asynccontextmanager
    async def render_slot(self) -> AsyncIterator[None]:
        """One of the drawing slots, waited for at most `wait_s` (then Busy: 503)."""
        try:
            async with asyncio.timeout(self.wait_s):
                await self.renders.acquire()
        except TimeoutError:
            raise Busy("every slot for drawing imagery is taken") from None
        try:
            yield
        finally:
            self.renders.release()


class Thresholds:
    """Each classifier version's score threshold, from its registry entry (kept once found)."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.known: dict[str, float] = {}

    async def of(self, row: dict[str, Any]) -> tuple[float, str]:
        """(threshold, "registry") of a detection's model; inferred from its scores
        ("implied") when the registry no longer has that version (a miss is not kept)."""
        version = str(row["model_version"])
        if version not in self.known:
            from amberscan.common.registry import load_version

            try:
                self.known[version] = (await load_version(self.settings.s3, version)).threshold
            except Exception:  # noqa: BLE001 - a missing or unreadable entry: fall back below
                return core.implied_threshold(row["scores"] or [], int(row["positives"])), "implied"
        return self.known[version], "registry"


def scores_for(row: dict[str, Any], n: int) -> NDArray[np.float64]:
    """A detection's scores padded or cut to its segmentation's `n` superpixels."""
    scores = np.zeros(n)
    given = np.asarray(row["scores"] or [], dtype=np.float64)[:n]
    scores[: given.size] = given
    return scores


SETTINGS: web.AppKey[WebSettings] = web.AppKey("settings", WebSettings)
CSP: web.AppKey[str] = web.AppKey("csp", str)
DB: web.AppKey[Database] = web.AppKey("db", Database)
# Exports and diffs stream for as long as their client reads: their own small pool.
DOWNLOADS_DB: web.AppKey[Database] = web.AppKey("downloads_db", Database)
BUDGET: web.AppKey[Budget] = web.AppKey("budget", Budget)
STORE: web.AppKey[BlobStore] = web.AppKey("store", BlobStore)
IMAGES: web.AppKey[ImageCache] = web.AppKey("images", ImageCache)
THRESHOLDS: web.AppKey[Thresholds] = web.AppKey("thresholds", Thresholds)
EXPLORE: web.AppKey[LabelledFeatures] = web.AppKey("explore", LabelledFeatures)
MAP_CELLS: web.AppKey[MapCells] = web.AppKey("map_cells", MapCells)
STORED_IMAGES: web.AppKey[StoredImages] = web.AppKey("stored_images", StoredImages)
# One projection at a time: t-SNE of thousands of points takes the CPU for seconds.
EXPLORE_SLOT: web.AppKey[asyncio.Semaphore] = web.AppKey("explore_slot", asyncio.Semaphore)


async def resources(app: web.Application) -> AsyncIterator[None]:
    """Open the database pool and the blob store, fill the map's aggregates if empty and keep
    them fresh; on cleanup stop that and close the pool."""
    settings = app[SETTINGS]
    timeout = settings.web.statement_timeout_s
    db = Database(settings.database, statement_timeout_s=timeout)
    await db.open()
    downloads = Database(
        settings.database,
        max_size=settings.web.export_connections,
        statement_timeout_s=timeout,
        wait_s=timeout,
    )
    await downloads.open(migrate=False)
    store = BlobStore(settings.s3)
    app[DB] = db
    app[DOWNLOADS_DB] = downloads
    app[BUDGET] = Budget(settings.web)
    app[STORE] = store
    app[IMAGES] = ImageCache(store)
    app[STORED_IMAGES] = StoredImages(store, timeout)
    app[THRESHOLDS] = Thresholds(settings)
    app[EXPLORE] = LabelledFeatures()
    app[EXPLORE_SLOT] = asyncio.Semaphore(1)
    cells = MapCells(db, settings.web.map_refresh_s)
    await cells.ensure()
    app[MAP_CELLS] = cells
    refresher = asyncio.create_task(cells.run(), name="map-cells-refresh")
    yield
    refresher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await refresher
    await downloads.close()
    await db.close()
