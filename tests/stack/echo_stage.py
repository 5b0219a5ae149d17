"""A minimal stage over the real runtime loop, used by the Kafka tests (also as a subprocess).

It reads tiles and writes one detection per tile. With `--hang-marker FILE` it writes FILE when
it receives its first record and then blocks, so a test can SIGKILL it before it commits; with
`--slow-s S` each record takes S seconds (a busy model server, a slow CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from aiokafka.structs import ConsumerRecord

from amberscan.common import topics
from amberscan.common.records import Failure, Output
from amberscan.common.settings import Settings
from amberscan.common.stage import Stage, StageConfig, stop_on_signals
from amberscan.errors import PoisonMessage
from amberscan.v1 import messages_pb2 as pb


def decode_tile(record: ConsumerRecord) -> pb.Tile:
    try:
        tile = pb.Tile.FromString(record.value)
    except Exception as error:
        raise PoisonMessage(
            f"{record.topic}/{record.partition}@{record.offset}: not a Tile message ({error})"
        ) from None
    if not tile.tile_id:
        raise PoisonMessage(
            f"{record.topic}/{record.partition}@{record.offset}: tile message without tile_id"
        )
    return tile


def make_stage(
    settings: Settings,
    hang_marker: Path | None = None,
    *,
    slow_s: float = 0.0,
    block_s: float = 0.0,
    uneven: bool = False,
    **config: object,
) -> Stage:
    """`block_s`: the first record blocks the whole event loop that long (no heartbeats);
    `uneven`: record n takes (7n mod 5) · 0.2 s, so later batches often finish first."""
    blocked = False

    async def handle(record: ConsumerRecord) -> list[Output]:
        nonlocal blocked
        tile = decode_tile(record)
        if hang_marker is not None:
            hang_marker.write_text(tile.tile_id)
            await asyncio.Event().wait()  # never set: killed here, before any commit
        if block_s and not blocked:
            blocked = True
            time.sleep(block_s)  # on purpose: a handler that starves the loop
        if slow_s:
            await asyncio.sleep(slow_s)  # on purpose: a slow record (a busy model server)
        if uneven:
            await asyncio.sleep((record.offset * 7 % 5) * 0.2)  # on purpose: out of order
        detection = pb.Detection(tile_id=tile.tile_id, scan_id=tile.scan_id)
        return [Output(topics.DETECTIONS, tile.tile_id.encode(), detection.SerializeToString())]

    config = StageConfig(
        service="echo",
        source_topic=topics.TILES,
        describe=lambda record: Failure(tile_id=(record.key or b"").decode(errors="replace")),
        **config,  # type: ignore[arg-type]
    )
    return Stage(settings, config, handle)


async def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hang-marker", type=Path)
    parser.add_argument("--slow-s", type=float, default=0.0)
    parser.add_argument(
        "--uneven", action="store_true", help="records take 0-0.8 s, so batches finish out of order"
    )
    parser.add_argument("--max-records", type=int, default=64)
    parser.add_argument("--in-flight", type=int, default=2)
    args = parser.parse_args()
    stop = stop_on_signals()
    stage = make_stage(
        Settings(),
        args.hang_marker,
        slow_s=args.slow_s,
        uneven=args.uneven,
        max_records=args.max_records,
        max_in_flight=args.in_flight,
    )
    await stage.run(stop)


if __name__ == "__main__":
    asyncio.run(_main())
