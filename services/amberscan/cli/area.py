"""`amberscan area`: the sample-based mining area of a region, with its 95 % interval (#28).

    amberscan area --bbox W,S,E,N --year 2018 [--model M] --n 200 [--seed 28] [--strata F]
    amberscan area --bbox W,S,E,N --year-before 2016 --year 2018 --n 200
    amberscan area --design ID [--units units.geojson] [--json]

The first draws the stratified sampling design of the region, vintage and model (or resumes
the one already drawn: one per the three) and prints its estimate so far; with --year-before,
the design of the new damage between two vintages (on the change map's strata: flagged at the
later date only, at both, at neither), judged by the reviews of each tile at both dates; the
last prints a
design's estimate, per reporting unit with `--units` (named GeoJSON polygons). The reviewers'
verdicts on the sampled tiles (the web map's /area page, or POST /api/reviews) are the
reference observations. `--json` prints the web API's document (GET /api/area/designs/ID).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub,
        "area",
        "sample-based mining area with its 95 %% interval, per reporting unit",
        run,
        description=(
            "Draw (or resume) the stratified sampling design of a region, vintage and model and"
            " print its estimate so far, or print an existing design's estimate: the mining area"
            " with its standard error and 95 %% interval, user's and producer's accuracy, the"
            " mapped area beside it, per reporting unit with --units. The reviewers' verdicts on"
            " the sampled tiles (the web map's /area page) are the reference observations."
        ),
        examples=(
            "amberscan area --bbox 26.5,50.7,26.8,50.9 --year 2016 --n 200",
            "amberscan area --bbox 26.5,50.7,26.8,50.9 --year 2016 --target-se-ha 5",
            "amberscan area --bbox 26.5,50.7,26.8,50.9 --year-before 2014 --year 2016 --n 150",
            "amberscan area --design 1 --units districts.geojson --json",
        ),
    )
    p.add_argument("--design", type=int, help="an existing design's id")
    p.add_argument("--bbox", help="the region W,S,E,N (WGS84 degrees), to draw or resume a design")
    p.add_argument("--region", type=Path, help="the region as a GeoJSON polygon file")
    p.add_argument("--year", default="", help="the vintage (imagery year)")
    p.add_argument(
        "--year-before",
        default="",
        help="an earlier vintage: estimate the new damage between it and --year",
    )
    p.add_argument("--model", default="", help="the model (default: the newest in the region)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--n", type=int, help="the sample size")
    size.add_argument(
        "--target-se-ha", type=float, help="the sample size that gives this SE of the mining area"
    )
    p.add_argument("--seed", type=int, default=28, help="the sample's random seed")
    p.add_argument("--strata", type=Path, help="the user's strata: named GeoJSON polygons")
    p.add_argument("--not-blind", action="store_true", help="show reviewers the map's verdict")
    p.add_argument("--units", type=Path, help="reporting units: named GeoJSON polygons")
    options.add_json(p, "print the estimate as one JSON document")


def _read_json(path: Path) -> Any:
    from amberscan.errors import AmberscanError

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise AmberscanError(f"{path}: not a readable JSON file ({error})") from None


async def _report(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from amberscan.common.blobstore import BlobStore
    from amberscan.common.db import Database
    from amberscan.errors import AmberscanError
    from amberscan.web import area_queries
    from amberscan.web.core import BadRequest
    from amberscan.web.routes.area import design_request
    from amberscan.web.state import ImageCache

    try:
        units = area_queries.units_of(_read_json(args.units)) if args.units else None
        async with Database(settings.database) as db:
            design_id = args.design
            if design_id is None:
                body: dict[str, Any] = {
                    "year": args.year,
                    "year_before": args.year_before,
                    "model": args.model,
                    "seed": args.seed,
                    "blind": not args.not_blind,
                    "reviewer": "cli",
                }
                if args.bbox:
                    body["bbox"] = args.bbox
                elif args.region:
                    body["region"] = _read_json(args.region)
                if args.n is not None:
                    body["n"] = args.n
                if args.target_se_ha is not None:
                    body["target_se_ha"] = args.target_se_ha
                if args.strata:
                    body["strata"] = _read_json(args.strata)
                design_id, _ = await area_queries.create_design(db, design_request(body))
            report = await area_queries.report(
                db, ImageCache(BlobStore(settings.s3)), design_id, units
            )
    except BadRequest as error:
        raise AmberscanError(str(error)) from None
    if report is None:
        raise AmberscanError(f"no area design {args.design}")
    return report


def _line(name: str, e: dict[str, Any]) -> str:
    ha = e["mining_ha"]
    if ha is None:
        return f"{name}: no estimate yet ({e['reviewed']} sampled tiles reviewed)"
    interval = "" if ha["low"] is None else f" (95 % CI {ha['low']:.2f} to {ha['high']:.2f})"
    se = "" if ha["se"] is None else f" ± SE {ha['se']:.2f}"
    accuracy = ""
    if e["users_accuracy"] and e["producers_accuracy"]:
        accuracy = (
            f"; user's accuracy {e['users_accuracy']['estimate']:.3f},"
            f" producer's {e['producers_accuracy']['estimate']:.3f}"
        )
    return (
        f"{name}: mining {ha['estimate']:.2f} ha{se}{interval}; mapped {e['mapped_ha']:.2f} ha"
        f"{accuracy}"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.errors import AmberscanError

    if args.design is None and not (args.bbox or args.region):
        raise AmberscanError("give --design ID, or the region (--bbox or --region) to sample")
    if args.design is None and args.n is None and args.target_se_ha is None:
        raise AmberscanError("a new design needs --n or --target-se-ha")
    report = asyncio.run(_report(settings, args))
    if args.json:
        json.dump(report, sys.stdout, default=str)
        sys.stdout.write("\n")
        return 0
    vintage = report["year"] or "newest"
    if report["kind"] == "change":
        vintage = f"new damage from {report['year_before']} to {vintage}"
    print(
        f"design {report['id']}: vintage {vintage}, model "
        f"{report['model_version']}, {report['reviewed']} of {report['sampled']} tiles reviewed"
    )
    for s in report["strata"]:
        print(
            f"  {s['name']}: {s['tiles']} tiles, {s['sampled']} sampled, {s['reviewed']} reviewed"
        )
    print(_line("region", report["estimate"]))
    for unit in report["units"]:
        print(_line(unit["name"], unit))
    return 0
