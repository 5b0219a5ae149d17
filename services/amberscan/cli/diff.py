"""`amberscan diff`: the tiles whose verdict changed between two vintages or two models.

    amberscan diff --from 2015 --to 2016 [--model M]      vintages (imagery years)
    amberscan diff --model A --model B [--year 2016]      models, on the same imagery

As a table (default, with totals per kind), `--csv` or `--geojson`; the web API's
`/api/changes.{geojson,csv}` lists the same (both call `amberscan.common.changes`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub,
        "diff",
        "tiles whose verdict changed between two vintages or models",
        run,
        examples=[
            "amberscan diff --from 2015 --to 2016",
            "amberscan diff --model CURRENT --model xgb-1a2b3c4d5e6f --csv > changed.csv",
        ],
    )
    p.add_argument("--from", dest="before", metavar="YEAR", help="the earlier vintage")
    p.add_argument("--to", dest="after", metavar="YEAR", help="the later vintage")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="within one model (with --from/--to), or twice: the two models to compare",
    )
    p.add_argument("--year", default="", help="with two models: only this vintage's imagery")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="CSV instead of a table")
    out.add_argument("--geojson", action="store_true", help="a GeoJSON FeatureCollection")


async def _collect(settings: Settings, spec: Any) -> list[dict[str, Any]]:
    from amberscan.common import changes
    from amberscan.common.db import Database

    async with Database(settings.database) as db:
        return [c async for c in changes.diff(db, spec)]


def run(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.common import changes
    from amberscan.errors import AmberscanError

    years = None
    if args.before or args.after:
        years = (args.before or "", args.after or "")
    try:
        spec = changes.comparison(years, args.model, args.year)
    except changes.BadComparison as error:
        raise AmberscanError(str(error)) from None
    found = asyncio.run(_collect(settings, spec))
    if args.geojson:
        document = {
            "type": "FeatureCollection",
            "comparison": spec.describe(),
            "features": [changes.feature(c) for c in found],
        }
        json.dump(document, sys.stdout)
        sys.stdout.write("\n")
    elif args.csv:
        sys.stdout.write(changes.csv_lines(found))
    else:
        print(spec.describe())
        sys.stdout.write(changes.table(found))
    return 0
