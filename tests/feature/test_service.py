"""The feature stage against the real Kafka, MinIO and a real model server: it cuts each crop from
its tile (read once), sends a poll's crops as one Predict call, labels vectors with the version
that answered, and dead-letters only the superpixel a batch fails on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from amberscan import keys
from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.model_client import FeatureClient
from amberscan.common.settings import Settings, replace
from amberscan.common.topic_admin import ensure_topics
from amberscan.feature import service
from amberscan.feature.tiles import TileImages
from amberscan.modelserver.server import ModelServer, ServerOptions
from amberscan.segmenter.core import superpixel_messages
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.crops import CROP_SIZE, crop_superpixel
from amberscan.vision.imageio import decode_image
from amberscan.vision.segment import segment
from tests.model.conftest import TinyModel, export_tiny_model
from tests.streams import produce, read_all

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def model_224(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A small real SavedModel taking 224-px crops, as the backbone does (versions 1 and 2)."""
    model_dir = tmp_path_factory.mktemp("serving")
    export_tiny_model(model_dir, version=1, image_size=CROP_SIZE, seed=1)
    return export_tiny_model(model_dir, version=2, image_size=CROP_SIZE, seed=2)


@pytest.fixture
async def server(model_224: TinyModel) -> AsyncIterator[ModelServer]:
    served = ModelServer(model_224.model_dir, model_224.name, "127.0.0.1:0")
    await served.start()
    yield served
    await served.stop(grace_s=0.5)


async def stored_tile(settings: Settings, shared_data: Path, name: str) -> tuple[str, np.ndarray]:
    store = BlobStore(settings.s3)
    await store.ensure_bucket()
    png = (shared_data / "tiles" / f"{name}.png").read_bytes()
    return await store.put(png, keys.TILE_IMAGES, "png", "image/png"), decode_image(png, name)


def superpixels_of(tile_id: str, image_key: str, image: np.ndarray) -> list[pb.Superpixel]:
    tile = pb.Tile(
        tile_id=tile_id,
        scan_id="scan-f",
        tile=pb.TileCoord(z=16, x=1, y=2, quadkey=tile_id),
        image_key=image_key,
        tiles_expected=2,
    )
    return superpixel_messages(tile, segment(image, mode="fast"), "labels/x.png", "slic-fast")


async def run_until(stage: object, settings: Settings, expect: int) -> tuple[list, list]:
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))  # type: ignore[attr-defined]
    try:
        features = await read_all(settings, topics.FEATURES, expect=expect, timeout=90)
        assert not task.done(), task
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    letters = await read_all(settings, topics.DEAD_LETTERS, expect=0, timeout=3)
    return features, letters


async def test_crops_are_cut_from_the_tile_read_once_per_tile(
    stack_settings: Settings, shared_data: Path, model_224: TinyModel, server: ModelServer
) -> None:
    settings = replace(stack_settings, feature={"batch_size": 64})
    await ensure_topics(settings.kafka)
    key, image = await stored_tile(settings, shared_data, "positive1")
    messages = superpixels_of("1203", key, image)
    await produce(
        settings, topics.SUPERPIXELS, [(b"1203", m.SerializeToString()) for m in messages]
    )
    store = BlobStore(settings.s3)
    tiles = TileImages(store)
    async with FeatureClient(server.address, model_224.name) as client:
        stage = service.make_stage(settings, store, client, tiles)
        records, letters = await run_until(stage, settings, expect=len(messages))
    assert letters == []
    got = {}
    for record in records:
        features = pb.SuperpixelFeatures.FromString(record.value)
        assert record.key == b"1203"
        assert features.backbone == features.ref.models.backbone == "tiny/2"
        got[features.ref.segment_index] = np.array(features.vector, dtype=np.float32)
    assert sorted(got) == list(range(len(messages)))
    for m in messages:  # the vector of the crop the detection core cuts
        box = m.ref.bbox
        crop = crop_superpixel(image, (box.row0, box.col0, box.row1, box.col1))
        np.testing.assert_allclose(
            got[m.ref.segment_index], model_224.expected(crop[None])[0], atol=1e-5
        )
    assert tiles.reads == 1  # one read of the tile for all its superpixels
    assert server.servicer.predict_calls < len(messages)  # batched, not one call per crop


async def test_a_crop_the_server_fails_on_is_dead_lettered_alone(
    stack_settings: Settings, shared_data: Path, model_224: TinyModel
) -> None:
    """INTERNAL on any batch holding the poisoned crop: the batch is split until only that
    superpixel fails; a superpixel naming a missing tile is poison too; the rest go on."""
    await ensure_topics(stack_settings.kafka)
    key, image = await stored_tile(stack_settings, shared_data, "negative1")
    messages = superpixels_of("1300", key, image)
    poisoned = messages[5]
    box = poisoned.ref.bbox
    marker = crop_superpixel(image, (box.row0, box.col0, box.row1, box.col1))
    server = ModelServer(model_224.model_dir, model_224.name, "127.0.0.1:0")
    predict = server.servicer.Predict

    async def failing(request: object, context: grpc.aio.ServicerContext) -> object:
        import tensorflow as tf

        batch = tf.make_ndarray(request.inputs["images"])  # type: ignore[attr-defined]
        if any(np.array_equal(crop, marker) for crop in batch):
            await context.abort(grpc.StatusCode.INTERNAL, "OOM when allocating tensor")
        return await predict(request, context)

    server.servicer.Predict = failing  # type: ignore[method-assign]  # before it is served
    await server.start()
    missing = pb.Superpixel()
    missing.CopyFrom(messages[0])
    missing.ref.tile_id, missing.ref.image_key = "1301", "tiles/00/absent.png"
    items = [(b"1300", m.SerializeToString()) for m in messages]
    await produce(
        stack_settings, topics.SUPERPIXELS, [*items, (b"1301", missing.SerializeToString())]
    )
    store = BlobStore(stack_settings.s3)
    async with FeatureClient(
        server.address, model_224.name, max_retries=1, backoff_s=0.01
    ) as client:
        stage = service.make_stage(stack_settings, store, client)
        try:
            records, _ = await run_until(stage, stack_settings, expect=len(messages) - 1)
        finally:
            await server.stop(grace_s=0.5)
    letters = [
        pb.DeadLetter.FromString(r.value)
        for r in await read_all(stack_settings, topics.DEAD_LETTERS, expect=2)
    ]
    done = {pb.SuperpixelFeatures.FromString(r.value).ref.segment_index for r in records}
    assert done == {m.ref.segment_index for m in messages} - {poisoned.ref.segment_index}
    reasons = {letter.tile_id: letter.reason for letter in letters}
    assert set(reasons) == {"1300", "1301"}, reasons
    assert f"superpixel {poisoned.ref.segment_index} of tile 1300" in reasons["1300"]
    assert "INTERNAL" in reasons["1300"] and "OOM" in reasons["1300"]
    assert "absent.png" in reasons["1301"] and "not found" in reasons["1301"]


async def features_across_a_new_version(
    settings: Settings,
    shared_data: Path,
    model: TinyModel,
    model_dir: Path,
    tile: tuple[str, str],
    new_version: Callable[[Path], TinyModel],
    later: int,
) -> tuple[list[pb.Superpixel], np.ndarray, TinyModel, list[pb.SuperpixelFeatures]]:
    """The stage on a model server serving a copy of `model`'s versions: the first superpixel of
    `tile` (source name, tile id) goes through, then the server loads `new_version(model_dir)`,
    then the next `later` superpixels follow. Returns the superpixels, the tile's image, the new
    version and every features message."""
    import shutil

    name, tile_id = tile
    shutil.copytree(model.model_dir, model_dir)
    served = ModelServer(model_dir, model.name, "127.0.0.1:0")
    await served.start()
    await ensure_topics(settings.kafka)
    key, image = await stored_tile(settings, shared_data, name)
    messages = superpixels_of(tile_id, key, image)
    store = BlobStore(settings.s3)
    try:
        async with FeatureClient(served.address, model.name) as client:
            await produce(
                settings, topics.SUPERPIXELS, [(tile_id.encode(), messages[0].SerializeToString())]
            )
            stage = service.make_stage(settings, store, client)
            stop = asyncio.Event()
            task = asyncio.create_task(stage.run(stop))
            try:
                await read_all(settings, topics.FEATURES, expect=1, timeout=60)
                loaded = new_version(model_dir)
                await served.load()  # the server moves on to the new version
                await produce(
                    settings,
                    topics.SUPERPIXELS,
                    [(tile_id.encode(), m.SerializeToString()) for m in messages[1 : 1 + later]],
                )
                records = await read_all(settings, topics.FEATURES, expect=1 + later, timeout=60)
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)
    finally:
        await served.stop(grace_s=0.5)
    features = [pb.SuperpixelFeatures.FromString(r.value) for r in records]
    return messages, image, loaded, features


async def test_vectors_name_the_version_that_computed_them(
    stack_settings: Settings, shared_data: Path, model_224: TinyModel, tmp_path: Path
) -> None:
    """A model server that loads a new backbone version mid-stream: vectors computed by it are
    labelled with it (so a classifier trained on the old one rejects them, instead of scoring
    them as if nothing changed)."""
    messages, _, _, features = await features_across_a_new_version(
        stack_settings,
        shared_data,
        model_224,
        tmp_path / "serving",
        ("positive2", "1400"),
        lambda folder: export_tiny_model(folder, version=3, image_size=CROP_SIZE, seed=3),
        later=1,
    )
    labels = {f.ref.segment_index: f.backbone for f in features}
    assert labels == {
        messages[0].ref.segment_index: "tiny/2",
        messages[1].ref.segment_index: "tiny/3",
    }


async def test_a_version_of_another_crop_size_gets_crops_cut_at_its_size(
    stack_settings: Settings, shared_data: Path, model_224: TinyModel, tmp_path: Path
) -> None:
    """The crop size is part of the model's contract: the server loads a version whose signature
    takes 160-px crops mid-stream; the stage, whose batch of 224-px crops it now rejects, reads
    the metadata again and cuts the crops at 160, so nothing is dead-lettered and every vector is
    the new version's feature of the crop cut at its size."""
    messages, image, small, features = await features_across_a_new_version(
        stack_settings,
        shared_data,
        model_224,
        tmp_path / "serving",
        ("negative1", "1500"),
        lambda folder: export_tiny_model(folder, version=3, image_size=160, seed=3),
        later=5,
    )
    letters = await read_all(stack_settings, topics.DEAD_LETTERS, expect=0, timeout=3)
    assert letters == []
    got = {f.ref.segment_index: f for f in features}
    assert got[messages[0].ref.segment_index].backbone == "tiny/2"
    for message in messages[1:6]:
        vector = got[message.ref.segment_index]
        assert vector.backbone == "tiny/3"
        box = message.ref.bbox
        crop = crop_superpixel(image, (box.row0, box.col0, box.row1, box.col1), 160)
        np.testing.assert_allclose(vector.vector, small.expected(crop[None])[0], atol=1e-5)


async def test_a_tile_stamped_with_a_backbone_version_gets_that_version(
    stack_settings: Settings, shared_data: Path, model_224: TinyModel, tmp_path: Path
) -> None:
    """During a rollout the server keeps the old version beside the new one: a tile stamped for
    a classifier trained on version 1 gets version 1's features, an unstamped one the newest's;
    a tile stamped with a version not loaded yet waits (no dead letter) and goes through once the
    server has it."""
    import shutil

    settings = stack_settings
    model_dir = tmp_path / "serving"
    shutil.copytree(model_224.model_dir, model_dir)
    options = ServerOptions(keep_versions=3, poll_s=0.2)
    served = ModelServer(model_dir, model_224.name, "127.0.0.1:0", options)
    await served.start()
    polling = asyncio.ensure_future(served.poll_versions())
    await ensure_topics(settings.kafka)
    key, image = await stored_tile(settings, shared_data, "positive1")
    tiles = {}
    for tile_id, stamp in (("1001", "tiny/1"), ("1002", ""), ("1003", "tiny/3")):
        messages = superpixels_of(tile_id, key, image)[:3]
        for m in messages:
            m.ref.tile_id = tile_id
            m.ref.models.backbone = stamp
        tiles[tile_id] = messages
    store = BlobStore(settings.s3)
    try:
        async with FeatureClient(served.address, model_224.name) as client:
            stage = service.make_stage(settings, store, client)
            stop = asyncio.Event()
            task = asyncio.create_task(stage.run(stop))
            try:
                for tile_id, messages in tiles.items():
                    await produce(
                        settings,
                        topics.SUPERPIXELS,
                        [(tile_id.encode(), m.SerializeToString()) for m in messages],
                    )
                first = await read_all(settings, topics.FEATURES, expect=6, timeout=60)
                assert {pb.SuperpixelFeatures.FromString(r.value).ref.tile_id for r in first} == {
                    "1001",
                    "1002",
                }
                assert await read_all(settings, topics.DEAD_LETTERS, expect=0, timeout=2) == []
                version_3 = export_tiny_model(model_dir, version=3, image_size=CROP_SIZE, seed=3)
                records = await read_all(settings, topics.FEATURES, expect=9, timeout=60)
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)
    finally:
        polling.cancel()
        await served.stop(grace_s=0.5)
    # Version 1 as exported (the same seed makes the same projection), to compare against.
    version_1 = export_tiny_model(tmp_path / "v1", version=1, image_size=CROP_SIZE, seed=1)
    expected = {
        "1001": ("tiny/1", version_1),
        "1002": ("tiny/2", model_224),
        "1003": ("tiny/3", version_3),
    }
    for record in records:
        features = pb.SuperpixelFeatures.FromString(record.value)
        label, model = expected[features.ref.tile_id]
        assert features.backbone == label
        box = features.ref.bbox
        crop = crop_superpixel(image, (box.row0, box.col0, box.row1, box.col1))
        np.testing.assert_allclose(features.vector, model.expected(crop[None])[0], atol=1e-5)
    assert await read_all(settings, topics.DEAD_LETTERS, expect=0, timeout=2) == []
