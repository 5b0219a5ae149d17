"""Feature service: `superpixels` → `features`, through the model server (TF Serving API).

At-least-once. Output keyed by tile id, one message per (tile id, segment index, backbone);
a redelivered superpixel yields the same vector again. Records of a poll are handled
concurrently, so the client's batcher packs crops of many tiles into one Predict call.
"""

from __future__ import annotations

import asyncio

from aiokafka.structs import ConsumerRecord

from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.errors import ModelContractError, PoisonMessage
from amberscan.common.kafka import Output, Stage, StageConfig, decode_message, describer
from amberscan.common.settings import Settings
from amberscan.feature.client import FeatureClient
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.imageio import decode_image

CROP_SIZE = 224


def decode_superpixel(record: ConsumerRecord) -> pb.Superpixel:
    return decode_message(
        record,
        pb.Superpixel,
        lambda m: (
            "" if m.ref.tile_id and m.crop_key else "superpixel message without tile_id or crop_key"
        ),
    )


describe_superpixel = describer(pb.Superpixel, lambda m: (m.ref.tile_id, m.ref.scan_id))


def make_stage(settings: Settings, store: BlobStore, client: FeatureClient, backbone: str) -> Stage:
    async def handle(record: ConsumerRecord) -> list[Output]:
        message = decode_superpixel(record)
        ref = message.ref
        name = f"superpixel {ref.segment_index} of tile {ref.tile_id} ({message.crop_key})"
        crop = await asyncio.to_thread(
            decode_image, await store.get(message.crop_key), name, min_side=1
        )
        if crop.shape != (CROP_SIZE, CROP_SIZE, 3):
            raise PoisonMessage(
                f"{name}: crop is {crop.shape}, expected ({CROP_SIZE}, {CROP_SIZE}, 3)"
            )
        try:
            vector = await client.features(crop)
        except ModelContractError as error:
            raise PoisonMessage(f"{name}: {error}") from None
        out_ref = pb.SuperpixelRef()
        out_ref.CopyFrom(ref)
        out_ref.models.backbone = backbone
        features = pb.SuperpixelFeatures(ref=out_ref, vector=vector.tolist(), backbone=backbone)
        return [Output(topics.FEATURES, ref.tile_id.encode(), features.SerializeToString())]

    config = StageConfig(
        service="feature",
        source_topic=topics.SUPERPIXELS,
        describe=describe_superpixel,
        max_records=max(settings.feature_batch_size * 2, 16),
    )
    return Stage(settings, config, handle)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Run the feature service until `stop` is set (waits for the model server first)."""
    from amberscan.feature.extract import client_for, served_backbone

    store = BlobStore(settings)
    await store.ensure_bucket()
    async with client_for(settings) as client:
        backbone = await served_backbone(client)
        await make_stage(settings, store, client, backbone.label).run(stop)
