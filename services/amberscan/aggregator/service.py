"""Aggregator service: `scores` → `detections`, one per tile once all its scores are in.

At-least-once. Output keyed by tile id; a detection is identified by (tile id, imagery date,
model version) and the sink upserts it, so a tile re-emitted after a restart overwrites its own
row. Offsets are committed only up to the first score of the earliest incomplete tile of each
partition, so a restart re-reads what it had not finished. State is bounded
(`AMBERSCAN_AGGREGATOR_MAX_OPEN_TILES`); a tile missing a score for longer than
`AMBERSCAN_AGGREGATOR_STALE_S` (its superpixel was dead-lettered upstream) is dropped.
"""

from __future__ import annotations

import logging
import time

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from amberscan.aggregator.core import TileJoin
from amberscan.common import topics
from amberscan.common.kafka import Output, Stage, StageConfig, decode_message, describer
from amberscan.common.settings import Settings
from amberscan.v1 import messages_pb2 as pb

log = logging.getLogger(__name__)


def decode_score(record: ConsumerRecord) -> pb.SuperpixelScore:
    def problem(message: pb.SuperpixelScore) -> str:
        ref = message.ref
        if not ref.tile_id or ref.segment_count == 0 or ref.segment_index >= ref.segment_count:
            return (
                f"score without tile_id or with segment {ref.segment_index} of {ref.segment_count}"
            )
        return ""

    return decode_message(record, pb.SuperpixelScore, problem)


describe_score = describer(pb.SuperpixelScore, lambda m: (m.ref.tile_id, m.ref.scan_id))


def make_stage(settings: Settings) -> Stage:
    join = TileJoin(
        settings.min_positive_superpixels,
        settings.aggregator_max_open_tiles,
        settings.aggregator_stale_s,
    )

    async def handle(record: ConsumerRecord) -> list[Output]:
        score = decode_score(record)
        now = time.monotonic()
        for key in join.evict_stale(now):
            log.warning(
                "dropped a tile still missing scores", extra={"tile": key[0], "scan": key[1]}
            )
        detection = join.add(score, record.partition, record.offset, now)
        if detection is None:
            return []
        return [
            Output(topics.DETECTIONS, detection.tile_id.encode(), detection.SerializeToString())
        ]

    def commit_offset(tp: TopicPartition, next_offset: int) -> int:
        return join.safe_offset(tp.partition, next_offset)

    def on_revoked(revoked: set[TopicPartition]) -> None:
        join.drop_partitions({tp.partition for tp in revoked})

    config = StageConfig(
        service="aggregator",
        source_topic=topics.SCORES,
        describe=describe_score,
        max_records=512,
        commit_offset=commit_offset,
        on_revoked=on_revoked,
    )
    stage = Stage(settings, config, handle)
    stage.join = join  # type: ignore[attr-defined]  # exposed for tests and metrics
    return stage


async def run(settings: Settings, stop) -> None:  # type: ignore[no-untyped-def]
    """Run the aggregator until `stop` is set."""
    await make_stage(settings).run(stop)
