"""Submitting a scan and following it to the end: what `amberscan scan` does.

The scan's tiles are counted here with the same tile maths the tiler uses, recorded in `scans`,
and the request goes on the `scan-requests` topic; progress is read from `scan_tiles`, which
the sink fills from detections and dead letters. For raster, STAC and WMTS sources the request
is first checked against its sources (`prepare`): bad sources are refused before anything is
submitted, a request without a region gets the union of the sources' footprints, and
`--vintage all` becomes one request per capture date.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from google.protobuf.timestamp_pb2 import Timestamp
from tqdm import tqdm

from amberscan.common import topics
from amberscan.common.bus import client_options, connect
from amberscan.common.db import Database
from amberscan.common.settings import Settings
from amberscan.errors import InvalidRegion, TransientError
from amberscan.geo.tiles import Tile, parse_geojson, tiles_for_region
from amberscan.v1 import messages_pb2 as pb

ALL_VINTAGES = "all"
# Footprints are shrunk by this much (degrees, ~1 cm) so tiles that only touch a raster's edge
# are not counted in its region.
_EDGE = 1e-7


@dataclass
class ScanSummary:
    scan_id: str
    tiles: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    flagged: int = 0
    hectares: float = 0.0
    seconds: float = 0.0
    complete: bool = False
    error: str = ""
    failures: list[dict[str, str]] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scan_id": self.scan_id,
            "tiles": self.tiles,
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "flagged": self.flagged,
            "hectares": round(self.hectares, 4),
            "seconds": round(self.seconds, 2),
            "complete": self.complete,
            "error": self.error,
            "failures": self.failures,
            "verdicts": self.verdicts,
        }


def region_tiles(request: pb.ScanRequest) -> list[Tile]:
    """The scan tiles of a request (raises InvalidRegion naming the problem)."""
    zoom = request.zoom or 16
    if request.HasField("bbox"):
        b = request.bbox
        return tiles_for_region((b.west, b.south, b.east, b.north), zoom)
    if request.geojson:
        return tiles_for_region(parse_geojson(request.geojson), zoom)
    raise InvalidRegion(f"scan {request.scan_id}: no bbox and no GeoJSON region")


async def prepare(settings: Settings, request: pb.ScanRequest) -> list[pb.ScanRequest]:
    """Check a request against its sources and make it complete: one request per vintage.

    For providers that list their imagery (geotiff, stac, wmts): the sources are opened (a
    missing file, a raster without CRS or too coarse, an unreachable catalogue fail here, with
    the provider's message); a request with no region gets the union of the footprints; a
    `vintage` of "all" becomes one request per capture date over the region. Other providers'
    requests are returned as they are.

    Raises:
        AmberscanError: the sources cannot be scanned, or the region is missing/empty.
    """
    from shapely import geometry as sg

    from amberscan.imagery.dates import normalize_date
    from amberscan.imagery.providers import (
        Catalogue,
        SourceError,
        SourceSpec,
        check_sources,
        provider_for,
    )

    spec = SourceSpec.from_request(request)
    # The source policy, before anything is opened (#26 defect 8); a name resolved off the loop.
    await asyncio.to_thread(check_sources, spec, settings)
    provider = provider_for(spec, settings)
    try:
        if not isinstance(provider, Catalogue):
            if not (request.HasField("bbox") or request.geojson):
                raise InvalidRegion(
                    f"provider {request.provider!r}: give a region (--bbox or --geojson)"
                )
            if request.vintage == ALL_VINTAGES:
                raise SourceError(f"provider {request.provider!r} has no vintages to list")
            return [request]
        if request.HasField("bbox"):
            b = request.bbox
            region = sg.box(b.west, b.south, b.east, b.north)
        elif request.geojson:
            region = parse_geojson(request.geojson)
        else:
            footprint = await provider.footprint(request.date_from, request.date_to)
            shrunk = footprint.buffer(-_EDGE)
            region = shrunk if not shrunk.is_empty else footprint
            request.geojson = json.dumps(sg.mapping(region))
        # Listing the capture dates over the region opens the sources: bad ones fail here.
        dates = await provider.vintages(region, request.date_from, request.date_to)
        if not dates:
            raise SourceError(
                f"scan: the {request.provider} sources have no imagery over the region"
            )
        if request.vintage and request.vintage != ALL_VINTAGES:
            if normalize_date(request.vintage) not in dates:
                raise SourceError(
                    f"scan: no {request.provider} imagery of {request.vintage} over the region "
                    f"(it has {', '.join(dates)})"
                )
            request.vintage = normalize_date(request.vintage)
        if request.vintage != ALL_VINTAGES:
            return [request]
        out = []
        for date in dates:
            one = pb.ScanRequest()
            one.CopyFrom(request)
            one.scan_id, one.vintage = uuid.uuid4().hex, date
            out.append(one)
        return out
    finally:
        await provider.close()


def summarize(
    scan_id: str, expected: int, rows: list[tuple[Any, ...]], seconds: float
) -> ScanSummary:
    """The summary of a scan from its `scan_tiles` rows (tile_id, status, flagged, hectares, reason)."""
    summary = ScanSummary(scan_id=scan_id, tiles=expected, seconds=seconds)
    for tile_id, status, flagged, hectares, reason in rows:
        if tile_id == "":  # the request itself failed (an invalid region)
            summary.error = reason
            continue
        if status == "done":
            summary.done += 1
        elif status == "skipped":
            summary.skipped += 1
        else:
            summary.failed += 1
            summary.failures.append({"tile_id": tile_id, "reason": reason})
        if status != "failed":
            summary.flagged += int(bool(flagged))
            summary.hectares += float(hectares) if flagged else 0.0
        summary.verdicts.append(
            {
                "tile_id": tile_id,
                "status": status,
                "flagged": bool(flagged),
                "hectares": float(hectares),
            }
        )
    summary.verdicts.sort(key=lambda v: v["tile_id"])
    summary.complete = bool(summary.error) or (
        summary.done + summary.skipped + summary.failed >= expected
    )
    return summary


async def submit(settings: Settings, db: Database, request: pb.ScanRequest) -> int:
    """Record the scan and put its request on the bus; returns the number of tiles expected."""
    if not request.scan_id:
        request.scan_id = uuid.uuid4().hex
    expected = len(region_tiles(request))
    now = Timestamp()
    now.GetCurrentTime()
    request.requested_at.CopyFrom(now)
    await db.execute(
        "INSERT INTO scans (scan_id, tiles_expected, demo) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        request.scan_id,
        expected,
        request.demo,
    )
    producer = AIOKafkaProducer(**client_options(settings.kafka), enable_idempotence=True)
    await connect(producer, settings.kafka)
    try:
        await producer.send_and_wait(
            topics.topic_name(settings.kafka.topic_prefix, topics.SCAN_REQUESTS),
            request.SerializeToString(),
            key=request.scan_id.encode(),
        )
    finally:
        await producer.stop()
    return expected


async def follow(
    db: Database,
    scan_id: str,
    expected: int,
    *,
    timeout_s: float,
    progress: bool,
    poll_s: float = 0.5,
) -> ScanSummary:
    """Poll the scan's progress until every tile is done, skipped or failed (or the timeout).

    The database may restart meanwhile (the scan goes on without it): a failed poll is retried,
    with a note on stderr while it lasts, until the database answers again or the timeout.
    """
    started = time.monotonic()
    bar = tqdm(total=expected, unit="tile", disable=not progress, desc="scan")
    rows: list[tuple[Any, ...]] = []
    unreachable_since: float | None = None
    try:
        while True:
            try:
                rows = await db.fetch(
                    "SELECT tile_id, status, flagged, hectares, reason FROM scan_tiles "
                    "WHERE scan_id = %s",
                    scan_id,
                )
            except TransientError as error:
                if unreachable_since is None:
                    unreachable_since = time.monotonic()
                    print(
                        f"scan {scan_id}: the database does not answer ({error}); retrying",
                        file=sys.stderr,
                    )
            else:
                if unreachable_since is not None:
                    print(
                        f"scan {scan_id}: the database answers again after "
                        f"{time.monotonic() - unreachable_since:.0f}s",
                        file=sys.stderr,
                    )
                    unreachable_since = None
            summary = summarize(scan_id, expected, rows, time.monotonic() - started)
            finished = summary.done + summary.skipped + summary.failed
            bar.n = finished
            bar.set_postfix(flagged=summary.flagged, failed=summary.failed, refresh=False)
            bar.refresh()
            if summary.complete:
                return summary
            if time.monotonic() - started > timeout_s:
                summary.error = (
                    f"timed out after {timeout_s:.0f}s with {finished} of {expected} tiles finished"
                )
                if unreachable_since is not None:
                    summary.error += (
                        f"; the database has not answered for "
                        f"{time.monotonic() - unreachable_since:.0f}s"
                    )
                return summary
            await asyncio.sleep(poll_s)
    finally:
        bar.close()
