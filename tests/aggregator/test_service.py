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
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from amberscan.aggregator.service import make_stage
from amberscan.common import metrics, topics
from amberscan.common.bus import client_options
from amberscan.common.settings import Settings, replace
from amberscan.common.stage import Stage
from amberscan.common.topic_admin import admin_client, ensure_topics, topic_configs
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
    producer = AIOKafkaProducer(**client_options(settings.kafka), enable_idempotence=True)
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
        **client_options(settings.kafka), group_id=group, enable_auto_commit=False
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
    """Every record on the detections topic (or `topic`) from its start, read as it arrives."""

    def __init__(self, settings: Settings, topic: str = topics.DETECTIONS) -> None:
        self.consumer = AIOKafkaConsumer(
            topics.topic_name(settings.kafka.topic_prefix, topic),
            **client_options(settings.kafka),
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


async def set_max_message_bytes(settings: Settings, topic: str, limit: int) -> None:
    """Set a topic's `max.message.bytes` on the broker (its other settings as created), and wait
    until the broker applies it."""
    name = topics.topic_name(settings.kafka.topic_prefix, topic)
    configs = {**topic_configs(settings.kafka), "max.message.bytes": str(limit)}
    async with admin_client(settings.kafka) as admin:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=configs)])
        deadline = time.monotonic() + 20
        while True:
            [response] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name)]
            )
            values = {entry[0]: entry[1] for entry in response.resources[0][4]}
            if values["max.message.bytes"] == str(limit):
                return
            assert time.monotonic() < deadline, f"{name}: max.message.bytes still {values}"
            await asyncio.sleep(0.1)


async def test_a_failed_publish_loses_no_tile_and_no_dead_letter(stack_settings: Settings) -> None:
    """#26 defect 1: the broker refuses the batch that completes tile A (whose first scores came
    in an earlier batch) and drops tile B (the overflow bound, B's other score lost upstream).
    Once the broker takes records again, A's detection must come out with all its scores and B
    must have its dead letter: neither is left to the scores of the failed batch alone.

    One partition per topic, and tile D's detection published before the refusal: the stage's
    producer has written to the partition the broker then refuses a batch on, as a running
    aggregator has."""
    settings = replace(stack_settings, aggregator={"max_open_tiles": 2}, kafka={"partitions": 1})
    await ensure_topics(settings.kafka, [topics.SCORES, topics.DETECTIONS, topics.DEAD_LETTERS])
    a = scores_for(Tile(38012, 22100, 16), [0.9, 0.8, 0.7])
    b = scores_for(Tile(38013, 22100, 16), [0.9, 0.1])  # b[1] never comes
    c = scores_for(Tile(38014, 22100, 16), [0.2, 0.3])
    d = scores_for(Tile(38015, 22100, 16), [0.4, 0.6])
    a_id, b_id, c_id, d_id = (s[0].ref.tile_id for s in (a, b, c, d))
    await produce_to(settings, 0, [*d, b[0], a[0], a[1]])
    stage = make_stage(settings)
    group = stage.config.group(settings.kafka)
    join = stage.join  # type: ignore[attr-defined]
    a_key = (a_id, SCAN, "m1", "2015-10-05")
    rewinds = metrics.REWINDS.labels("aggregator")
    before = rewinds._value.get()
    detections = Detections(settings)
    letters = Detections(settings, topics.DEAD_LETTERS)
    await detections.consumer.start()
    await letters.consumer.start()
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    try:
        deadline = time.monotonic() + 60

        def out() -> set[str]:
            return {pb.Detection.FromString(r.value).tile_id for r in detections.records}

        async def until(what: str, done: Callable[[], bool]) -> None:
            while not done():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                assert not task.done(), task
                await detections.poll(100)
                await letters.poll(100)

        await until("D out, A and B half joined", lambda: len(join.open) == 2 and d_id in out())
        # The broker now refuses every detection and dead letter: the batch completing A and
        # dropping B fails to publish.
        for topic in (topics.DETECTIONS, topics.DEAD_LETTERS):
            await set_max_message_bytes(settings, topic, 64)
        await produce_to(settings, 0, [c[0], a[2]])  # c[0] pushes B out; a[2] completes A
        await until("the failed publish", lambda: rewinds._value.get() > before)
        for topic in (topics.DETECTIONS, topics.DEAD_LETTERS):
            await set_max_message_bytes(settings, topic, settings.kafka.max_message_bytes)
        await produce_to(settings, 0, [c[1]])

        def dropped() -> set[str]:
            return {pb.DeadLetter.FromString(r.value).tile_id for r in letters.records}

        def a_rejoined_from_a_part() -> bool:
            entry = join.open.get(a_key)
            return entry is not None and set(entry.scores) == {2}

        await until(
            "A and C out and B's dead letter, or A joined again from its last score",
            lambda: (out() == {a_id, c_id, d_id} and b_id in dropped()) or a_rejoined_from_a_part(),
        )
        assert not a_rejoined_from_a_part(), (
            "after the failed publish, tile A was joined again from the failed batch's score "
            f"alone; it can never complete (out: {sorted(out())}, dead letters: {dropped()}, "
            "B's expected)"
        )
        while (await committed(settings, group))[0] != 8:  # nothing held back any more
            assert time.monotonic() < deadline, await committed(settings, group)
            assert not task.done(), task
            await asyncio.sleep(0.2)
        await detections.poll(1000)  # anything produced twice would arrive meanwhile
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await detections.consumer.stop()
        await letters.consumer.stop()
    # At least once: a detection or dead letter the broker took in a batch that failed as a
    # whole (a topic restored before the other) comes again, the same.
    of_a = [
        d
        for d in (pb.Detection.FromString(r.value) for r in detections.records)
        if d.tile_id == a_id
    ]
    assert of_a, "no detection of A"
    for d in of_a:  # all three scores, in order
        assert list(d.scores) == pytest.approx([0.9, 0.8, 0.7])
    [reason] = {
        letter.reason
        for letter in (pb.DeadLetter.FromString(r.value) for r in letters.records)
        if letter.tile_id == b_id
    }
    assert "with 1 of 2 superpixel scores" in reason and "MAX_OPEN_TILES" in reason, reason
