"""The aggregator stage against a real Kafka broker: a restart finishes what it had not.

Scores are keyed by tile id, so all scores of one tile share a partition, while several tiles
may share one. The aggregator commits a partition only up to the first score of its earliest
incomplete tile: stopped with tile B half in, a fresh instance of the same group re-reads B's
scores from the first one and completes B; tiles whose scores all came before B's first (A on
the same partition) or on another partition (C) are committed and not produced again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from amberscan.aggregator.service import make_stage
from amberscan.common import topics
from amberscan.common.settings import Settings
from amberscan.common.stage import Stage
from amberscan.common.topic_admin import ensure_topics
from amberscan.geo.tiles import Tile
from amberscan.v1 import messages_pb2 as pb
from tests.aggregator.test_core import scores_for as core_scores_for

pytestmark = pytest.mark.stack

SCAN = "scan-agg"


def scores_for(tile: Tile, values: list[float]) -> list[pb.SuperpixelScore]:
    """A 64×64 tile split into len(values) vertical stripes, one scored superpixel each."""
    return core_scores_for(values, scan=SCAN, tile=tile)


async def produce_to(
    settings: Settings, partition: int, scores: list[pb.SuperpixelScore]
) -> list[int]:
    """Produce scores keyed by tile id to one partition, in order; their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        offsets = []
        for score in scores:
            meta = await producer.send_and_wait(
                topics.topic_name(settings.kafka.topic_prefix, topics.SCORES),
                score.SerializeToString(),
                key=score.ref.tile_id.encode(),
                partition=partition,
            )
            offsets.append(meta.offset)
        return offsets
    finally:
        await producer.stop()


async def committed(settings: Settings, group: str) -> dict[int, int | None]:
    """The group's committed offset on each partition of the scores topic."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        name = topics.topic_name(settings.kafka.topic_prefix, topics.SCORES)
        return {
            p: await consumer.committed(TopicPartition(name, p))
            for p in range(settings.kafka.partitions)
        }
    finally:
        await consumer.stop()


class Detections:
    """Every record on the detections topic from its start, read as it arrives."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = AIOKafkaConsumer(
            topics.topic_name(settings.kafka.topic_prefix, topics.DETECTIONS),
            bootstrap_servers=settings.kafka.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        self.records: list = []

    def tile_ids(self) -> list[str]:
        return sorted(pb.Detection.FromString(r.value).tile_id for r in self.records)

    async def poll(self, ms: int = 300) -> None:
        batch = await self.consumer.getmany(timeout_ms=ms)
        self.records += [r for part in batch.values() for r in part]


async def run_until(
    stage: Stage, detections: Detections, done: Callable[[], bool], timeout: float = 40
) -> None:
    """Run `stage` until `done()` holds, then stop it the way SIGTERM does."""
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    deadline = time.monotonic() + timeout
    try:
        while not done():
            assert time.monotonic() < deadline, f"timed out; detections {detections.tile_ids()}"
            if task.done():
                task.result()
                pytest.fail("the aggregator stopped on its own")
            await detections.poll()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_restart_completes_an_open_tile_once(stack_settings: Settings) -> None:
    settings = stack_settings
    await ensure_topics(settings.kafka, [topics.SCORES, topics.DETECTIONS, topics.DEAD_LETTERS])
    a = scores_for(Tile(38012, 22100, 16), [0.9, 0.1, 0.8])
    b = scores_for(Tile(38013, 22100, 16), [0.2, 0.9, 0.7, 0.6])
    c = scores_for(Tile(38014, 22100, 16), [0.1, 0.3])
    a_id, b_id, c_id = (s[0].ref.tile_id for s in (a, b, c))
    # partition 0: all of A, then B's segments 0 and 2; partition 1: all of C
    offsets = await produce_to(settings, 0, [*a, b[0], b[2]])
    b_first = offsets[len(a)]
    assert b_first == 3
    await produce_to(settings, 1, c)

    detections = Detections(settings)
    await detections.consumer.start()
    try:
        first = make_stage(settings)
        group = first.config.group(settings.kafka)
        b_key = (b_id, SCAN, "m1", "2015-10-05")

        def a_and_c_out_b_half_in() -> bool:
            open_b = first.join.open.get(b_key)  # type: ignore[attr-defined]
            return (
                set(detections.tile_ids()) == {a_id, c_id}
                and open_b is not None
                and (set(open_b.scores) == {0, 2})
            )

        await run_until(first, detections, a_and_c_out_b_half_in)
        assert await committed(settings, group) == {0: b_first, 1: len(c)}, (
            "the commit passed the first score of the open tile B, or held back a finished one"
        )
        await detections.poll(1000)
        assert detections.tile_ids() == sorted([a_id, c_id])  # B is not out, half-joined

        await produce_to(settings, 0, [b[1], b[3]])
        second = make_stage(settings)  # a fresh instance of the same group: no state
        assert second.config.group(settings.kafka) == group
        await run_until(second, detections, lambda: b_id in detections.tile_ids())
        assert await committed(settings, group) == {0: len(a) + len(b), 1: len(c)}
        await detections.poll(1500)  # anything produced twice would arrive meanwhile
    finally:
        await detections.consumer.stop()

    # A's scores all precede B's first: committed, never re-read, so never produced again
    assert detections.tile_ids() == sorted([a_id, b_id, c_id])
    assert {r.key for r in detections.records} == {t.encode() for t in (a_id, b_id, c_id)}
    (detection_b,) = [
        d
        for d in (pb.Detection.FromString(r.value) for r in detections.records)
        if d.tile_id == b_id
    ]
    assert detection_b.segment_count == 4 and detection_b.scan_id == SCAN
    assert list(detection_b.scores) == pytest.approx([0.2, 0.9, 0.7, 0.6])  # all four, in order
    assert detection_b.positives == 3
    assert detection_b.flagged == (3 > settings.aggregator.min_positive_superpixels)
    assert detection_b.hectares > 0 and detection_b.positives_geojson
