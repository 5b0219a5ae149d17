"""`amberscan replay`: re-score every retained feature vector with one classifier version, as a
scan of its own.

The replay gets its own scan id, progress and summary: its detections are new rows keyed by the
replayed model version beside the old ones, and no earlier scan's progress or figures change.
Replay a candidate before promoting it, then `amberscan diff --model CURRENT --model CANDIDATE`
shows what the promotion would change on the map.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub,
        "replay",
        "re-score the retained features with a classifier version, as a scan of its own",
        run,
        examples=[
            "amberscan replay --model xgb-1a2b3c4d5e6f",
            "amberscan diff --model CURRENT --model xgb-1a2b3c4d5e6f   # then what it changes",
        ],
    )
    p.add_argument("--model", default="", help="registry version (default: the current one)")
    p.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds to wait for its detections"
    )
    options.add_json(p, "print the replay's summary as one JSON object")


def replay_scan_id(version: str) -> str:
    import uuid

    return f"replay-{version}-{uuid.uuid4().hex[:8]}"


def run(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan import scanning
    from amberscan.classifier.service import replay
    from amberscan.common import registry
    from amberscan.common.db import Database
    from amberscan.common.logs import configure_logging
    from amberscan.common.stage import stop_on_signals
    from amberscan.common.topic_admin import ensure_topics

    configure_logging("replay", settings.ops.log_level, settings.ops.log_json)

    async def main() -> scanning.ScanSummary:
        await ensure_topics(settings.kafka)
        classifier = await (
            registry.load_version(settings.s3, args.model)
            if args.model
            else registry.load_current(settings.s3)
        )
        scan_id = replay_scan_id(classifier.version)
        async with Database(settings.database) as db:
            # Recorded first with no tiles expected: the count is known once the topic is read.
            await db.execute(
                "INSERT INTO scans (scan_id, tiles_expected) VALUES (%s, 0) ON CONFLICT DO NOTHING",
                scan_id,
            )
            tiles = await replay(settings, classifier, scan_id, stop_on_signals())
            await db.execute(
                "UPDATE scans SET tiles_expected = %s WHERE scan_id = %s", len(tiles), scan_id
            )
            return await scanning.follow(
                db, scan_id, len(tiles), timeout_s=args.timeout, progress=not args.json
            )

    summary = asyncio.run(main())
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        print(
            f"replay {summary.scan_id}: {summary.tiles} tiles re-scored, {summary.flagged} "
            f"flagged, {summary.hectares:.2f} ha, {summary.failed} failed"
        )
        if summary.error:
            print(f"  error: {summary.error}")
    return 0 if summary.complete and not summary.error else 1
