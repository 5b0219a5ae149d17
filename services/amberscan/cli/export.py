"""`amberscan export`: the detections as a file for GIS and for readers, with the web API's
filters and fields (`/api/export.{geojson,csv,gpkg,fgb}`; both call `amberscan.web.exporting`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings
    from amberscan.web.core import Filters

FORMATS = ("geojson", "csv", "gpkg", "fgb")
# `amberscan.web.exporting.LAYERS` (a test checks)
LAYERS = ("tiles", "damaged_areas", "area_estimate")
REVIEWS = ("confirmed", "rejected", "reflagged", "unreviewed")
CHANGES = ("new", "gone", "changed")

DESCRIPTION = """\
Write the detections to a file: the scan tiles' polygons (layer `tiles`) and the damaged areas,
the positive superpixels' polygons of flagged tiles (layer `damaged_areas`). Every row has the
imagery date, the model and backbone versions, the threshold, the scores, the review state, the
scan, the provider and detected_at. The layer `area_estimate` holds the sample-based area
estimate of each sampling design (`amberscan area`) of the vintage and model in the region: its
region, the mining area with its 95 % interval, the map's accuracy, the mapped area. A
GeoPackage holds the three layers; GeoJSON, CSV (geometry as WKT) and FlatGeobuf hold one,
--layer (tiles by default). The filters are the web API's."""

EXAMPLES = (
    "amberscan export detections.gpkg --flagged",
    "amberscan export damage.fgb --layer damaged_areas --year 2016",
    "amberscan export - --format csv --review confirmed --bbox 26.5,50.7,26.8,50.9 > confirmed.csv",
    "amberscan export area.geojson --region area-outline.geojson --model clf-2026-01",
    "amberscan export estimates.csv --layer area_estimate --year 2016",
)


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub,
        "export",
        "the detections as GeoJSON, CSV, GeoPackage or FlatGeobuf",
        run,
        description=DESCRIPTION,
        examples=EXAMPLES,
    )
    p.add_argument(
        "out",
        metavar="OUT",
        help="the file to write (replaced); '-' writes GeoJSON or CSV to standard output",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="the file's format (default: from OUT's suffix: .geojson, .csv, .gpkg, .fgb)",
    )
    p.add_argument(
        "--layer",
        choices=LAYERS,
        help="the layer to write (default: all three in a GeoPackage, else tiles)",
    )
    p.add_argument("--flagged", action="store_true", help="flagged tiles only")
    p.add_argument(
        "--year", default="", help="a vintage: imagery of this year (YYYY, or 'unknown')"
    )
    p.add_argument("--model", default="", help="the detections of this classifier version")
    p.add_argument("--review", choices=REVIEWS, help="tiles in this review state")
    p.add_argument(
        "--change",
        choices=CHANGES,
        help="with --year: tiles whose verdict changed against their previous vintage",
    )
    region = p.add_mutually_exclusive_group()
    region.add_argument("--bbox", help="tiles meeting W,S,E,N (WGS84 degrees)")
    region.add_argument(
        "--region",
        type=Path,
        help="tiles meeting a GeoJSON Polygon/MultiPolygon file (at most 2,000 points)",
    )


def export_query(args: argparse.Namespace) -> dict[str, str]:
    """The web API's query parameters equivalent to the command's options."""
    from amberscan.errors import AmberscanError

    query = {
        "year": args.year,
        "model": args.model,
        "review": args.review or "",
        "change": args.change or "",
        "bbox": args.bbox or "",
        "layer": args.layer or "",
        "flagged": "true" if args.flagged else "",
    }
    if args.region is not None:
        try:
            query["region"] = args.region.read_text()
        except OSError as error:
            raise AmberscanError(f"--region {args.region}: {error.strerror}") from None
    return query


def export_format(args: argparse.Namespace) -> str:
    from amberscan.errors import AmberscanError

    if args.format:
        fmt = str(args.format)
    else:
        fmt = Path(args.out).suffix.lstrip(".").lower()
        if fmt not in FORMATS:
            raise AmberscanError(
                f"{args.out}: name the format with --format ({', '.join(FORMATS)}), "
                "or give the file one of their suffixes"
            )
    if args.out == "-" and fmt not in ("geojson", "csv"):
        raise AmberscanError(f"--format {fmt} is written to a file, not to standard output")
    return fmt


async def _write_text(
    out: TextIO, fmt: str, layer: str, db: Any, filters: Filters, thresholds: Any, images: Any
) -> int:
    import json

    from amberscan.web import area_queries, exporting
    from amberscan.web.export_queries import export_rows

    if layer == exporting.ESTIMATE_LAYER:
        reports = await area_queries.export_reports(db, images, filters)
        if fmt == "geojson":
            features = [exporting.estimate_feature(r) for r in reports]
            document = {"type": "FeatureCollection", "layer": layer, "features": features}
            out.write(json.dumps(document, default=str) + "\n")
        else:
            out.write(exporting.estimate_csv_text(reports))
        return len(reports)

    rows = export_rows(db, filters, layer, "geojson" if fmt == "geojson" else "wkt", thresholds)
    count = 0
    if fmt == "geojson":
        out.write(f'{{"type":"FeatureCollection","layer":{json.dumps(layer)},"features":[\n')
    else:
        out.write(exporting.csv_text([], header=True))
    async for row in rows:
        if fmt == "geojson":
            out.write(("," if count else "") + json.dumps(exporting.feature(row), default=str))
            out.write("\n")
        else:
            out.write(exporting.csv_text([row], header=False))
        count += 1
    if fmt == "geojson":
        out.write("]}\n")
    return count


async def export(
    settings: Settings, out: str, fmt: str, filters: Filters, layers: tuple[str, ...]
) -> dict[str, int]:
    """Write the export to `out` ('-': standard output); returns each layer's row count."""
    from amberscan.common.blobstore import BlobStore
    from amberscan.common.db import Database
    from amberscan.web.gdal_files import write_file
    from amberscan.web.state import ImageCache, Thresholds

    thresholds = Thresholds(settings)
    images = ImageCache(BlobStore(settings.s3))
    async with Database(settings.database) as db:
        if fmt in ("gpkg", "fgb"):
            return await write_file(Path(out), fmt, layers, db, filters, thresholds, images)
        (layer,) = layers
        if out == "-":
            return {
                layer: await _write_text(sys.stdout, fmt, layer, db, filters, thresholds, images)
            }
        with open(out, "w", encoding="utf-8", newline="") as file:
            return {layer: await _write_text(file, fmt, layer, db, filters, thresholds, images)}


def run(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.errors import AmberscanError
    from amberscan.web import params
    from amberscan.web.core import BadRequest

    fmt = export_format(args)
    try:
        filters, layers = params.export_request(export_query(args), fmt)
    except BadRequest as error:
        raise AmberscanError(str(error)) from None
    counts = asyncio.run(export(settings, args.out, fmt, filters, layers))
    written = ", ".join(f"{n} {layer}" for layer, n in counts.items())
    where = "standard output" if args.out == "-" else args.out
    print(f"wrote {written} to {where} ({fmt})", file=sys.stderr)
    return 0
