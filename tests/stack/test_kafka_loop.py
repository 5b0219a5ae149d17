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
from amberscan.common.kafka import ensure_topics
from amberscan.common.settings import Settings
from amberscan.v1 import messages_pb2 as pb
from tests.streams import produce, read_all

sys.path.insert(0, str(Path(__file__).parent))
from echo_stage import make_stage  # noqa: E402

pytestmark = pytest.mark.stack


async def committed(settings: Settings, group: str, topic: str) -> int:
    """The sum over partitions of the group's committed offsets on `topic`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        from aiokafka import TopicPartition

        name = topics.topic_name(settings.topic_prefix, topic)
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


async def test_consume_produce_commit(stack_settings: Settings) -> None:
    await ensure_topics(stack_settings)
    await produce(stack_settings, topics.TILES, [tile("0123"), tile("0124")])
    stage = make_stage(stack_settings)
    group = stage.config.group(stack_settings)

    async def both_committed() -> bool:
        return await committed(stack_settings, group, topics.TILES) == 2

    await run_until(stage, both_committed)
    out = await read_all(stack_settings, topics.DETECTIONS, expect=2)
    assert sorted(pb.Detection.FromString(r.value).tile_id for r in out) == ["0123", "0124"]
    assert {r.key for r in out} == {b"0123", b"0124"}  # keyed by tile
    assert await committed(stack_settings, group, topics.TILES) == 2


async def test_killed_before_commit_is_redelivered(
    stack_settings: Settings, tmp_path: Path
) -> None:
    await ensure_topics(stack_settings)
    await produce(stack_settings, topics.TILES, [tile("0200")])
    marker = tmp_path / "received"
    env = {
        **os.environ,
        **{f"AMBERSCAN_{k.upper()}": str(v) for k, v in stack_settings.model_dump().items()},
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
    group = stage.config.group(stack_settings)
    assert await committed(stack_settings, group, topics.TILES) == 0  # killed before committing

    async def done() -> bool:
        return await committed(stack_settings, group, topics.TILES) == 1

    # The killed member's session must expire before its partitions move: up to ~45 s.
    await run_until(stage, done, timeout=90)
    out = await read_all(stack_settings, topics.DETECTIONS, expect=1)
    assert [pb.Detection.FromString(r.value).tile_id for r in out] == ["0200"]


async def test_poison_goes_to_dead_letters_and_stream_goes_on(stack_settings: Settings) -> None:
    await ensure_topics(stack_settings)
    poison_empty = pb.Tile(scan_id="scan-t").SerializeToString()  # parses, but has no tile id
    await produce(
        stack_settings,
        topics.TILES,
        [(b"bad1", b"\xff\xff\xff not protobuf"), (b"bad2", poison_empty), tile("0300")],
    )
    stage = make_stage(stack_settings)
    group = stage.config.group(stack_settings)

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
        assert letter.origin_topic == topics.topic_name(stack_settings.topic_prefix, topics.TILES)
        assert letter.service == "echo" and letter.error_type == "PoisonMessage"
        assert letter.origin_offset >= 0
    assert by_key[b"bad1"].value == b"\xff\xff\xff not protobuf"  # original bytes kept for replay
    assert by_key[b"bad1"].tile_id == "bad1"
