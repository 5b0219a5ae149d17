"""`amberscan scan`: submit a region and follow it until every tile has a status."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan import scanning
    from amberscan.common.settings import Settings
    from amberscan.v1 import messages_pb2 as pb


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub,
        "scan",
        "scan a region and follow it to the end",
        run,
        description="Submit a region to the pipeline and follow it until every tile has a "
        "status; print the summary and the map's address. Exit 1 when tiles failed or time ran "
        "out.",
        examples=[
            "amberscan scan --demo",
            "amberscan scan --bbox 26.85,51.28,26.92,51.31 --provider xyz",
            "amberscan scan --provider geotiff --source ortho-2019.tif --json",
        ],
    )
    region = p.add_mutually_exclusive_group()
    region.add_argument(
        "--bbox", help="W,S,E,N in WGS84 degrees (geotiff/stac: default the sources' footprints)"
    )
    region.add_argument("--geojson", type=Path, help="a GeoJSON Polygon/MultiPolygon file")
    region.add_argument("--demo", action="store_true", help="the bundled demo area")
    p.add_argument("--zoom", type=int, default=16, help="scan tile zoom (default 16)")
    p.add_argument("--fetch-zoom", type=int, default=18, help="provider tile zoom (default 18)")
    p.add_argument(
        "--provider",
        choices=list(options.PROVIDERS),
        help="imagery provider (default: AMBERSCAN_DEFAULT_PROVIDER, xyz unless set); "
        "bing: Microsoft is retiring the Bing Maps imagery API, see the README",
    )
    options.add_imagery_sources(p)
    p.add_argument("--date-from", default="", help="ISO date: skip imagery captured before")
    p.add_argument("--date-to", default="", help="ISO date: skip imagery captured after")
    p.add_argument("--rescan", action="store_true", help="scan again tiles already scanned")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait (default 3600)")
    options.add_json(p, "print the summary as one JSON object")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan import scanning
    from amberscan.common.db import Database
    from amberscan.common.topic_admin import ensure_topics

    request = scan_request(args, settings.imagery.default_provider)

    async def follow() -> list[tuple[pb.ScanRequest, scanning.ScanSummary]]:
        # Raster, STAC and WMTS sources are checked (and a missing region filled from their
        # footprints) before anything is submitted; `--vintage all` is one scan per date.
        requests = await scanning.prepare(settings, request)
        await ensure_topics(settings.kafka)
        done = []
        async with Database(settings.database) as db:
            for one in requests:
                expected = await scanning.submit(settings, db, one)
                if not args.json:
                    vintage = f" (imagery of {one.vintage})" if one.vintage else ""
                    print(f"scan {one.scan_id}: {expected} tiles{vintage}", file=sys.stderr)
                summary = await scanning.follow(
                    db, one.scan_id, expected, timeout_s=args.timeout, progress=not args.json
                )
                done.append((one, summary))
        return done

    results = asyncio.run(follow())
    url = f"http://{settings.web.host}:{settings.web.port}/"
    for one, summary in results:
        if args.json:
            report = {**summary.as_dict(), "map_url": url, "demo": one.demo}
            print(json.dumps({**report, "vintage": one.vintage}))
        else:
            print_summary(summary, one.demo, url)
    return 0 if all(s.complete and not s.error for _, s in results) else 1


def scan_request(args: argparse.Namespace, default_provider: str) -> pb.ScanRequest:
    """The request the arguments describe; a bad region is refused before anything is sent.

    Args:
        args: The parsed `scan` arguments (`--source` paths already absolute).
        default_provider: The provider of a scan that names none (`AMBERSCAN_DEFAULT_PROVIDER`).

    Raises:
        InvalidRegion: the bbox or the GeoJSON file is not a valid region (names the problem).
    """
    from amberscan.geo.tiles import parse_bbox, parse_geojson
    from amberscan.v1 import messages_pb2 as pb

    if args.demo:
        from amberscan.tiler.demo import demo_scan_request

        request = demo_scan_request()
    else:
        request = pb.ScanRequest(
            zoom=args.zoom,
            fetch_zoom=args.fetch_zoom,
            provider=args.provider or default_provider,
            date_from=args.date_from,
            date_to=args.date_to,
            sources=args.source,
            collection=args.collection,
            layers=args.layer,
            vintage=args.vintage,
            imagery_date=args.imagery_date,
        )
        if args.bbox:
            w, s, e, n = parse_bbox(args.bbox)
            request.bbox.CopyFrom(pb.BoundingBox(west=w, south=s, east=e, north=n))
        elif args.geojson:  # neither: the sources' footprints (scanning.prepare)
            text = args.geojson.read_text()
            parse_geojson(text)
            request.geojson = text
    request.rescan = args.rescan
    return request


def print_summary(summary: scanning.ScanSummary, demo: bool, url: str) -> None:
    if demo:
        from amberscan.tiler.demo import DEMO_NOTICE

        print(DEMO_NOTICE)
    print(
        f"scan {summary.scan_id}: {summary.tiles} tiles, {summary.flagged} flagged, "
        f"{summary.hectares:.2f} ha, {summary.failed} failed, {summary.skipped} skipped "
        f"(already scanned, or not covered by the imagery), {summary.seconds:.1f} s"
    )
    for failure in summary.failures:
        print(f"  failed {failure['tile_id']}: {failure['reason']}")
    if summary.error:
        print(f"  error: {summary.error}")
    print(f"map: {url}")
