"""Aggregator service: `scores` → `detections`, one per tile once all its scores are in.

At-least-once. Output keyed by tile id; a detection is identified by (tile id, imagery date,
model version) and the sink upserts it, keeping the newest by `detected_at` (stamped here when
the join completes), so a tile re-emitted after a restart overwrites its own row and an older
one never wins. Offsets are committed only up to the first score of the earliest incomplete tile
of each partition, so a restart re-reads what it had not finished; a failed publish (the broker
refusing a batch's detections or dead letters) is handled as a restart of the partition: it is
read again from its last commit with its joins forgotten, so a tile completed or dropped in the
failed batch is joined again from its first score and its output made again. State is bounded
(`AMBERSCAN_AGGREGATOR_MAX_OPEN_TILES`). No tile is dropped silently: one that cannot complete
(missing a score for `AMBERSCAN_AGGREGATOR_STALE_S` of its partition's activity, or pushed out
by the bound) becomes a dead letter naming the tile and scan, produced before the commit passes
its scores, so the sink marks it failed with the reason; drops are counted
(`amberscan_aggregator_dropped_tiles_total`), and late or redelivered scores of a dropped or
finished tile are ignored rather than holding commits back.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from google.protobuf.timestamp_pb2 import Timestamp

from amberscan.aggregator.core import DroppedTile, TileJoin
from amberscan.common import metrics, topics
from amberscan.common.records import Output, decode_message, describer
from amberscan.common.settings import AggregatorSettings
from amberscan.common.stage import Stage, StageConfig
from amberscan.v1 import messages_pb2 as pb

SERVICE = "aggregator"
# Scores per poll: joining one is a dictionary update in memory, so a large poll (about 17
# tiles' superpixels) costs little and keeps polls and commits few.
MAX_RECORDS = 512
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


def dropped_letter(dropped: DroppedTile, origin_topic: str) -> pb.DeadLetter:
    """The dead letter of a dropped tile: the sink marks the tile failed with this reason."""
    failed_at = Timestamp()
    failed_at.GetCurrentTime()
    return pb.DeadLetter(
        reason=dropped.reason,
        error_type="DroppedTile",
        service=SERVICE,
        origin_topic=origin_topic,
        origin_partition=dropped.partition,
        origin_offset=dropped.offset,
        key=dropped.tile_id.encode(),
        tile_id=dropped.tile_id,
        scan_id=dropped.scan_id,
        failed_at=failed_at,
    )


def make_stage(settings: AggregatorSettings) -> Stage:
    join = TileJoin(
        settings.aggregator.min_positive_superpixels,
        settings.aggregator.max_open_tiles,
        settings.aggregator.stale_s,
    )
    origin = topics.topic_name(settings.kafka.topic_prefix, topics.SCORES)

    async def handle(record: ConsumerRecord) -> list[Output]:
        score = decode_score(record)
        added = join.add(score, record.partition, record.offset, time.monotonic())
        outputs = []
        for dropped in added.dropped:
            metrics.DROPPED_TILES.labels(dropped.cause).inc()
            log.warning(
                "dropped a tile that cannot complete; dead-lettered",
                extra={"tile": dropped.tile_id, "scan": dropped.scan_id, "reason": dropped.reason},
            )
            letter = dropped_letter(dropped, origin)
            outputs.append(Output(topics.DEAD_LETTERS, letter.key, letter.SerializeToString()))
        if added.ignored:
            metrics.IGNORED_SCORES.labels(added.ignored).inc()
        metrics.OPEN_TILES.set(len(join.open))
        detection = added.detection
        if detection is not None:
            detection.detected_at.GetCurrentTime()
            outputs.append(
                Output(topics.DETECTIONS, detection.tile_id.encode(), detection.SerializeToString())
            )
        return outputs

    def commit_offset(tp: TopicPartition, next_offset: int) -> int:
        # Called once the outputs of the records before `next_offset` are acknowledged.
        join.acknowledged(tp.partition, next_offset)
        return join.safe_offset(tp.partition, next_offset)

    def forget(partitions: set[TopicPartition]) -> None:
        # Revoked, or rewound to their last commit after a failed publish: read again from there.
        join.drop_partitions({tp.partition for tp in partitions})

    config = StageConfig(
        service=SERVICE,
        source_topic=topics.SCORES,
        describe=describe_score,
        max_records=MAX_RECORDS,
        commit_offset=commit_offset,
        forget=forget,
    )
    stage = Stage(settings, config, handle)
    stage.join = join  # type: ignore[attr-defined]  # exposed for tests and metrics
    return stage


async def run(settings: AggregatorSettings, stop: asyncio.Event) -> None:
    """Run the aggregator until `stop` is set."""
    await make_stage(settings).run(stop)
