"""Watch service: watched regions → `scan-requests`, at each region's cadence.

Each replica loops: take the lease of the most overdue region (PostGIS, `FOR UPDATE SKIP
LOCKED`, so replicas share regions and never run one region's round twice at once), send again
whatever an earlier round of that region recorded but did not mark sent, ask the provider what it
offers now (newest date per scan tile, from what appeared since the region's cursor), and enqueue
only the tiles whose imagery date is new or whose last enqueue failed and has waited its backoff.
A round that enqueues anything is a scan of its own (`scans`, `watch_rounds`): one-tile requests
keyed by tile id, each reading its tile at its date (`ScanRequest.vintage`).

Guarantee: each (tile, imagery date, model) is recorded once in `watch_tiles` (its primary key;
`INSERT … ON CONFLICT DO NOTHING` decides between replicas) before its request is produced,
and marked sent after the broker acknowledged it. A replica killed between the two leaves the row
unsent, and the region's next round (any replica, once the lease expires) sends it again with
the same scan id: at-least-once onto the topic, and a repeat is the same (scan id, tile id),
which the pipeline de-duplicates. A failed tile is enqueued again under the same key (attempts
+1, doubling backoff, at most `watch_max_attempts`). A provider that fails a round (unreachable
catalogue) keeps the region's cursor, records the error and comes back after the backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from aiokafka import AIOKafkaProducer

from amberscan.common import topics
from amberscan.common.db import Database
from amberscan.common.settings import Settings
from amberscan.errors import AmberscanError
from amberscan.geo.tiles import Tile, parse_geojson, tiles_for_region
from amberscan.imagery.providers import Catalogue, SourceSpec, provider_for
from amberscan.watch import store
from amberscan.watch.core import Watch, plan_round, tile_request

log = logging.getLogger(__name__)
SERVICE = "watch"


def _spec(watch: Watch) -> SourceSpec:
    return SourceSpec(
        watch.provider, watch.sources, watch.collection, watch.layers, watch.imagery_date
    )


async def model_version(settings: Settings) -> str:
    """The registry's current classifier ("" while none is published), recorded with each tile."""
    from amberscan.common.blobstore import MissingBlob
    from amberscan.common.registry import current_version

    try:
        return await current_version(settings)
    except MissingBlob:
        return ""


class Watcher:
    """One replica: its identity (lease owner), database, producer and settings."""

    def __init__(self, settings: Settings, db: Database, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.db = db
        self.producer = producer
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.topic = topics.topic_name(settings.topic_prefix, topics.SCAN_REQUESTS)

    async def run_once(self) -> Watch | None:
        """Run one due region's round, if any is due and free; returns that region."""
        watch = await store.claim(self.db, self.owner, self.settings.watch_lease_s)
        if watch is None:
            return None
        try:
            cursor = await self.round(watch)
        except AmberscanError as error:
            log.warning("watch round failed", extra={"watch": watch.watch_id, "error": str(error)})
            await store.release(
                self.db,
                watch,
                self.owner,
                cursor=watch.cursor,
                error=str(error),
                retry_s=self.settings.watch_retry_backoff_s,
            )
            return watch
        await store.release(self.db, watch, self.owner, cursor=cursor)
        return watch

    async def round(self, watch: Watch) -> str:
        """One round of `watch`; returns the provider's new cursor."""
        await self._send_unsent(watch)
        region = await asyncio.to_thread(
            lambda: tiles_for_region(parse_geojson(watch.geojson))
        )  # off the loop: a region of 10⁵ vertices takes a while (#26, defect 7)
        tiles = {t.quadkey: t for t in region}
        provider = provider_for(_spec(watch), self.settings)
        try:
            if not isinstance(provider, Catalogue):
                raise store.WatchError(
                    f"watch {watch.watch_id}: {watch.provider!r} is not watchable"
                )
            found = await provider.discover(list(tiles.values()), watch.cursor)
        finally:
            await provider.close()
        plan = plan_round(
            {t.quadkey: date for t, date in found.dates.items()},
            await store.known(self.db, list(tiles)),
            retry_base_s=self.settings.watch_retry_backoff_s,
            max_attempts=self.settings.watch_max_attempts,
        )
        for record in plan.given_up:
            log.warning(
                "tile keeps failing, not enqueued again",
                extra={"tile_id": record.tile_id, "imagery_date": record.imagery_date},
            )
        if plan.empty:
            return found.cursor
        scan_id = uuid.uuid4().hex
        model = await model_version(self.settings)
        await store.record_new(self.db, watch.watch_id, scan_id, plan.new, model)
        for record in plan.retries:
            await store.record_retry(self.db, record, scan_id)
        await self._send(watch, scan_id, tiles)
        return found.cursor

    async def _send_unsent(self, watch: Watch) -> None:
        rounds = {scan_id for scan_id, _, _ in await store.unsent(self.db, watch.watch_id)}
        for scan_id in sorted(rounds):
            await self._send(watch, scan_id)

    async def _send(self, watch: Watch, scan_id: str, tiles: dict[str, Tile] | None = None) -> None:
        """Open round `scan_id` as a scan and produce its unsent tiles' requests."""
        total = await store.open_round(self.db, watch.watch_id, scan_id)
        mine = [r for r in await store.unsent(self.db, watch.watch_id) if r[0] == scan_id]
        if not mine:
            return
        sends = []
        for _, tile_id, date in mine:
            tile = (tiles or {}).get(tile_id) or Tile.from_quadkey(tile_id)
            request = tile_request(watch, scan_id, tile, date, total)
            sends.append(
                await self.producer.send(
                    self.topic, request.SerializeToString(), key=tile_id.encode()
                )
            )
        await asyncio.gather(*sends)
        await store.mark_sent(self.db, scan_id, [tile_id for _, tile_id, _ in mine])
        log.info(
            "watch round enqueued",
            extra={"watch": watch.watch_id, "scan_id": scan_id, "tiles": len(mine)},
        )


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Run watch rounds until `stop` is set (idle replicas look every `watch_poll_s`)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        async with Database(settings) as db:
            watcher = Watcher(settings, db, producer)
            while not stop.is_set():
                if await watcher.run_once() is not None:
                    continue  # another region may be due too
                try:
                    await asyncio.wait_for(stop.wait(), timeout=settings.watch_poll_s)
                except TimeoutError:
                    pass
    finally:
        await producer.stop()
