"""`amberscan watch add|list|remove`: the watched regions (the service is `amberscan serve watch`)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings

# `amberscan.watch.core.WATCHABLE` (a test checks they agree; the core is not imported here so
# `--help` stays instant).
WATCHABLE = ("geotiff", "stac", "wmts")


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub,
        "watch",
        "regions scanned again whenever their provider has new imagery",
        run,
        description="Regions scanned again whenever their provider has new imagery (the "
        "service that does it is `amberscan serve watch`).",
        examples=[
            "amberscan watch add region.geojson --provider stac "
            "--source https://example.org/catalog.json --every 1d",
            "amberscan watch list",
            "amberscan watch remove 3",
        ],
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = options.action(
        actions,
        "add",
        "watch a region (its first round is due at once)",
        examples=[
            "amberscan watch add region.geojson --provider stac "
            "--source https://example.org/catalog.json --every 1d",
            "amberscan watch add region.geojson --provider geotiff --source s3://imagery/drone/",
        ],
    )
    add.add_argument("region", type=Path, help="a GeoJSON Polygon/MultiPolygon file")
    add.add_argument(
        "--provider",
        required=True,
        choices=list(WATCHABLE),
        help="where new imagery is looked for (the sources below)",
    )
    options.add_imagery_sources(add, vintage=False)
    add.add_argument("--every", default="1d", help="cadence: 1d, 12h, 30m, 1w (default 1d)")
    add.add_argument("--name", default="", help="a label shown by `watch list`")
    lister = options.action(
        actions,
        "list",
        "the watched regions, their last round and counts",
        examples=["amberscan watch list", "amberscan watch list --json"],
    )
    options.add_json(lister, "print the regions as one JSON array")
    remove = options.action(
        actions, "remove", "stop watching a region", examples=["amberscan watch remove 3"]
    )
    remove.add_argument("watch_id", type=int, help="the region's id, as `watch list` shows it")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.common.db import Database
    from amberscan.watch import store
    from amberscan.watch.core import describe_every, parse_every

    async with Database(settings.database) as db:
        if args.action == "add":
            try:
                every_s = parse_every(args.every)
            except ValueError as error:
                raise store.WatchError(str(error)) from None
            watch_id = await store.add_watch(
                db,
                args.region.read_text(),
                args.provider,
                every_s,
                settings=settings,
                sources=args.source,
                collection=args.collection,
                layers=args.layer,
                imagery_date=args.imagery_date,
                name=args.name,
            )
            every = describe_every(every_s)
            print(f"watch {watch_id}: {args.region} from {args.provider} every {every}")
        elif args.action == "list":
            watches = await store.list_watches(db)
            if args.json:
                print(json.dumps(watches))
            for w in [] if args.json else watches:
                source = ", ".join(w["sources"]) or "(configured)"
                print(
                    f"{w['watch_id']:>4}  {w['name'] or '-':<16} {w['provider']:<8} every {w['every']:<5} "
                    f"{w['tiles_enqueued']} tiles in {w['rounds']} rounds, last {w['last_round_at'] or 'never'}"
                    f"{'  error: ' + w['last_error'] if w['last_error'] else ''}  {source}"
                )
        else:
            await store.remove_watch(db, args.watch_id)
            print(f"watch {args.watch_id} removed")
    return 0
