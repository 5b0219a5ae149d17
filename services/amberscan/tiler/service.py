"""Tiler service: `scan-requests` → `tiles`.

A region request (bbox or GeoJSON) is validated, its zoom-16 scan tiles listed, and it is split
into one request per scan tile, produced back onto `scan-requests` keyed by tile id and carrying
the scan's tile count; the region's offset is committed once they are all acknowledged. Each
one-tile request is then handled by whichever tiler replica owns its partition: fetch the 4×4
zoom-18 provider tiles, stitch them to a 1024×1024 image, store it in the blob store (a lossless
GeoTIFF, georeferenced in EPSG:3857: `vision.imageio.encode_tile`) under its
content-addressed key, and produce one `Tile` message keyed by tile id. A scan of any size is
thus spread over the replicas, and no record takes longer than one tile.

At-least-once, de-duplicated downstream by (scan id, tile id). A crash redelivers the requests
not yet committed: a region is split again (the same one-tile requests), a tile is fetched again
(its GeoTIFF rewrites the same content-addressed object, its message repeats with the same key
and content). A tile the provider does not have (404), that is not a usable image, or that fails with any
other error but a transient one (a CRSError, a GEOS error, a PermissionError: a bug or a bad
source, logged with its traceback) becomes a dead letter carrying its tile id and scan id (the
sink marks it failed) and the scan goes on: every tile of a request gets a status. A one-tile
request that fails before its tile is tried is dead-lettered naming its tile too. An
invalid request (not a ScanRequest, bad region or zooms, unknown provider) becomes one dead
letter with the scan id and no tile id. A provider that keeps failing (5xx, timeouts) raises
`TransientError`: the request is retried later, nothing is dead-lettered.

Skips: a tile whose imagery (same capture date) was already scanned with the current classifier
is not sent down the pipeline again; its scan row says "skipped" (`ScanRequest.rescan` forces a
new scan). The imagery date is known only once the tile is fetched, so the fetch still happens;
the expensive stages (segmenter, model server) are spared. A raster or STAC tile that its imagery
covers less than `raster_min_coverage` of (the rest nodata or outside every file) is skipped too,
with that reason, rather than scored on black pixels.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Protocol

from aiokafka.structs import ConsumerRecord

from amberscan import keys
from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.db import Database
from amberscan.common.handling import Handler
from amberscan.common.records import Failure, Output, dead_letter
from amberscan.common.settings import RASTER_MIN_COVERAGE, TilerSettings
from amberscan.common.stage import Stage, StageConfig
from amberscan.errors import InvalidInput, PoisonMessage, TransientError
from amberscan.geo.tiles import DEFAULT_MAX_TILES, Tile
from amberscan.imagery.dates import date_in_range
from amberscan.imagery.providers import (
    Provider,
    SourceGuard,
    SourceSpec,
    open_session,
    provider_for,
)
from amberscan.tiler.core import ScanPlan, plan_scan, should_skip, split_request, tile_message
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.imageio import encode_tile

SERVICE = "tiler"
log = logging.getLogger(__name__)


class OutsideDates(PoisonMessage):
    """The provider's imagery of a tile was captured outside the requested dates."""


def decode_request(record: ConsumerRecord) -> pb.ScanRequest:
    where = f"{record.topic}/{record.partition}@{record.offset}"
    try:
        request: pb.ScanRequest = pb.ScanRequest.FromString(record.value or b"")
    except Exception as error:  # noqa: BLE001 - protobuf raises several types
        raise PoisonMessage(f"{where}: not a ScanRequest message ({error})") from None
    return request


def describe_request(record: ConsumerRecord) -> Failure:
    """What a dead letter of `record` fails: the scan, and the tile of a one-tile request (a
    letter without a tile id fails the whole request)."""
    try:
        request = pb.ScanRequest.FromString(record.value or b"")
    except Exception:  # noqa: BLE001
        return Failure(scan_id=(record.key or b"").decode(errors="replace"))
    tile = request.tile.quadkey if request.HasField("tile") else ""
    return Failure(tile_id=tile, scan_id=request.scan_id)


class Providers:
    """The providers of one process, one per source spec, made on first use and closed together
    (the least recently used is closed beyond `limit`: requests may name many sources)."""

    def __init__(self, factory: Callable[[SourceSpec], Provider], limit: int = 64) -> None:
        self.factory = factory
        self.limit = limit
        self._made: OrderedDict[SourceSpec, Provider] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, spec: SourceSpec | str) -> Provider:
        if isinstance(spec, str):
            spec = SourceSpec(spec)
        if spec not in self._made:
            self._made[spec] = self.factory(spec)
            while len(self._made) > self.limit:
                _, old = self._made.popitem(last=False)
                task = asyncio.get_running_loop().create_task(old.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        self._made.move_to_end(spec)
        return self._made[spec]

    async def close(self) -> None:
        for provider in self._made.values():
            await provider.close()
        self._made.clear()


class Blobs(Protocol):
    """What the tiler needs of the blob store (BlobStore, or a dict-backed fake in tests)."""

    async def put(self, data: bytes, kind: str, ext: str, content_type: str = "") -> str: ...


class ScanHistory(Protocol):
    """What the tiler needs to skip tiles already scanned (the database, or a fake in tests)."""

    async def current_models(self) -> pb.ModelVersions: ...

    async def scanned(self, tile_id: str) -> list[tuple[str, str]]: ...

    async def mark_skipped(
        self, scan_id: str, tile_id: str, imagery_date: str, model: str, reason: str
    ) -> None: ...

    async def mark_not_covered(self, scan_id: str, tile_id: str, reason: str) -> None: ...


class NotCovered(PoisonMessage):
    """The imagery covers too little of a tile to scan it (dead-lettered only where no scan
    history is kept to mark it skipped)."""


class DatabaseHistory:
    """Scan history from PostGIS: detections already stored, and the registry's current model."""

    def __init__(self, settings: TilerSettings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._models = pb.ModelVersions()
        self._read_at = float("-inf")

    async def current_models(self) -> pb.ModelVersions:
        """The registry's current pair, read again at most every `classifier_refresh_s` (one
        blob read per scan tile cost the tiler a third more CPU in `make bench`)."""
        from amberscan.common.blobstore import MissingBlob
        from amberscan.common.registry import pointer

        if time.monotonic() - self._read_at < self.settings.classifier.refresh_s:
            return self._models
        try:
            current = await pointer(self.settings.s3)
        except MissingBlob:
            # No model promoted yet: nothing can match (nothing is skipped) and the classifier
            # scores with its file.
            self._models = pb.ModelVersions()
        else:
            self._models = pb.ModelVersions(classifier=current.version, backbone=current.backbone)
        self._read_at = time.monotonic()
        return self._models

    async def scanned(self, tile_id: str) -> list[tuple[str, str]]:
        rows = await self.db.fetch(
            "SELECT imagery_date, model_version FROM detections WHERE tile_id = %s", tile_id
        )
        return [(str(d), str(m)) for d, m in rows]

    async def mark_skipped(
        self, scan_id: str, tile_id: str, imagery_date: str, model: str, reason: str
    ) -> None:
        # The earlier verdict stands for this scan: its flag and area are copied.
        await self.db.execute(
            "INSERT INTO scan_tiles (scan_id, tile_id, status, flagged, hectares, reason) "
            "SELECT %s, %s, 'skipped', d.flagged, d.hectares, %s FROM detections d "
            "WHERE d.tile_id = %s AND d.imagery_date = %s AND d.model_version = %s "
            "ON CONFLICT (scan_id, tile_id) DO UPDATE SET status = 'skipped', "
            "reason = EXCLUDED.reason, updated_at = now() WHERE scan_tiles.status <> 'done'",
            scan_id,
            tile_id,
            reason,
            tile_id,
            imagery_date,
            model,
        )

    async def mark_not_covered(self, scan_id: str, tile_id: str, reason: str) -> None:
        await self.db.execute(
            "INSERT INTO scan_tiles (scan_id, tile_id, status, reason) "
            "VALUES (%s, %s, 'skipped', %s) "
            "ON CONFLICT (scan_id, tile_id) DO UPDATE SET status = 'skipped', "
            "reason = EXCLUDED.reason, updated_at = now() "
            "WHERE scan_tiles.status <> 'done'",  # done is final, as in the sink
            scan_id,
            tile_id,
            reason,
        )


def make_handler(
    store: Blobs,
    providers: Providers | Mapping[str, Provider],
    *,
    history: ScanHistory | None = None,
    default_provider: str = "xyz",
    max_tiles: int = DEFAULT_MAX_TILES,
    tile_concurrency: int = 4,
    min_coverage: float = RASTER_MIN_COVERAGE,
) -> Handler:
    """The record handler: one scan request in, its tile messages and dead letters out."""

    def provider(spec: SourceSpec) -> Provider:
        if isinstance(providers, Providers):
            return providers.get(spec)
        if spec.provider not in providers:
            raise PoisonMessage(f"unknown imagery provider {spec.provider!r}")
        return providers[spec.provider]

    async def handle(record: ConsumerRecord) -> list[Output]:
        request = decode_request(record)
        # Off the loop: a region of 10⁵ vertices takes a while to parse and cover (#26, defect 7).
        plan = await asyncio.to_thread(plan_scan, request, default_provider, max_tiles)
        # An unknown or unconfigured provider fails the whole request here.
        source = provider(SourceSpec.from_request(request, plan.provider))
        if not plan.single:
            # A region becomes one request per scan tile, keyed by tile: any tiler replica
            # fetches each, and no record takes longer than one tile.
            return await asyncio.to_thread(
                lambda: [
                    Output(topics.SCAN_REQUESTS, one.tile.quadkey.encode(), one.SerializeToString())
                    for one in split_request(request, plan)
                ]
            )
        # Bounds the stitched images held at once; the provider bounds HTTP concurrency itself.
        gate = asyncio.Semaphore(tile_concurrency)
        # The models that score this request's tiles, decided once here: a promotion while
        # the tiles are in flight does not split a tile between two models.
        models = await history.current_models() if history else pb.ModelVersions()
        model = "" if request.rescan else models.classifier

        async def one(tile: Tile) -> Output | None:
            async with gate:
                try:
                    return await _tile_output(
                        store, source, plan, request, tile, history, model, min_coverage, models
                    )
                except TransientError:
                    raise  # the request is retried, later if need be: no status yet
                except Exception as error:  # noqa: BLE001 - poison or a bug: only this tile fails
                    if not isinstance(error, PoisonMessage | InvalidInput):
                        log.exception(
                            "unexpected error making a scan tile; dead-lettering it",
                            extra={"tile": tile.quadkey, "scan": plan.scan_id},
                        )
                    return _tile_letter(record, tile, plan.scan_id, error)

        outputs = await asyncio.gather(*(one(t) for t in plan.tiles))
        return [output for output in outputs if output is not None]

    return handle


def _tile_letter(record: ConsumerRecord, tile: Tile, scan_id: str, error: Exception) -> Output:
    """The dead letter failing one scan tile of a scan, whatever the error: it names the tile,
    so the sink records the tile failed (a letter without one would read as the request's)."""
    letter = dead_letter(record, SERVICE, error, Failure(tile_id=tile.quadkey, scan_id=scan_id))
    # Name the scan tile too: the provider's error names only its child tile, if anything.
    letter.reason = f"scan tile {tile.quadkey} ({tile}): {letter.reason}"
    return Output(topics.DEAD_LETTERS, tile.quadkey.encode(), letter.SerializeToString())


async def _tile_output(
    store: Blobs,
    source: Provider,
    plan: ScanPlan,
    request: pb.ScanRequest,
    tile: Tile,
    history: ScanHistory | None = None,
    model: str = "",
    min_coverage: float = RASTER_MIN_COVERAGE,
    models: pb.ModelVersions | None = None,
) -> Output | None:
    fetched = await source.scan_image(tile, plan.fetch_zoom, request.vintage)
    if fetched.coverage < min_coverage:
        where = f" ({fetched.source})" if fetched.source else ""
        reason = (
            f"imagery covers {fetched.coverage:.0%} of the tile, less than the "
            f"{min_coverage:.0%} needed{where}: the rest is nodata or outside the raster"
        )
        if history is None:
            raise NotCovered(f"tile {tile} ({tile.quadkey}): {reason}")
        await history.mark_not_covered(plan.scan_id, tile.quadkey, reason)
        return None
    if not date_in_range(fetched.imagery_date, request.date_from, request.date_to):
        raise OutsideDates(
            f"tile {tile} ({tile.quadkey}): imagery dated {fetched.imagery_date} is outside "
            f"the requested {request.date_from or '…'} to {request.date_to or '…'}"
        )
    if history is not None and model:
        scanned = await history.scanned(tile.quadkey)
        if should_skip(scanned, fetched.imagery_date, model, request.rescan):
            reason = f"imagery of {fetched.imagery_date} already scanned with model {model}"
            await history.mark_skipped(
                plan.scan_id, tile.quadkey, fetched.imagery_date, model, reason
            )
            return None
    data = await asyncio.to_thread(encode_tile, fetched.image, tile.xy_bounds())
    key = await store.put(data, keys.TILE_IMAGES, "tif", "image/tiff")
    height, width = fetched.image.shape[:2]
    message = tile_message(
        tile,
        scan_id=plan.scan_id,
        provider=plan.provider,
        imagery_date=fetched.imagery_date,
        image_key=key,
        width=width,
        height=height,
        tiles_expected=plan.tiles_expected,
        demo=request.demo,
        models=models,
    )
    return Output(topics.TILES, tile.quadkey.encode(), message.SerializeToString())


def make_stage(
    settings: TilerSettings,
    store: Blobs,
    providers: Providers | Mapping[str, Provider] | None = None,
    history: ScanHistory | None = None,
) -> Stage:
    """The tiler stage; `providers` defaults to those configured in `settings`."""
    if providers is None:
        providers = Providers(lambda spec: provider_for(spec, settings))
    handler = make_handler(
        store,
        providers,
        history=history,
        default_provider=settings.imagery.default_provider,
        max_tiles=settings.tiler.max_scan_tiles,
        tile_concurrency=settings.tiler.tile_concurrency,
        min_coverage=settings.imagery.raster_min_coverage,
    )
    config = StageConfig(
        service=SERVICE,
        source_topic=topics.SCAN_REQUESTS,
        describe=describe_request,
        # Requests of one tile each (a region is split first): a poll's worth are fetched
        # concurrently, bounded by the fetcher's own limits.
        max_records=settings.tiler.tile_concurrency,
    )
    return Stage(settings, config, handler)


async def run(settings: TilerSettings, stop: asyncio.Event) -> None:
    """Run the tiler until `stop` is set."""
    store = BlobStore(settings.s3)
    await store.ensure_bucket()
    async with Database(settings.database) as db:
        await _run(settings, stop, store, DatabaseHistory(settings, db))


async def _run(
    settings: TilerSettings, stop: asyncio.Event, store: BlobStore, history: ScanHistory
) -> None:
    # One HTTP session (connection pool) shared by every provider of the process; its connector
    # resolves names through the source policy (#26 defect 8).
    async with open_session(SourceGuard.from_settings(settings)) as session:
        providers = Providers(lambda spec: provider_for(spec, settings, session))
        try:
            await make_stage(settings, store, providers, history).run(stop)
        finally:
            await providers.close()
