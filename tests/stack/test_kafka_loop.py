"""The runtime loop against a real Kafka broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from amberscan.common import topics
from amberscan.common.bus import client_options
from amberscan.common.settings import Settings, environment, replace
from amberscan.common.topic_admin import ensure_topics
from amberscan.v1 import messages_pb2 as pb
from tests.streams import joined, produce, read_all

sys.path.insert(0, str(Path(__file__).parent))
from echo_stage import make_stage  # noqa: E402

pytestmark = pytest.mark.stack


async def committed(settings: Settings, group: str, topic: str) -> int:
    """The sum over partitions of the group's committed offsets on `topic`."""
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        from aiokafka import TopicPartition

        name = topics.topic_name(settings.kafka.topic_prefix, topic)
        parts = consumer.partitions_for_topic(name) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(name) or set()
        total = 0
        for p in parts:
            total += (await consumer.committed(TopicPartition(name, p))) or 0
        return total
    finally:
        await consumer.stop()


async def run_until(stage, condition, timeout: float = 45) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not await condition():
            if task.done():
                task.result()
            await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def tile(tile_id: str) -> tuple[bytes, bytes]:
    return tile_id.encode(), pb.Tile(tile_id=tile_id, scan_id="scan-t").SerializeToString()


async def consume_produce_commit(settings: Settings) -> None:
    """Two tiles through a stage on `settings`' bus: both out, keyed by tile, both committed
    (the topics exist)."""
    await produce(settings, topics.TILES, [tile("0123"), tile("0124")])
    stage = make_stage(settings)
    group = stage.config.group(settings.kafka)

    async def both_committed() -> bool:
        return await committed(settings, group, topics.TILES) == 2

    await run_until(stage, both_committed)
    out = await read_all(settings, topics.DETECTIONS, expect=2)
    assert sorted(pb.Detection.FromString(r.value).tile_id for r in out) == ["0123", "0124"]
    assert {r.key for r in out} == {b"0123", b"0124"}  # keyed by tile
    assert await committed(settings, group, topics.TILES) == 2


async def test_consume_produce_commit(stack_settings: Settings) -> None:
    await ensure_topics(stack_settings.kafka)
    await consume_produce_commit(stack_settings)


async def test_killed_before_commit_is_redelivered(
    stack_settings: Settings, tmp_path: Path
) -> None:
    await ensure_topics(stack_settings.kafka)
    await produce(stack_settings, topics.TILES, [tile("0200")])
    marker = tmp_path / "received"
    env = {
        **os.environ,
        **environment(stack_settings),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).parent / "echo_stage.py"),
            "--hang-marker",
            str(marker),
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            await asyncio.sleep(0.2)
        assert marker.read_text() == "0200", "the first consumer never received the record"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    stage = make_stage(stack_settings)
    group = stage.config.group(stack_settings.kafka)
    assert await committed(stack_settings, group, topics.TILES) == 0  # killed before committing

    async def done() -> bool:
        return await committed(stack_settings, group, topics.TILES) == 1

    # The killed member's session must expire before its partitions move: up to ~45 s.
    await run_until(stage, done, timeout=90)
    out = await read_all(stack_settings, topics.DETECTIONS, expect=1)
    assert [pb.Detection.FromString(r.value).tile_id for r in out] == ["0200"]


async def test_poison_goes_to_dead_letters_and_stream_goes_on(stack_settings: Settings) -> None:
    await ensure_topics(stack_settings.kafka)
    poison_empty = pb.Tile(scan_id="scan-t").SerializeToString()  # parses, but has no tile id
    await produce(
        stack_settings,
        topics.TILES,
        [(b"bad1", b"\xff\xff\xff not protobuf"), (b"bad2", poison_empty), tile("0300")],
    )
    stage = make_stage(stack_settings)
    group = stage.config.group(stack_settings.kafka)

    async def all_committed() -> bool:
        return await committed(stack_settings, group, topics.TILES) == 3

    await run_until(stage, all_committed)
    out = await read_all(stack_settings, topics.DETECTIONS, expect=1)
    assert [pb.Detection.FromString(r.value).tile_id for r in out] == ["0300"]
    letters = [
        pb.DeadLetter.FromString(r.value)
        for r in await read_all(stack_settings, topics.DEAD_LETTERS, expect=2)
    ]
    by_key = {letter.key: letter for letter in letters}
    assert set(by_key) == {b"bad1", b"bad2"}
    assert "not a Tile message" in by_key[b"bad1"].reason
    assert "without tile_id" in by_key[b"bad2"].reason
    for letter in letters:
        assert letter.origin_topic == topics.topic_name(
            stack_settings.kafka.topic_prefix, topics.TILES
        )
        assert letter.service == "echo" and letter.error_type == "PoisonMessage"
        assert letter.origin_offset >= 0
    assert by_key[b"bad1"].value == b"\xff\xff\xff not protobuf"  # original bytes kept for replay
    assert by_key[b"bad1"].tile_id == "bad1"


def echo_process(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **environment(settings),
    }
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "echo_stage.py"), *args], env=env
    )


async def detections_of(settings: Settings, expect: int) -> set[str]:
    out = await read_all(settings, topics.DETECTIONS, expect=expect, timeout=5)
    return {pb.Detection.FromString(r.value).tile_id for r in out}


async def test_a_peer_killed_and_restarted_mid_batch_loses_nothing_and_kills_no_one(
    stack_settings: Settings,
) -> None:
    """Issue 15: a slow stage whose group rebalances while it handles a batch (its peer was
    SIGKILLed and restarted) must drop the revoked partitions' commit and go on, not exit."""
    await ensure_topics(stack_settings.kafka)
    ids = [f"{i:04d}" for i in range(24)]
    await produce(stack_settings, topics.TILES, [tile(t) for t in ids])
    # Slow batches (1 s a record, handled concurrently within a batch of 4) and a short grace,
    # so the revoke always finds a batch in hand and abandons it.
    stage = make_stage(stack_settings, slow_s=1.0, max_records=4, revoke_grace_s=0.2)
    group = stage.config.group(stack_settings.kafka)
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    peer = echo_process(stack_settings, "--slow-s", "1.0")
    try:
        deadline = time.monotonic() + 60
        while len(await detections_of(stack_settings, 1)) < 2 and time.monotonic() < deadline:
            assert not task.done(), task
            await asyncio.sleep(0.5)
        peer.send_signal(signal.SIGKILL)
        peer.wait(10)
        peer = echo_process(stack_settings, "--slow-s", "1.0")  # rejoins: another rebalance

        async def all_committed() -> bool:
            assert not task.done(), f"the stage exited: {task}"
            return await committed(stack_settings, group, topics.TILES) == len(ids)

        deadline = time.monotonic() + 150
        while not await all_committed():
            assert time.monotonic() < deadline, "not every record was committed"
            await asyncio.sleep(1)
        assert not task.done()
    finally:
        peer.send_signal(signal.SIGTERM)
        peer.wait(30)
        stop.set()
        await asyncio.wait_for(task, 60)
    assert await detections_of(stack_settings, len(ids)) == set(ids)  # none lost


async def test_a_commit_refused_after_the_group_moved_on_is_dropped_not_fatal(
    stack_settings: Settings,
) -> None:
    """A handler that starves the event loop past the session timeout is evicted from its
    group; its late commit is refused (CommitFailedError): the stage must rejoin and go on."""
    from amberscan.common import metrics

    await ensure_topics(stack_settings.kafka)
    ids = [f"{i:04d}" for i in range(6)]
    await produce(stack_settings, topics.TILES, [tile(t) for t in ids])
    refused = metrics.COMMITS_REFUSED.labels("echo")._value.get()
    stage = make_stage(stack_settings, block_s=16.0, max_records=1)
    group = stage.config.group(stack_settings.kafka)
    peer = echo_process(stack_settings)  # takes the partitions while the stage is blocked
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    try:
        deadline = time.monotonic() + 120
        while await committed(stack_settings, group, topics.TILES) < len(ids):
            assert not task.done(), f"the stage exited: {task}"
            assert time.monotonic() < deadline, "not every record was committed"
            await asyncio.sleep(1)
        # The blocked stage rejoins its group beside the peer, and is still running.
        while not await joined(stack_settings, ["echo"], members=2):
            assert not task.done(), f"the stage exited: {task}"
            assert time.monotonic() < deadline, "the blocked stage never rejoined"
            await asyncio.sleep(0.5)
        assert not task.done(), task
    finally:
        peer.send_signal(signal.SIGTERM)
        peer.wait(30)
        stop.set()
        await asyncio.wait_for(task, 60)
    assert await detections_of(stack_settings, len(ids)) == set(ids)
    print(f"commits refused: {metrics.COMMITS_REFUSED.labels('echo')._value.get() - refused}")


async def test_batches_in_flight_commit_in_order_and_a_crash_loses_and_repeats_nothing_committed(
    stack_settings: Settings,
) -> None:
    """Three batches in flight, finishing out of order: the committed offset never passes a
    record whose output is not on the bus, and after a SIGKILL the records redelivered are
    exactly the uncommitted ones."""
    settings = replace(stack_settings, kafka={"partitions": 1})
    await ensure_topics(settings.kafka)
    ids = [f"{i:04d}" for i in range(40)]
    await produce(settings, topics.TILES, [tile(t) for t in ids])
    group = make_stage(settings).config.group(settings.kafka)
    proc = echo_process(settings, "--uneven", "--max-records", "2", "--in-flight", "3")
    try:
        deadline = time.monotonic() + 120
        while (done := await committed(settings, group, topics.TILES)) < 12:
            assert proc.poll() is None and time.monotonic() < deadline
            # Commit order: every record before the committed offset has its output out.
            out = await detections_of(settings, done)
            assert set(ids[:done]) <= out, (done, sorted(out))
            await asyncio.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    at_kill = await committed(settings, group, topics.TILES)
    assert 12 <= at_kill < len(ids), at_kill
    stage = make_stage(settings, max_records=8, max_in_flight=3)

    async def all_done() -> bool:
        return await committed(settings, group, topics.TILES) == len(ids)

    await run_until(stage, all_done, timeout=120)
    records = await read_all(settings, topics.DETECTIONS, expect=len(ids), timeout=10)
    counts: dict[str, int] = {}
    for record in records:
        tile_id = pb.Detection.FromString(record.value).tile_id
        counts[tile_id] = counts.get(tile_id, 0) + 1
    assert set(counts) == set(ids)  # nothing lost
    # Nothing committed before the kill is handled again; only the tail may repeat.
    assert all(counts[t] == 1 for t in ids[:at_kill]), {t: counts[t] for t in ids[:at_kill]}
