"""Feature service: `superpixels` → `features`, through the model server (TF Serving API).

At-least-once. Output keyed by tile id, one message per (tile id, segment index, backbone
version); a redelivered superpixel yields the same vector again.

A poll's superpixels go to the model server as one Predict call. Each crop is cut here from its
tile (read once from the blob store and kept decoded while its superpixels are in flight), so no
crop makes a PNG round trip, at the crop size the served model's signature states (read from the
server's metadata). A superpixel whose tile was stamped with a backbone version (the one its
classifier was trained on) is sent to that version (`model_spec.version`); one not yet loaded
is retried later, never dead-lettered. Each vector is labelled with the backbone version the server's answer names,
so vectors of a version loaded mid-stream never pass as the old one's; when an answer names a
version other than the one whose crop size was read, or the server rejects a whole batch, the
metadata is read again, and a batch cut at a size the server no longer takes is cut again. When
the server fails on a batch (INVALID_ARGUMENT, UNKNOWN, INTERNAL — an out-of-memory, a crop the
graph rejects) the batch is split in halves until the crop that fails alone is found: only that
superpixel is dead-lettered, the rest of the batch goes on. A server that fails on every request
(it fails on a crop it answered before: the model client's circuit breaker) is a transient
failure: the whole batch is retried after the breaker's back-off, nothing is dead-lettered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
from aiokafka.structs import ConsumerRecord
from numpy.typing import NDArray

from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.handling import Result
from amberscan.common.model_client import FeatureClient, ModelMetadata, ModelServerError
from amberscan.common.records import Output, decode_message, describer
from amberscan.common.settings import FeatureSettings
from amberscan.common.stage import Stage, StageConfig
from amberscan.errors import ModelContractError, PoisonMessage, TransientError
from amberscan.feature.core import cut_crop, features_message, requested_version, superpixel_name
from amberscan.feature.tiles import TileImages
from amberscan.v1 import messages_pb2 as pb

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


async def features_isolating(
    client: FeatureClient,
    crops: NDArray[np.uint8],
    names: Sequence[str],
    version: int | None = None,
) -> list[tuple[NDArray[np.float32], int] | PoisonMessage]:
    """(vector, backbone version) per crop, in one Predict call when the server takes the batch;
    a batch it fails on is split in halves until each crop it fails on alone is found, which
    becomes a PoisonMessage naming it.

    Raises:
        TransientError: the server did not answer (the whole batch is retried).
    """
    try:
        vectors, answered = await client.predict_versioned(crops, version)
        return [(vector, answered) for vector in vectors]
    except (ModelContractError, ModelServerError) as error:
        return await isolating(client, crops, names, error, version)


async def isolating(
    client: FeatureClient,
    crops: NDArray[np.uint8],
    names: Sequence[str],
    error: ModelContractError | ModelServerError,
    version: int | None = None,
) -> list[tuple[NDArray[np.float32], int] | PoisonMessage]:
    """`features_isolating` for a batch the server has already failed on with `error`."""
    if len(crops) == 1:
        return [PoisonMessage(f"{names[0]}: {error}")]
    half = len(crops) // 2
    first = await features_isolating(client, crops[:half], names[:half], version)
    return first + await features_isolating(client, crops[half:], names[half:], version)


class ServedModel:
    """The served model's metadata per version asked for (its crop size above all), read once
    and read again when an answer suggests the server has loaded another version."""

    def __init__(self, client: FeatureClient) -> None:
        self.client = client
        self._metadata: dict[int | None, ModelMetadata] = {}

    async def metadata(self, version: int | None = None) -> ModelMetadata:
        if version not in self._metadata:
            self._metadata[version] = await self.client.metadata(version)
        return self._metadata[version]

    async def crop_size_changed(self, version: int | None = None) -> bool:
        """Read the metadata again; whether the crop size differs from the one read before."""
        before = self._metadata.get(version)
        self._metadata[version] = await self.client.metadata(version)
        return before is None or before.crop_size != self._metadata[version].crop_size


def make_stage(
    settings: FeatureSettings,
    store: BlobStore,
    client: FeatureClient,
    tiles: TileImages | None = None,
) -> Stage:
    tiles = tiles or TileImages(store, settings.feature.tile_cache)
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
        by_version: dict[int | None, dict[int, pb.Superpixel]] = {}
        for i, message in messages.items():
            by_version.setdefault(requested_version(message.ref, client.model_name), {})[i] = (
                message
            )
        for version, group in by_version.items():
            await compute(group, version, images, results)
        return [r if r is not None else TransientError("not handled") for r in results]

    async def compute(
        messages: dict[int, pb.Superpixel],
        version: int | None,
        images: dict[str, NDArray[np.uint8] | BaseException],
        results: list[Result | None],
    ) -> None:
        """The features of `messages` from backbone `version` (None: the newest), into
        `results`."""

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

        for _ in range(SIZE_CHANGES + 1):
            try:
                served_as = await served.metadata(version)
            except ModelContractError as error:
                if version is None:
                    raise
                # The version the tile's classifier needs is not (yet) loaded: the records come
                # back later rather than fail (a rollout loads it before it is promoted).
                for i in messages:
                    results[i] = TransientError(
                        f"{superpixel_name(messages[i].ref)}: backbone version {version} is "
                        f"not served: {error}"
                    )
                return
            crops = await asyncio.to_thread(cut, served_as.crop_size)
            wanted = [i for i, crop in crops.items() if isinstance(crop, np.ndarray)]
            for i, crop in crops.items():
                if isinstance(crop, PoisonMessage):
                    results[i] = crop
            if not wanted:
                return
            batch = np.stack([crops[i] for i in wanted])  # type: ignore[misc]
            crop_names = [superpixel_name(messages[i].ref) for i in wanted]
            computed: list[tuple[NDArray[np.float32], int] | PoisonMessage]
            try:
                vectors, answered = await client.predict_versioned(batch, version)
            except (ModelContractError, ModelServerError) as error:
                # A whole batch refused: the server may take another crop size since it was read.
                if await served.crop_size_changed(version):
                    continue
                computed = await isolating(client, batch, crop_names, error, version)
            else:
                if answered != served_as.version and await served.crop_size_changed(version):
                    continue  # cut at the old version's size: cut again for the new one
                computed = [(vector, answered) for vector in vectors]
            for i, got in zip(wanted, computed, strict=True):
                results[i] = got if isinstance(got, PoisonMessage) else [output(messages[i], *got)]
            return
        for i in messages:
            if results[i] is None:
                results[i] = TransientError(
                    f"the served crop size changed {SIZE_CHANGES + 1} times"
                )

    def output(message: pb.Superpixel, vector: NDArray[np.float32], version: int) -> Output:
        features = features_message(message.ref, vector, f"{client.model_name}/{version}")
        return Output(topics.FEATURES, message.ref.tile_id.encode(), features.SerializeToString())

    config = StageConfig(
        service="feature",
        source_topic=topics.SUPERPIXELS,
        describe=describe_superpixel,
        max_records=settings.feature.batch_size,
        fill_wait_ms=settings.feature.batch_wait_ms,
    )
    return Stage(settings, config, batch_handler=handle)


async def run(settings: FeatureSettings, stop: asyncio.Event) -> None:
    """Run the feature service until `stop` is set (waits for the model server first)."""
    from amberscan.common.served_features import client_for

    store = BlobStore(settings.s3)
    await store.ensure_bucket()
    async with client_for(settings) as client:
        await client.wait_until_serving(settings.model_server.deadline_s * 5)
        await make_stage(settings, store, client).run(stop)
