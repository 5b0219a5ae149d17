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
    p = options.command(sub, "scan", "scan a region and follow it to the end", run)
    region = p.add_mutually_exclusive_group(required=True)
    region.add_argument("--bbox", help="W,S,E,N in WGS84 degrees")
    region.add_argument("--geojson", type=Path, help="a GeoJSON Polygon/MultiPolygon file")
    region.add_argument("--demo", action="store_true", help="the bundled demo area")
    p.add_argument("--zoom", type=int, default=16, help="scan tile zoom (default 16)")
    p.add_argument("--fetch-zoom", type=int, default=18, help="provider tile zoom (default 18)")
    p.add_argument("--provider", default="xyz", choices=["bing", "xyz", "local", "demo"])
    p.add_argument("--date-from", default="", help="ISO date: skip imagery captured before")
    p.add_argument("--date-to", default="", help="ISO date: skip imagery captured after")
    p.add_argument("--rescan", action="store_true", help="scan again tiles already scanned")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait (default 3600)")
    options.add_json(p, "print the summary as one JSON object")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan import scanning
    from amberscan.common.db import Database
    from amberscan.common.kafka import ensure_topics

    request = scan_request(args)

    async def follow() -> scanning.ScanSummary:
        await ensure_topics(settings)
        async with Database(settings) as db:
            expected = await scanning.submit(settings, db, request)
            if not args.json:
                print(f"scan {request.scan_id}: {expected} tiles", file=sys.stderr)
            return await scanning.follow(
                db, request.scan_id, expected, timeout_s=args.timeout, progress=not args.json
            )

    summary = asyncio.run(follow())
    url = f"http://{settings.web_host}:{settings.web_port}/"
    if args.json:
        print(json.dumps({**summary.as_dict(), "map_url": url, "demo": request.demo}))
    else:
        print_summary(summary, request.demo, url)
    return 0 if summary.complete and not summary.error else 1


def scan_request(args: argparse.Namespace) -> pb.ScanRequest:
    """The request the arguments describe; a bad region is refused before anything is sent.

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
            provider=args.provider,
            date_from=args.date_from,
            date_to=args.date_to,
        )
        if args.bbox:
            w, s, e, n = parse_bbox(args.bbox)
            request.bbox.CopyFrom(pb.BoundingBox(west=w, south=s, east=e, north=n))
        else:
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
        f"as already scanned, {summary.seconds:.1f} s"
    )
    for failure in summary.failures:
        print(f"  failed {failure['tile_id']}: {failure['reason']}")
    if summary.error:
        print(f"  error: {summary.error}")
    print(f"map: {url}")
