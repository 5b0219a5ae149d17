"""`amberscan topics`: create amberscan's Kafka topics (idempotent)."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings


def add_parser(sub: options.Subparsers) -> None:
    options.command(
        sub,
        "topics",
        "create amberscan's Kafka topics (idempotent)",
        run,
        examples=["amberscan topics", "AMBERSCAN_TOPIC_PREFIX=dev. amberscan topics"],
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.common.topic_admin import ensure_topics

    asyncio.run(ensure_topics(settings.kafka))
    print(f"topics ready on {settings.kafka.bootstrap} (prefix {settings.kafka.topic_prefix!r})")
    return 0
