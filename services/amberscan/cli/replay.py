"""`amberscan replay`: re-score every retained feature vector with one classifier version."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub, "replay", "re-score the retained features with a classifier version, then exit", run
    )
    p.add_argument("--model", default="", help="registry version (default: the current one)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.classifier.service import replay
    from amberscan.common.kafka import ensure_topics, stop_on_signals
    from amberscan.common.logs import configure_logging

    configure_logging("replay", settings.log_level, settings.log_json)

    async def main() -> str:
        await ensure_topics(settings)
        return await replay(settings, args.model, stop_on_signals())

    version = asyncio.run(main())
    print(f"replayed the retained features with classifier {version}")
    return 0
