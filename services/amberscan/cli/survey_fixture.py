"""`amberscan survey-fixture`: fill a schema of its own with survey-scale SYNTHETIC detections
(450,000 by default, over the 2018 study area; `amberscan.survey`), for `make bench-map`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings

DEFAULT_SCHEMA = "amberscan_synthetic"  # amberscan.survey.DEFAULT_SCHEMA, without importing it


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub,
        "survey-fixture",
        "fill a schema of its own with survey-scale SYNTHETIC detections (benchmarks)",
        run,
        examples=[
            "amberscan survey-fixture   # 450,000 detections, as make bench-map uses",
            "amberscan survey-fixture --schema survey_small --tiles 10000",
        ],
    )
    p.add_argument(
        "--schema", default=DEFAULT_SCHEMA, help=f"the schema to fill (default: {DEFAULT_SCHEMA})"
    )
    p.add_argument(
        "--tiles", type=int, default=450_000, help="how many detections (default: 450000)"
    )
    options.add_seed(p, default=2018)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.errors import AmberscanError
    from amberscan.survey import fill

    if not 1 <= args.tiles <= 2_000_000:
        raise AmberscanError(f"--tiles {args.tiles}: from 1 to 2000000")
    result = asyncio.run(fill(settings, args.schema, args.tiles, args.seed))
    print(
        f"SYNTHETIC: {result['tiles']} detections ({result['flagged']} flagged, "
        f"{result['hectares']} ha) in schema {result['schema']}, extent {result['extent']}, "
        f"{result['seconds']} s",
        file=sys.stderr,
    )
    print(f"map them: AMBERSCAN_DATABASE_SCHEMA={result['schema']} amberscan serve web")
    return 0
