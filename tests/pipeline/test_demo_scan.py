"""The whole pipeline on the real stack: tiler → segmenter → feature → classifier → aggregator →
sink, each stage's real runner in its own consumer group, fed by the demo tile server over HTTP."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from amberscan import scanning
from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.db import Database
from amberscan.common.registry import make_current
from amberscan.common.served_features import client_for
from amberscan.common.settings import Settings, replace
from amberscan.common.topic_admin import ensure_topics
from amberscan.geo.tiles import Tile, pixel_area_m2
from amberscan.model.classifier import Classifier
from amberscan.tiler import demo
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.crops import crops_for
from amberscan.vision.imageio import decode_image
from amberscan.vision.segment import segment
from tests.streams import free_port, produce, read_all, served

pytestmark = pytest.mark.stack

STAGES = ["tiler", "segmenter", "feature", "classifier", "aggregator", "sink"]


@pytest.fixture
async def pipeline(stack_settings: Settings, shared_data: Path) -> AsyncIterator[Settings]:
    classifier_path = Path(stack_settings.classifier.path)
    if not classifier_path.exists():
        pytest.fail(
            f"no classifier at {classifier_path}: build the default model with `make model`"
        )
    port = free_port()
    settings = replace(
        stack_settings,
        imagery={
            "demo_tiles_url": f"http://127.0.0.1:{port}/tiles/{{z}}/{{x}}/{{y}}.png",
            "demo_data_dir": shared_data / "tiles",
        },
    )
    async with client_for(settings) as client:
        await client.wait_until_serving(60)
    async with served(demo.make_app(shared_data / "tiles"), port):
        await ensure_topics(settings.kafka)
        # The tiler skips by (and stamps tiles with) the registry's current model: make the
        # default one current in this test's bucket.
        await make_current(
            settings.s3, Classifier.load(classifier_path), action="promote", by="test"
        )
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(
                importlib.import_module(f"amberscan.{name}.service").run(settings, stop)
            )
            for name in STAGES
        ]
        try:
            yield settings
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=60)
            async with Database(settings.database) as db:
                await db.drop_schema()
            for task in tasks:  # a stage that crashed fails the test
                if task.done() and task.exception():
                    raise task.exception()  # type: ignore[misc]


async def scan(settings: Settings, request: pb.ScanRequest) -> scanning.ScanSummary:
    async with Database(settings.database) as db:
        expected = await scanning.submit(settings, db, request)
        return await scanning.follow(db, request.scan_id, expected, timeout_s=600, progress=False)


async def test_demo_scan_end_to_end_matches_the_detection_core(pipeline: Settings) -> None:
    settings = pipeline
    # Poison first: garbage and a tile whose image is missing go to the dead-letter topic, and
    # the stream goes on to finish the scan after them.
    missing = pb.Tile(
        tile_id="1202",
        scan_id="poison",
        image_key="tiles/00/missing.png",
        width=1024,
        height=1024,
        tiles_expected=1,
    )
    missing.tile.z, missing.tile.x, missing.tile.y = 2, 1, 1
    await produce(
        settings,
        topics.TILES,
        [(b"junk", b"\x08\x96\x01 not a tile"), (b"1202", missing.SerializeToString())],
    )

    summary = await scan(settings, demo.demo_scan_request())
    assert summary.error == "" and summary.complete
    assert (summary.tiles, summary.done, summary.failed) == (8, 8, 0)

    letters = [
        pb.DeadLetter.FromString(r.value)
        for r in await read_all(settings, topics.DEAD_LETTERS, expect=2)
    ]
    reasons = " | ".join(letter.reason for letter in letters)
    assert len(letters) == 2 and {letter.service for letter in letters} == {"segmenter"}
    assert "tile message" in reasons.lower(), reasons
    assert "missing.png" in reasons, reasons

    async with Database(settings.database) as db:
        rows = await db.fetch(
            "SELECT tile_id, flagged, positives, segment_count, min_positives, hectares, scores, "
            "demo, image_key, z, x, y, ST_Area(positives_geom::geography), "
            "ST_CoveredBy(positives_geom, ST_Buffer(tile_geom, 1e-9)) FROM detections"
        )
    assert len(rows) == 8
    by_tile = {row[0]: row for row in rows}
    assert set(by_tile) == {t.quadkey for t in demo.demo_tiles()}
    # The truth: every tile made from a mining image is flagged and no other tile is. The default
    # build keeps each shared tile's verdict in >= 39 of its 40 turns and resizes
    # (benchmarks/stability.py, docs/model.md), so this holds beyond one lucky build. Each
    # tile's verdict is also the rule applied to the scores the detection core gives the same
    # image (checked below), so the pipeline adds nothing and loses nothing.
    for placed in demo.demo_layout():
        mining = placed.source.startswith("positive")
        assert by_tile[placed.tile.quadkey][1] == mining, (placed, by_tile[placed.tile.quadkey])
    store = BlobStore(settings.s3)
    classifier = Classifier.load(settings.classifier.path)
    async with client_for(settings) as client:
        for (
            _tile_id,
            flagged,
            positives,
            count,
            k,
            hectares,
            scores,
            is_demo,
            key,
            z,
            x,
            y,
            area,
            inside,
        ) in rows:
            assert (
                is_demo
                and count == len(scores)
                and k == settings.aggregator.min_positive_superpixels
            )
            assert positives == sum(s >= classifier.threshold for s in scores)
            assert flagged == (positives > k)
            if flagged:  # the polygons' ground area agrees with the hectares from pixel counts
                assert inside and hectares > 0
                assert area / 10_000 == pytest.approx(hectares, rel=0.05)
            else:  # damage is reported only where the rule fires
                assert hectares == 0 and area is None
            # The detection core on the same image gives the same scores as the pipeline.
            image = decode_image(await store.get(key), key)
            segmentation = segment(image, mode=settings.segmenter.mode)
            assert len(segmentation.superpixels) == count
            size = (await client.metadata()).crop_size
            vectors = await client.predict(crops_for(image, segmentation, size))
            expected = classifier.score(vectors)
            np.testing.assert_allclose(scores, expected, atol=1e-4)
            tile = Tile(x, y, z)
            areas = np.array([sp.area_px for sp in segmentation.superpixels])
            pixel_ha = pixel_area_m2(tile, image.shape[1]) / 10_000
            damaged = areas[expected >= classifier.threshold].sum() * pixel_ha if flagged else 0.0
            assert hectares == pytest.approx(damaged)

    # Scanning the same imagery again with the same model skips every tile; rescan redoes them.
    again = await scan(settings, demo.demo_scan_request())
    assert (again.skipped, again.done, again.failed) == (8, 0, 0)
    assert again.flagged == summary.flagged
    assert again.hectares == pytest.approx(summary.hectares)
    assert len(again.verdicts) == 8  # every tile of the area is reported with its verdict
    request = demo.demo_scan_request()
    request.rescan = True
    redo = await scan(settings, request)
    assert (redo.done, redo.skipped) == (8, 0)
    async with Database(settings.database) as db:  # neither the skip nor the rescan added a row
        assert (await db.fetch("SELECT count(*) FROM detections"))[0][0] == 8


async def test_a_replay_is_a_scan_of_its_own_and_rewrites_no_history(pipeline: Settings) -> None:
    """`amberscan replay` with a new model: the earlier scan's progress rows stay byte for byte
    what they were, the new model's detections are added beside the old ones under the replay's
    own scan id, and a tile a reviewer rejected stays rejected on the map under the new model."""
    import json
    import os
    import subprocess
    import sys

    from amberscan.common.registry import load_current, publish
    from amberscan.web import queries
    from amberscan.web.core import Filters
    from amberscan.web.review_queries import save_review

    settings = pipeline
    first = await scan(settings, demo.demo_scan_request())
    assert (first.done, first.failed) == (8, 0)
    progress = (
        "SELECT scan_id, tile_id, status, flagged, hectares, reason, updated_at FROM scan_tiles "
        "WHERE scan_id = %s ORDER BY tile_id"
    )
    async with Database(settings.database) as db:
        rejected = next(v["tile_id"] for v in first.verdicts if v["flagged"])
        (detection,) = await db.fetch(
            "SELECT imagery_date, model_version FROM detections WHERE tile_id = %s", rejected
        )
        row = {"tile_id": rejected, "imagery_date": detection[0], "model_version": detection[1]}
        await save_review(db, row, "rejected", "ana", "a sand road")
        before = json.dumps(await db.fetch(progress, first.scan_id), default=str)

    # The new model: the same booster with a threshold nothing reaches (it flags no tile).
    current = await load_current(settings.s3)
    new = Classifier.from_json(current.to_json(), "copy")
    new.threshold = 0.9999
    new.metadata["version"] = "xgb-replay-test"
    await publish(settings.s3, new)
    env = {
        **os.environ,
        "AMBERSCAN_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
        "AMBERSCAN_TOPIC_PREFIX": settings.kafka.topic_prefix,
        "AMBERSCAN_S3_BUCKET": settings.s3.bucket,
        "AMBERSCAN_DATABASE_SCHEMA": settings.database.schema_name,
        "AMBERSCAN_LOG_JSON": "false",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "amberscan.cli", "replay", "--model", new.version, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    replayed = json.loads(done.stdout.strip().splitlines()[-1])
    assert replayed["scan_id"] != first.scan_id and replayed["scan_id"].startswith("replay-")
    assert (replayed["tiles"], replayed["done"], replayed["failed"]) == (8, 8, 0)
    assert replayed["flagged"] == 0

    async with Database(settings.database) as db:
        assert json.dumps(await db.fetch(progress, first.scan_id), default=str) == before
        rows = await db.fetch(
            "SELECT model_version, scan_id, count(*) FROM detections GROUP BY 1, 2"
        )
        newest = await queries.detections(db, Filters(limit=100))
    assert sorted(rows) == sorted(
        [(current.version, first.scan_id, 8), (new.version, replayed["scan_id"], 8)]
    )
    states = {r["tile_id"]: (r["model_version"], r["review"]) for r in newest}
    assert states[rejected] == (new.version, "rejected")  # the review holds under the new model
