"""Tiler service: `scan-requests` → `tiles`.

For each scan request: validate it and list its zoom-16 scan tiles, then per tile fetch the 4×4
zoom-18 provider tiles, stitch them to a 1024×1024 PNG, store it in the blob store under its
content-addressed key, and produce one `Tile` message keyed by tile id.

At-least-once. The request's offset is committed only after every tile message (or dead letter)
of the scan is acknowledged, so a crash mid-scan redelivers the whole request: tiles are fetched
again, their PNGs rewrite the same content-addressed objects, and their messages repeat with the
same key (tile id) and content; downstream de-duplicates by (scan id, tile id). A tile the
provider does not have (404) or that is not a usable image becomes a dead letter carrying its
tile id and scan id (the sink marks it failed) and the scan goes on. An invalid request (not a
ScanRequest, bad region or zooms, unknown provider) becomes one dead letter with the scan id and
no tile id. A provider that keeps failing (5xx, timeouts) raises `TransientError`: the whole
request is retried later, nothing is dead-lettered.

Limit: a request is handled in one go (outputs are produced when the scan is fetched), so one
request must finish within the consumer's max poll interval (10 min); split large regions into
several requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol

import aiohttp
from aiokafka.structs import ConsumerRecord

from amberscan.common import keys, topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.errors import PoisonMessage
from amberscan.common.kafka import Failure, Handler, Output, Stage, StageConfig, dead_letter
from amberscan.common.settings import Settings
from amberscan.geo.tiles import DEFAULT_MAX_TILES, Tile
from amberscan.tiler.core import ScanPlan, date_in_range, plan_scan, tile_message
from amberscan.tiler.providers import Provider, fetch_scan_tile, provider_for
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.imageio import encode_png

SERVICE = "tiler"


class OutsideDates(PoisonMessage):
    """The provider's imagery of a tile was captured outside the requested dates."""


def decode_request(record: ConsumerRecord) -> pb.ScanRequest:
    where = f"{record.topic}/{record.partition}@{record.offset}"
    try:
        return pb.ScanRequest.FromString(record.value or b"")
    except Exception as error:  # noqa: BLE001 - protobuf raises several types
        raise PoisonMessage(f"{where}: not a ScanRequest message ({error})") from None


def describe_request(record: ConsumerRecord) -> Failure:
    try:
        return Failure(scan_id=pb.ScanRequest.FromString(record.value or b"").scan_id)
    except Exception:  # noqa: BLE001
        return Failure(scan_id=(record.key or b"").decode(errors="replace"))


class Providers:
    """The providers of one process, made on first use and closed together."""

    def __init__(self, factory: Callable[[str], Provider]) -> None:
        self.factory = factory
        self._made: dict[str, Provider] = {}

    def get(self, name: str) -> Provider:
        if name not in self._made:
            self._made[name] = self.factory(name)
        return self._made[name]

    async def close(self) -> None:
        for provider in self._made.values():
            await provider.close()
        self._made.clear()


class Blobs(Protocol):
    """What the tiler needs of the blob store (BlobStore, or a dict-backed fake in tests)."""

    async def put(self, data: bytes, kind: str, ext: str, content_type: str = "") -> str: ...


def make_handler(
    store: Blobs,
    providers: Providers | Mapping[str, Provider],
    *,
    default_provider: str = "xyz",
    max_tiles: int = DEFAULT_MAX_TILES,
    tile_concurrency: int = 4,
) -> Handler:
    """The record handler: one scan request in, its tile messages and dead letters out."""

    def provider(name: str) -> Provider:
        if isinstance(providers, Providers):
            return providers.get(name)
        if name not in providers:
            raise PoisonMessage(f"unknown imagery provider {name!r}")
        return providers[name]

    async def handle(record: ConsumerRecord) -> list[Output]:
        request = decode_request(record)
        plan = plan_scan(request, default_provider, max_tiles)
        source = provider(plan.provider)
        # Bounds the stitched images held at once; the provider bounds HTTP concurrency itself.
        gate = asyncio.Semaphore(tile_concurrency)

        async def one(tile: Tile) -> Output:
            async with gate:
                try:
                    return await _tile_output(store, source, plan, request, tile)
                except PoisonMessage as error:
                    failure = Failure(tile_id=tile.quadkey, scan_id=plan.scan_id)
                    letter = dead_letter(record, SERVICE, error, failure)
                    return Output(
                        topics.DEAD_LETTERS, tile.quadkey.encode(), letter.SerializeToString()
                    )

        return list(await asyncio.gather(*(one(t) for t in plan.tiles)))

    return handle


async def _tile_output(
    store: Blobs,
    source: Provider,
    plan: ScanPlan,
    request: pb.ScanRequest,
    tile: Tile,
) -> Output:
    fetched = await fetch_scan_tile(source, tile, plan.fetch_zoom)
    if not date_in_range(fetched.imagery_date, request.date_from, request.date_to):
        raise OutsideDates(
            f"tile {tile} ({tile.quadkey}): imagery dated {fetched.imagery_date} is outside "
            f"the requested {request.date_from or '…'} to {request.date_to or '…'}"
        )
    png = await asyncio.to_thread(encode_png, fetched.image)
    key = await store.put(png, keys.TILE_IMAGES, "png", "image/png")
    height, width = fetched.image.shape[:2]
    message = tile_message(
        tile,
        scan_id=plan.scan_id,
        provider=plan.provider,
        imagery_date=fetched.imagery_date,
        image_key=key,
        width=width,
        height=height,
        tiles_expected=len(plan.tiles),
        demo=request.demo,
    )
    return Output(topics.TILES, tile.quadkey.encode(), message.SerializeToString())


def make_stage(
    settings: Settings,
    store: Blobs,
    providers: Providers | Mapping[str, Provider] | None = None,
) -> Stage:
    """The tiler stage; `providers` defaults to those configured in `settings`."""
    if providers is None:
        providers = Providers(lambda name: provider_for(name, settings))
    handler = make_handler(
        store,
        providers,
        default_provider=str(getattr(settings, "default_provider", "xyz")),
        max_tiles=int(getattr(settings, "max_scan_tiles", DEFAULT_MAX_TILES)),
        tile_concurrency=int(getattr(settings, "tile_concurrency", 4)),
    )
    config = StageConfig(
        service=SERVICE,
        source_topic=topics.SCAN_REQUESTS,
        describe=describe_request,
        max_records=1,  # a request is a whole scan: one at a time
    )
    return Stage(settings, config, handler)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Run the tiler until `stop` is set."""
    store = BlobStore(settings)
    await store.ensure_bucket()
    # One HTTP session (connection pool) shared by every provider of the process.
    async with aiohttp.ClientSession(headers={"User-Agent": "amberscan-tiler"}) as session:
        providers = Providers(lambda name: provider_for(name, settings, session))
        try:
            await make_stage(settings, store, providers).run(stop)
        finally:
            await providers.close()
