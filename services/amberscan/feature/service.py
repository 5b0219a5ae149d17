"""Feature service: `superpixels` → `features`, through the model server (TF Serving API).

At-least-once. Output keyed by tile id, one message per (tile id, segment index, backbone
version); a redelivered superpixel yields the same vector again.

A poll's superpixels go to the model server as one Predict call. Each crop is cut here from its
tile (read once from the blob store and kept decoded while its superpixels are in flight), so no
crop makes a PNG round trip, at the crop size the served model's signature states (read from the
server's metadata). Each vector is labelled with the backbone version the server's answer names,
so vectors of a version loaded mid-stream never pass as the old one's; when an answer names a
version other than the one whose crop size was read, or the server rejects a whole batch, the
metadata is read again, and a batch cut at a size the server no longer takes is cut again. When
the server fails on a batch (INVALID_ARGUMENT, UNKNOWN, INTERNAL — an out-of-memory, a crop the
graph rejects) the batch is split in halves until the crop that fails alone is found: only that
superpixel is dead-lettered, the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
from aiokafka.structs import ConsumerRecord
from numpy.typing import NDArray

from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.errors import ModelContractError, PoisonMessage, TransientError
from amberscan.common.kafka import Output, Result, Stage, StageConfig, decode_message, describer
from amberscan.common.settings import Settings
from amberscan.feature.client import FeatureClient, ModelMetadata, ModelServerError
from amberscan.feature.tiles import TileImages
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.crops import crop_superpixel

# How often one batch may find the served crop size changed under it before it is retried later.
SIZE_CHANGES = 3


def decode_superpixel(record: ConsumerRecord) -> pb.Superpixel:
    def problem(m: pb.Superpixel) -> str:
        if not (m.ref.tile_id and m.ref.image_key):
            return "superpixel message without tile_id or image_key"
        box = m.ref.bbox
        if not (box.row0 < box.row1 and box.col0 < box.col1):
            return f"superpixel {m.ref.segment_index} of tile {m.ref.tile_id}: empty bbox {box}"
        return ""

    return decode_message(record, pb.Superpixel, problem)


describe_superpixel = describer(pb.Superpixel, lambda m: (m.ref.tile_id, m.ref.scan_id))


def superpixel_name(ref: pb.SuperpixelRef) -> str:
    return f"superpixel {ref.segment_index} of tile {ref.tile_id} ({ref.image_key})"


def cut_crop(image: NDArray[np.uint8], ref: pb.SuperpixelRef, size: int) -> NDArray[np.uint8]:
    """The superpixel's crop, as the segmenter's bbox names it in the tile it segmented, cut at
    `size` px (the served model's crop size).

    Raises:
        PoisonMessage: the tile is not the size the superpixel was cut from, or the box is off it.
    """
    height, width = image.shape[:2]
    if (ref.image_height, ref.image_width) != (height, width):
        raise PoisonMessage(
            f"{superpixel_name(ref)}: tile is {width}x{height}, the superpixel was cut from "
            f"{ref.image_width}x{ref.image_height}"
        )
    box = ref.bbox
    try:
        return crop_superpixel(image, (box.row0, box.col0, box.row1, box.col1), size)
    except ValueError as error:
        raise PoisonMessage(f"{superpixel_name(ref)}: {error}") from None


async def features_isolating(
    client: FeatureClient, crops: NDArray[np.uint8], names: Sequence[str]
) -> list[tuple[NDArray[np.float32], int] | PoisonMessage]:
    """(vector, backbone version) per crop, in one Predict call when the server takes the batch;
    a batch it fails on is split in halves until each crop it fails on alone is found, which
    becomes a PoisonMessage naming it.

    Raises:
        TransientError: the server did not answer (the whole batch is retried).
    """
    try:
        vectors, version = await client.predict_versioned(crops)
        return [(vector, version) for vector in vectors]
    except (ModelContractError, ModelServerError) as error:
        return await isolating(client, crops, names, error)


async def isolating(
    client: FeatureClient,
    crops: NDArray[np.uint8],
    names: Sequence[str],
    error: ModelContractError | ModelServerError,
) -> list[tuple[NDArray[np.float32], int] | PoisonMessage]:
    """`features_isolating` for a batch the server has already failed on with `error`."""
    if len(crops) == 1:
        return [PoisonMessage(f"{names[0]}: {error}")]
    half = len(crops) // 2
    first = await features_isolating(client, crops[:half], names[:half])
    return first + await features_isolating(client, crops[half:], names[half:])


class ServedModel:
    """The served model's metadata (its crop size above all), read once and read again when an
    answer suggests the server has loaded another version."""

    def __init__(self, client: FeatureClient) -> None:
        self.client = client
        self._metadata: ModelMetadata | None = None

    async def metadata(self) -> ModelMetadata:
        if self._metadata is None:
            self._metadata = await self.client.metadata()
        return self._metadata

    async def crop_size_changed(self) -> bool:
        """Read the metadata again; whether the crop size differs from the one read before."""
        before = self._metadata
        self._metadata = await self.client.metadata()
        return before is None or before.crop_size != self._metadata.crop_size


def make_stage(
    settings: Settings, store: BlobStore, client: FeatureClient, tiles: TileImages | None = None
) -> Stage:
    tiles = tiles or TileImages(store, settings.feature_tile_cache)
    served = ServedModel(client)

    async def handle(records: list[ConsumerRecord]) -> list[Result]:
        results: list[Result | None] = [None] * len(records)
        messages: dict[int, pb.Superpixel] = {}
        for i, record in enumerate(records):
            try:
                messages[i] = decode_superpixel(record)
            except PoisonMessage as error:
                results[i] = error
        keys = sorted({m.ref.image_key for m in messages.values()})
        names = {
            m.ref.image_key: f"tile {m.ref.tile_id} ({m.ref.image_key})" for m in messages.values()
        }
        loaded = await asyncio.gather(
            *(tiles.get(key, names[key]) for key in keys), return_exceptions=True
        )
        images = dict(zip(keys, loaded, strict=True))
        for i, message in list(messages.items()):
            image = images[message.ref.image_key]
            if isinstance(image, BaseException):
                if not isinstance(image, Exception):
                    raise image
                results[i] = image  # poison (missing, corrupt) or transient (retried)
                del messages[i]

        def cut(size: int) -> dict[int, NDArray[np.uint8] | PoisonMessage]:
            out: dict[int, NDArray[np.uint8] | PoisonMessage] = {}
            for i, message in messages.items():
                image = images[message.ref.image_key]
                assert isinstance(image, np.ndarray)
                try:
                    out[i] = cut_crop(image, message.ref, size)
                except PoisonMessage as error:
                    out[i] = error
            return out

        unhandled = TransientError("not handled")
        for _ in range(SIZE_CHANGES + 1):
            served_as = await served.metadata()
            crops = await asyncio.to_thread(cut, served_as.crop_size)
            wanted = [i for i, crop in crops.items() if isinstance(crop, np.ndarray)]
            for i, crop in crops.items():
                if isinstance(crop, PoisonMessage):
                    results[i] = crop
            if not wanted:
                break
            batch = np.stack([crops[i] for i in wanted])  # type: ignore[misc]
            crop_names = [superpixel_name(messages[i].ref) for i in wanted]
            computed: list[tuple[NDArray[np.float32], int] | PoisonMessage]
            try:
                vectors, version = await client.predict_versioned(batch)
            except (ModelContractError, ModelServerError) as error:
                # A whole batch refused: the server may take another crop size since it was read.
                if await served.crop_size_changed():
                    continue
                computed = await isolating(client, batch, crop_names, error)
            else:
                if version != served_as.version and await served.crop_size_changed():
                    continue  # cut at the old version's size: cut again for the new one
                computed = [(vector, version) for vector in vectors]
            for i, got in zip(wanted, computed, strict=True):
                results[i] = got if isinstance(got, PoisonMessage) else [output(messages[i], *got)]
            break
        else:
            unhandled = TransientError(f"the served crop size changed {SIZE_CHANGES + 1} times")
        return [r if r is not None else unhandled for r in results]

    def output(message: pb.Superpixel, vector: NDArray[np.float32], version: int) -> Output:
        ref = message.ref
        backbone = f"{client.model_name}/{version}"
        out_ref = pb.SuperpixelRef()
        out_ref.CopyFrom(ref)
        out_ref.models.backbone = backbone
        features = pb.SuperpixelFeatures(ref=out_ref, vector=vector.tolist(), backbone=backbone)
        return Output(topics.FEATURES, ref.tile_id.encode(), features.SerializeToString())

    config = StageConfig(
        service="feature",
        source_topic=topics.SUPERPIXELS,
        describe=describe_superpixel,
        max_records=settings.feature_batch_size,
        fill_wait_ms=settings.feature_batch_wait_ms,
    )
    return Stage(settings, config, batch_handler=handle)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Run the feature service until `stop` is set (waits for the model server first)."""
    from amberscan.feature.extract import client_for

    store = BlobStore(settings)
    await store.ensure_bucket()
    async with client_for(settings) as client:
        await client.wait_until_serving(settings.model_deadline_s * 5)
        await make_stage(settings, store, client).run(stop)
