"""Segmenter service: `tiles` → `superpixels`.

At-least-once. Output keyed by tile id, one message per (tile id, segment index); the label image
is a content-addressed blob written before the messages, so a redelivered tile rewrites the same
object and produces the same messages again (downstream de-duplicates by tile id + segment
index). No crops are stored: each message names the tile's blob and the superpixel's box in it.
"""

from __future__ import annotations

import asyncio

from aiokafka.structs import ConsumerRecord

from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.records import Output, decode_message, describer
from amberscan.common.settings import SegmenterSettings
from amberscan.common.stage import Stage, StageConfig
from amberscan.errors import PoisonMessage
from amberscan.segmenter.core import segment_tile, superpixel_messages
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.imageio import decode_image
from amberscan.vision.labels import encode_labels
from amberscan.vision.segment import segmenter_label


def decode_tile(record: ConsumerRecord) -> pb.Tile:
    return decode_message(
        record,
        pb.Tile,
        lambda t: "" if t.tile_id and t.image_key else "tile message without tile_id or image_key",
    )


describe_tile = describer(pb.Tile, lambda t: (t.tile_id, t.scan_id))


def make_stage(settings: SegmenterSettings, store: BlobStore) -> Stage:
    mode = settings.segmenter.mode
    segmenter = segmenter_label(mode)

    async def handle(record: ConsumerRecord) -> list[Output]:
        tile = decode_tile(record)
        data = await store.get(tile.image_key)
        name = f"tile {tile.tile.z}/{tile.tile.x}/{tile.tile.y} ({tile.image_key})"
        image = await asyncio.to_thread(decode_image, data, name)
        segmentation = await asyncio.to_thread(segment_tile, image, mode=mode)
        if not segmentation.superpixels:
            raise PoisonMessage(f"{name}: segmentation found no superpixels")
        labels = await asyncio.to_thread(encode_labels, segmentation.labels)
        labels_key = await store.put(labels, "labels", "png", "image/png")
        messages = superpixel_messages(tile, segmentation, labels_key, segmenter)
        key = tile.tile_id.encode()
        return [Output(topics.SUPERPIXELS, key, m.SerializeToString()) for m in messages]

    config = StageConfig(
        service="segmenter",
        source_topic=topics.TILES,
        describe=describe_tile,
        max_records=settings.segmenter.batch_size,
    )
    return Stage(settings, config, handle)


async def run(settings: SegmenterSettings, stop: asyncio.Event) -> None:
    """Run the segmenter until `stop` is set."""
    store = BlobStore(settings.s3)
    await store.ensure_bucket()
    await make_stage(settings, store).run(stop)
