"""The segmenter stage against the real Kafka and MinIO: a tile in, its superpixels out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from amberscan import keys
from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.bus import client_options
from amberscan.common.settings import Settings, replace
from amberscan.common.topic_admin import ensure_topics
from amberscan.segmenter import service
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.imageio import decode_image
from amberscan.vision.labels import decode_labels
from amberscan.vision.segment import segment
from tests.streams import read_all

pytestmark = pytest.mark.stack


async def produce_to(settings: Settings, topic: str, partition: int, tiles: list[pb.Tile]) -> None:
    """Produce tiles keyed by tile id, in order, to one partition (so their order is defined)."""
    producer = AIOKafkaProducer(**client_options(settings.kafka), enable_idempotence=True)
    await producer.start()
    try:
        for tile in tiles:
            await producer.send_and_wait(
                topics.topic_name(settings.kafka.topic_prefix, topic),
                tile.SerializeToString(),
                key=tile.tile_id.encode(),
                partition=partition,
            )
    finally:
        await producer.stop()


async def committed(settings: Settings, group: str, partition: int) -> int | None:
    """The group's committed offset on one partition of the tiles topic."""
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        name = topics.topic_name(settings.kafka.topic_prefix, topics.TILES)
        return await consumer.committed(TopicPartition(name, partition))
    finally:
        await consumer.stop()


def tile_message(tile_id: str, x: int, image_key: str) -> pb.Tile:
    return pb.Tile(
        tile_id=tile_id,
        scan_id="scan-seg",
        tile=pb.TileCoord(z=16, x=x, y=22100, quadkey=tile_id),
        image_key=image_key,
        tiles_expected=2,
    )


@pytest.mark.parametrize("mode", ["reference", "fast"])
async def test_tile_segmented_and_corrupt_tile_dead_lettered(
    stack_settings: Settings, shared_data: Path, mode: str
) -> None:
    settings = replace(stack_settings, segmenter={"mode": mode})
    await ensure_topics(settings.kafka)
    store = BlobStore(settings.s3)
    await store.ensure_bucket()
    png = (shared_data / "tiles" / "positive1.png").read_bytes()
    good_key = await store.put(png, keys.TILE_IMAGES, "png", "image/png")
    bad_key = await store.put(png[: len(png) // 2], keys.TILE_IMAGES, "png", "image/png")
    bad = tile_message("1203302110", 38012, bad_key)
    good = tile_message("1203302111", 38013, good_key)
    # the corrupt tile first, on the same partition: the good one must still get through
    await produce_to(settings, topics.TILES, 0, [bad, good])

    stop = asyncio.Event()
    task = asyncio.create_task(service.run(settings, stop))
    try:
        out = await read_all(settings, topics.SUPERPIXELS, expect=1, timeout=40)
        assert not task.done(), "the segmenter stopped on its own"
        # every superpixel of a tile is produced by the same batch; wait for all of them
        count = pb.Superpixel.FromString(out[0].value).ref.segment_count
        out = await read_all(settings, topics.SUPERPIXELS, expect=count, timeout=20)
        letters = await read_all(settings, topics.DEAD_LETTERS, expect=1, timeout=20)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    superpixels = [pb.Superpixel.FromString(r.value) for r in out]
    assert {r.key for r in out} == {good.tile_id.encode()}  # keyed by tile id
    assert {s.ref.tile_id for s in superpixels} == {good.tile_id}
    assert len(superpixels) == count > 1
    assert sorted(s.ref.segment_index for s in superpixels) == list(range(count))
    image = decode_image(png, "positive1.png")
    height, width = image.shape[:2]
    expected = segment(image, mode=mode)  # what the detection core makes of the same tile
    assert count == len(expected.superpixels)
    for s in superpixels:
        assert s.ref.segment_count == count
        assert (s.ref.image_height, s.ref.image_width) == (height, width)
        assert s.ref.image_key == good_key and s.segmenter.startswith(f"slic-{mode}")
        box = s.ref.bbox
        assert (box.row0, box.col0, box.row1, box.col1) == (
            expected.superpixels[s.ref.segment_index].bbox
        )
    assert sum(s.ref.area_px for s in superpixels) == height * width
    (labels_key,) = {s.ref.labels_key for s in superpixels}
    labels = decode_labels(await store.get(labels_key))
    np.testing.assert_array_equal(labels, expected.labels)
    assert await store.list("crops/") == []  # no crop is stored any more

    assert len(letters) == 1, [pb.DeadLetter.FromString(r.value).reason for r in letters]
    letter = pb.DeadLetter.FromString(letters[0].value)
    assert letter.tile_id == bad.tile_id and letter.scan_id == bad.scan_id
    assert letters[0].key == bad.tile_id.encode()
    assert letter.service == "segmenter" and letter.error_type == "InvalidImage"
    assert "tile 16/38012/22100" in letter.reason and bad_key in letter.reason
    assert "truncated" in letter.reason
    assert letter.origin_topic == topics.topic_name(settings.kafka.topic_prefix, topics.TILES)
    assert (letter.origin_partition, letter.origin_offset) == (0, 0)
    assert pb.Tile.FromString(letter.value) == bad  # the original message, for a replay

    # both tiles are done with, the dead-lettered one included: nothing is read twice
    group = service.make_stage(settings, store).config.group(settings.kafka)
    assert await committed(settings, group, 0) == 2
