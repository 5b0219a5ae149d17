"""Faults of the Kafka loop (common/stage.py) against the real broker (#10, defects 2 and 3).

Written by the chaos engineer for the integrator's loop: a transient failure that outlasts the
retries (a model server down for longer than they last) must neither dead-letter the records nor
hold the group's rebalance (a peer joining gets its partitions within the revoke grace), and the
records must all come through once the failure passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from amberscan.common import metrics, topics
from amberscan.common.records import Failure, Output
from amberscan.common.settings import Settings, replace
from amberscan.common.stage import Stage, StageConfig
from amberscan.common.topic_admin import ensure_topics
from amberscan.errors import TransientError
from amberscan.v1 import messages_pb2 as pb
from tests.stack.test_kafka_loop import committed, detections_of, tile
from tests.streams import produce, read_all

pytestmark = pytest.mark.stack


def flaky_stage(settings: Settings, down: asyncio.Event, service: str = "flaky") -> Stage:
    """Tiles → detections; every record fails transiently while `down` is set."""

    async def handle(record: ConsumerRecord) -> list[Output]:
        if down.is_set():
            raise TransientError("model server: connection refused")
        message = pb.Tile.FromString(record.value)
        detection = pb.Detection(tile_id=message.tile_id, scan_id=message.scan_id)
        return [Output(topics.DETECTIONS, record.key, detection.SerializeToString())]

    config = StageConfig(service=service, source_topic=topics.TILES, max_records=4)
    return Stage(settings, config, handle)


async def test_a_long_transient_outage_holds_no_rebalance_and_loses_nothing(
    stack_settings: Settings,
) -> None:
    settings = replace(stack_settings, retry={"max_retries": 2, "backoff_s": 0.2})
    await ensure_topics(settings.kafka)
    ids = [f"{i:04d}" for i in range(12)]
    await produce(settings, topics.TILES, [tile(t) for t in ids])
    down = asyncio.Event()
    down.set()  # the model server is down from the start, longer than the retries last
    first, second = flaky_stage(settings, down), flaky_stage(settings, down)
    rewinds = metrics.REWINDS.labels("flaky")
    before = rewinds._value.get()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(first.run(stop))]
    try:
        # Past the retries: failing records' partitions are rewound and paused (as many rewinds
        # as there are partitions).
        deadline = time.monotonic() + 60
        while rewinds._value.get() - before < settings.kafka.partitions:
            assert time.monotonic() < deadline, "the partitions were not rewound"
            assert not tasks[0].done(), tasks[0]
            await asyncio.sleep(0.2)
        assert not tasks[0].done(), tasks[0]
        joined = time.monotonic()
        tasks.append(asyncio.create_task(second.run(stop)))
        while not (second.consumer and second.consumer.assignment()):
            assert time.monotonic() - joined < 30, "the rebalance waited on the failing records"
            assert not any(t.done() for t in tasks), tasks
            await asyncio.sleep(0.2)
        print(f"a peer got its partitions {time.monotonic() - joined:.1f}s after joining")
        down.clear()  # the server is back
        group = first.config.group(settings.kafka)
        deadline = time.monotonic() + 90
        while await committed(settings, group, topics.TILES) < len(ids):
            assert time.monotonic() < deadline, "not every record was committed"
            assert not any(t.done() for t in tasks), tasks
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    assert await detections_of(settings, len(ids)) == set(ids)  # none lost
    assert await read_all(settings, topics.DEAD_LETTERS, expect=1, timeout=3) == []  # none failed


async def test_a_rewind_during_the_fill_window_commits_nothing_past_it(
    stack_settings: Settings,
) -> None:
    """#26 defect 4: a poll that keeps polling to fill its batch (the feature stage's
    `fill_wait_ms`) must not stamp records it took before a rewind with the epoch after it: they
    would be committed past the rewound records, which a crash then loses."""
    settings = replace(stack_settings, kafka={"partitions": 1}, retry={"max_retries": 0})
    await ensure_topics(settings.kafka)
    ids = ["r0", "r1", "r2"]
    await produce(settings, topics.TILES, [tile(t) for t in ids])
    tp = TopicPartition(topics.topic_name(settings.kafka.topic_prefix, topics.TILES), 0)
    down = asyncio.Event()
    down.set()  # r0's model server is down: its partition is rewound to it and paused
    pause_s = 5.0  # asked of the rewind (Retry-After); longer than the fill window below
    tried: list[int] = []
    stage: Stage

    async def handle(record: ConsumerRecord) -> list[Output]:
        if record.offset == 0 and down.is_set():
            tried.append(0)
            # The first try fails once the next poll has taken r2 and is filling its batch.
            while len(tried) == 1 and stage.consumer and await stage.consumer.position(tp) < 3:
                await asyncio.sleep(0.01)
            raise TransientError("model server: connection refused", retry_after_s=pause_s)
        message = pb.Tile.FromString(record.value)
        detection = pb.Detection(tile_id=message.tile_id, scan_id=message.scan_id)
        return [Output(topics.DETECTIONS, record.key, detection.SerializeToString())]

    def make(**config: Any) -> Stage:
        return Stage(
            settings,
            StageConfig(
                service="fill",
                source_topic=topics.TILES,
                max_records=2,  # r0 and r1; then r2 alone, and the poll waits to fill up
                fill_wait_ms=1000,
                **config,
            ),
            handle,
        )

    stage = make()
    rewinds = metrics.REWINDS.labels("fill")
    before = rewinds._value.get()
    task = asyncio.create_task(stage.run(asyncio.Event()))
    try:
        # Two rewinds to r0: the second is finished after the batch of r2 (batches finish in
        # poll order), so by then that batch was committed, or not, for good.
        deadline = time.monotonic() + 60
        while rewinds._value.get() - before < 2:
            assert time.monotonic() < deadline, f"r0 was not rewound twice (tries {tried})"
            assert not task.done(), task
            await asyncio.sleep(0.1)
    finally:
        task.cancel()  # a crash: nothing more is committed
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
    group = stage.config.group(settings.kafka)
    at_crash = await committed(settings, group, topics.TILES)
    down.clear()  # the model server is back; a new copy of the stage reads from the commit
    await make(until_caught_up=True).run(asyncio.Event())
    out = await read_all(settings, topics.DETECTIONS, expect=len(ids))
    produced = {pb.Detection.FromString(r.value).tile_id for r in out}
    assert produced == set(ids), (
        f"lost {sorted(set(ids) - produced)}: the group had committed offset {at_crash} while "
        "r0 (offset 0) was still failing"
    )
    assert at_crash == 0


async def test_a_record_failing_transiently_forever_ends_as_a_dead_letter(
    stack_settings: Settings,
) -> None:
    """#26 defect 3: a record whose handler fails transiently for ever (a provider answering 503
    for good) is rewound and paused without end, and every later record of its partition waits
    behind it. Past `AMBERSCAN_MAX_RECORD_ATTEMPTS` it must become a dead letter naming its tile,
    its attempts and its last error, and the records after it must go on."""
    settings = replace(
        stack_settings,
        kafka={"partitions": 1},
        # Rounds of two tries (a try and a retry), the partition rewound between them: three.
        retry={"max_retries": 1, "backoff_s": 0.05, "max_record_attempts": 6},
    )
    await ensure_topics(settings.kafka)
    ids = ["ok-before", "stuck", "ok-after"]
    await produce(settings, topics.TILES, [tile(t) for t in ids])
    tries: list[str] = []

    async def handle(record: ConsumerRecord) -> list[Output]:
        message = pb.Tile.FromString(record.value)
        if message.tile_id == "stuck":
            tries.append(message.tile_id)
            raise TransientError("provider: HTTP 503 Service Unavailable")
        detection = pb.Detection(tile_id=message.tile_id, scan_id=message.scan_id)
        return [Output(topics.DETECTIONS, record.key, detection.SerializeToString())]

    def describe(record: ConsumerRecord) -> Failure:
        message = pb.Tile.FromString(record.value)
        return Failure(tile_id=message.tile_id, scan_id=message.scan_id)

    config = StageConfig(service="forever", source_topic=topics.TILES, describe=describe)
    stage = Stage(settings, config, handle)
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    try:
        letters = await read_all(settings, topics.DEAD_LETTERS, expect=1, timeout=45)
        out = await read_all(settings, topics.DETECTIONS, expect=2, timeout=5)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    produced = sorted(pb.Detection.FromString(r.value).tile_id for r in out)
    assert letters, (
        f"no dead letter after {len(tries)} tries of the stuck record (bound: 6); "
        f"the records after it are blocked: produced {produced}"
    )
    letter = pb.DeadLetter.FromString(letters[0].value)
    assert (letter.tile_id, letter.scan_id) == ("stuck", "scan-t")
    assert "6 attempts" in letter.reason and "HTTP 503" in letter.reason, letter.reason
    assert len(tries) == 6
    assert produced == ["ok-after", "ok-before"]
    assert len(letters) == 1
