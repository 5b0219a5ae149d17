"""Watch service: watched regions → `scan-requests`, at each region's cadence.

Each replica loops: take the lease of the most overdue region (PostGIS, `FOR UPDATE SKIP
LOCKED`, so replicas share regions and never run one region's round twice at once; the lease is
renewed every `LEASE_RENEW_FRACTION` of `AMBERSCAN_WATCH_LEASE_S` while the round runs, and
every write of the round is fenced by the lease's token, so a replica whose lease was taken —
stalled past it — writes nothing more and abandons its round), send again
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
+1, doubling backoff, at most `watch_max_attempts`), and so is a tile sent that has had no
status for `watch.core.UNANSWERED_AFTER_S` (its request lost on the way). A provider that fails a
round (unreachable catalogue), or any other error in it, keeps the region's cursor, records the
error and comes back after the backoff; a claim or release that fails (the database read-only
after a failover) is logged and tried again after the backoff, the lease expiring meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from aiokafka import AIOKafkaProducer

from amberscan.alerts.service import Alerter
from amberscan.common import topics
from amberscan.common.bus import client_options, connect
from amberscan.common.db import Database
from amberscan.common.metrics import HEARTBEAT
from amberscan.common.settings import WatchSettings
from amberscan.errors import AmberscanError
from amberscan.geo.tiles import Tile, parse_geojson, tiles_for_region
from amberscan.imagery.providers import Catalogue, SourceSpec, provider_for
from amberscan.watch import store
from amberscan.watch.core import UNANSWERED_AFTER_S, Watch, plan_round, tile_request

log = logging.getLogger(__name__)
SERVICE = "watch"
# A round renews its lease this often, as a share of `AMBERSCAN_WATCH_LEASE_S` (#26, defect 5): two
# renewals may fail (the database restarting) before the lease runs out.
LEASE_RENEW_FRACTION = 1 / 3


def _spec(watch: Watch) -> SourceSpec:
    return SourceSpec(
        watch.provider, watch.sources, watch.collection, watch.layers, watch.imagery_date
    )


async def model_version(settings: WatchSettings) -> str:
    """The registry's current classifier ("" while none is published), recorded with each tile."""
    from amberscan.common.blobstore import MissingBlob
    from amberscan.common.registry import current_version

    try:
        return await current_version(settings.s3)
    except MissingBlob:
        return ""


class Watcher:
    """One replica: its identity (lease owner), database, producer and settings."""

    def __init__(self, settings: WatchSettings, db: Database, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.db = db
        self.producer = producer
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.topic = topics.topic_name(settings.kafka.topic_prefix, topics.SCAN_REQUESTS)
        self.unanswered_after_s = UNANSWERED_AFTER_S

    async def run_once(self) -> Watch | None:
        """Run one due region's round, if any is due and free; returns that region.

        Raises:
            Exception: the claim or the release failed (the database): the caller tries again
                later, and a lease held meanwhile expires.
        """
        lease = await store.claim(self.db, self.owner, self.settings.watch.lease_s)
        if lease is None:
            return None
        watch = lease.watch
        cursor, error = watch.cursor, ""
        try:
            cursor = await self._renewing(lease, self.round(lease))
        except store.LeaseLost as lost:
            log.warning(
                "watch lease lost, round abandoned",
                extra={"watch": watch.watch_id, "error": str(lost)},
            )
            return watch
        except AmberscanError as failure:
            error = str(failure)
            log.warning("watch round failed", extra={"watch": watch.watch_id, "error": error})
        except Exception as failure:  # noqa: BLE001 - any failure of a round is recorded, not fatal
            error = f"{type(failure).__name__}: {failure}"
            log.exception("watch round failed unexpectedly", extra={"watch": watch.watch_id})
        released = await store.release(
            self.db,
            lease,
            cursor=cursor,
            error=error,
            retry_s=self.settings.watch.retry_backoff_s,
        )
        if not released:
            log.warning("watch lease lost before release", extra={"watch": watch.watch_id})
        return watch

    async def _renewing(self, lease: store.Lease, work: Coroutine[Any, Any, str]) -> str:
        """`work`'s result, its lease renewed meanwhile; cancelled once the lease is lost.

        Raises:
            LeaseLost: the lease could not be renewed before it ran out, or was taken.
        """
        task = asyncio.create_task(work)
        renewing = asyncio.create_task(self._renew(lease))
        try:
            await asyncio.wait({task, renewing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            renewing.cancel()
            if not task.done():
                task.cancel()
            await asyncio.gather(task, renewing, return_exceptions=True)
        if task.cancelled():
            raise store.LeaseLost(
                f"watch {lease.watch.watch_id}: lease {lease.token} not renewed in time"
            )
        return task.result()

    async def _renew(self, lease: store.Lease) -> None:
        """Renew `lease` until cancelled; returns when it is lost (taken, or run out)."""
        lease_s = self.settings.watch.lease_s
        interval = lease_s * LEASE_RENEW_FRACTION
        runs_out = time.monotonic() + lease_s
        while True:
            await asyncio.sleep(interval)
            try:
                if not await store.renew(self.db, lease, lease_s):
                    return
                runs_out = time.monotonic() + lease_s
            except Exception as error:  # noqa: BLE001 - tried again until the lease runs out
                log.warning(
                    "watch lease not renewed",
                    extra={
                        "watch": lease.watch.watch_id,
                        "error": f"{type(error).__name__}: {error}",
                    },
                )
            if time.monotonic() + interval >= runs_out:
                return

    async def round(self, lease: store.Lease) -> str:
        """One round of the leased region; returns the provider's new cursor."""
        watch = lease.watch
        await self._send_unsent(lease)
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
            retry_base_s=self.settings.watch.retry_backoff_s,
            max_attempts=self.settings.watch.max_attempts,
            unanswered_after_s=self.unanswered_after_s,
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
        await store.record_new(self.db, lease, scan_id, plan.new, model)
        for record in plan.retries:
            await store.record_retry(self.db, lease, record, scan_id)
        await self._send(lease, scan_id, tiles)
        return found.cursor

    async def _send_unsent(self, lease: store.Lease) -> None:
        rounds = {scan_id for scan_id, _, _ in await store.unsent(self.db, lease.watch.watch_id)}
        for scan_id in sorted(rounds):
            await self._send(lease, scan_id)

    async def _send(
        self, lease: store.Lease, scan_id: str, tiles: dict[str, Tile] | None = None
    ) -> None:
        """Open round `scan_id` as a scan and produce its unsent tiles' requests."""
        watch = lease.watch
        total = await store.open_round(self.db, lease, scan_id)
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
        await store.mark_sent(self.db, lease, scan_id, [tile_id for _, tile_id, _ in mine])
        log.info(
            "watch round enqueued",
            extra={"watch": watch.watch_id, "scan_id": scan_id, "tiles": len(mine)},
        )


async def run(settings: WatchSettings, stop: asyncio.Event) -> None:
    """Run watch rounds until `stop` is set (idle replicas look every `AMBERSCAN_WATCH_POLL_S`),
    and beside them the alerts of the finished rounds (`alerts.service.Alerter`, every
    `AMBERSCAN_ALERT_POLL_S`; its docstring states its guarantee)."""
    producer = AIOKafkaProducer(**client_options(settings.kafka), enable_idempotence=True)
    await connect(producer, settings.kafka)
    try:
        async with Database(settings.database) as db:
            watcher = Watcher(settings, db, producer)
            alerter = Alerter(settings, db, watcher.owner, settings.watch.lease_s)
            alerting = asyncio.create_task(alerter.run(stop), name="watch-alerts")
            try:
                await _rounds(settings, watcher, stop)
            finally:
                if not stop.is_set():
                    alerting.cancel()  # the rounds failed: the process exits
                # On a stop the alerts end their delivery in flight (a retry's wait is cut).
                await asyncio.gather(alerting, return_exceptions=True)
    finally:
        await producer.stop()


async def _rounds(settings: WatchSettings, watcher: Watcher, stop: asyncio.Event) -> None:
    while not stop.is_set():
        HEARTBEAT.beat()  # each round or idle look: the liveness probe's progress
        wait = settings.watch.poll_s
        try:
            if await watcher.run_once() is not None:
                continue  # another region may be due too
        except Exception:  # noqa: BLE001 - a claim or release failed: try again later
            log.exception("watch: claim or release failed, will try again")
            wait = settings.watch.retry_backoff_s
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
        except TimeoutError:
            pass
