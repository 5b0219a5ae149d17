"""Faults on the real stack: a service SIGKILLed mid-scan, and a corrupt image from the provider.

The first test runs every stage as its own `amberscan serve` process (two feature copies in one
consumer group), kills the segmenter and a feature copy while tiles are in flight, restarts them,
and checks that the scan ends with every tile stored once and scored as the detection core
scores it. The second serves one damaged zoom-18 tile and checks that only its scan tile fails,
with a reason naming it, and that its dead letter is on the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from amberscan import scanning
from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.bus import client_options
from amberscan.common.db import Database
from amberscan.common.registry import make_current
from amberscan.common.served_features import client_for
from amberscan.common.settings import Settings, replace
from amberscan.common.topic_admin import ensure_topics
from amberscan.model.classifier import Classifier
from amberscan.tiler import demo
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.crops import crops_for
from amberscan.vision.imageio import decode_image
from amberscan.vision.segment import segment
from tests.pipeline.test_demo_scan import STAGES
from tests.streams import group_members, read_all, served

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
Corrupt = Callable[[int, int, int], bytes | None]


@contextlib.asynccontextmanager
async def tile_server(shared_data: Path, corrupt: Corrupt | None = None) -> AsyncIterator[str]:
    """The demo tile server on a free port; `corrupt(z, x, y)` may replace a tile's bytes."""
    app = demo.make_app(shared_data / "tiles")
    if corrupt is not None:

        @web.middleware
        async def damage(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            info = request.match_info
            if {"z", "x", "y"} <= set(info):
                body = corrupt(int(info["z"]), int(info["x"]), int(info["y"]))
                if body is not None:
                    headers = {"X-Imagery-Date": demo.DEMO_IMAGERY_DATE}
                    return web.Response(body=body, content_type="image/png", headers=headers)
            return await handler(request)

        app.middlewares.append(damage)
    async with served(app) as base:
        yield base + "/tiles/{z}/{x}/{y}.png"


async def prepare(settings: Settings) -> None:
    """Topics, the model server, and the default classifier published to the test's bucket."""
    classifier_path = Path(settings.classifier.path)
    if not classifier_path.exists():
        pytest.fail(
            f"no classifier at {classifier_path}: build the default model with `make model`"
        )
    async with client_for(settings) as client:
        await client.wait_until_serving(60)
    await ensure_topics(settings.kafka)
    await make_current(settings.s3, Classifier.load(classifier_path), action="promote", by="test")


async def scores_match_the_core(settings: Settings, rows: list[tuple]) -> None:
    """Each detection row (tile_id, segment_count, scores, image_key) as the core computes it."""
    store = BlobStore(settings.s3)
    classifier = Classifier.load(settings.classifier.path)
    async with client_for(settings) as client:
        size = (await client.metadata()).crop_size
        for tile_id, count, scores, key in rows:
            assert count == len(scores), tile_id
            image = decode_image(await store.get(key), key)
            segmentation = segment(image, mode=settings.segmenter.mode)
            assert len(segmentation.superpixels) == count, tile_id
            vectors = await client.predict(crops_for(image, segmentation, size))
            np.testing.assert_allclose(
                scores, classifier.score(vectors), atol=1e-4, err_msg=f"tile {tile_id}"
            )


class Services:
    """`amberscan serve <stage>` subprocesses, each logging to its own file."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.logs = logs
        self.env = {
            **os.environ,
            "AMBERSCAN_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
            "AMBERSCAN_TOPIC_PREFIX": settings.kafka.topic_prefix,
            "AMBERSCAN_TOPIC_PARTITIONS": str(settings.kafka.partitions),
            "AMBERSCAN_S3_ENDPOINT": settings.s3.endpoint,
            "AMBERSCAN_S3_BUCKET": settings.s3.bucket,
            "AMBERSCAN_DATABASE_URL": settings.database.url,
            "AMBERSCAN_DATABASE_SCHEMA": settings.database.schema_name,
            "AMBERSCAN_MODEL_SERVER": settings.model_server.address,
            "AMBERSCAN_CLASSIFIER_PATH": str(Path(settings.classifier.path).resolve()),
            "AMBERSCAN_DEMO_TILES_URL": settings.imagery.demo_tiles_url,
            "AMBERSCAN_RETRY_BACKOFF_S": str(settings.retry.backoff_s),
            "AMBERSCAN_METRICS_PORT": "0",
            "AMBERSCAN_LOG_JSON": "false",
            "PYTHONUNBUFFERED": "1",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started = 0

    def start(self, name: str, stage: str) -> None:
        self.started += 1
        log = (self.logs / f"{name}.{self.started}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "amberscan.cli", "serve", stage],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def pause(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"services exited: {dead}\n{self.tails()}"

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def tails(self, lines: int = 25) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)


async def backlog(settings: Settings, service: str, topic: str) -> dict[int, int]:
    """Per partition of `topic`: records beyond the offset `service`'s group has committed."""
    name = topics.topic_name(settings.kafka.topic_prefix, topic)
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    consumer = AIOKafkaConsumer(name, **client_options(settings.kafka))
    await admin.start()
    await consumer.start()
    try:
        await consumer.topics()  # fresh metadata: partitions_for_topic may be empty before it
        committed = await admin.list_consumer_group_offsets(
            f"{settings.kafka.topic_prefix}amberscan-{service}"
        )
        partitions = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or ()]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
        await admin.close()
    done = {tp.partition: max(meta.offset, 0) for tp, meta in committed.items() if tp.topic == name}
    return {tp.partition: end - done.get(tp.partition, 0) for tp, end in ends.items()}


async def records_on(settings: Settings, topic: str) -> int:
    """How many records `topic` holds (sum of its partitions' end offsets)."""
    name = topics.topic_name(settings.kafka.topic_prefix, topic)
    consumer = AIOKafkaConsumer(name, **client_options(settings.kafka))
    await consumer.start()
    try:
        await consumer.topics()  # fresh metadata: partitions_for_topic may be empty before it
        partitions = consumer.partitions_for_topic(name) or set()
        ends = await consumer.end_offsets([TopicPartition(name, p) for p in partitions])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def has_records(settings: Settings, topic: str, count: int) -> bool:
    return await records_on(settings, topic) == count


async def wait_for(
    what: str, check: Callable[[], Awaitable[bool]], services: Services, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        services.check_alive()
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{services.tails()}")
        await asyncio.sleep(0.5)


async def test_sigkill_mid_scan_loses_and_duplicates_nothing(
    stack_settings: Settings, shared_data: Path, tmp_path: Path
) -> None:
    async with tile_server(shared_data) as url:
        settings = replace(stack_settings, imagery={"demo_tiles_url": url})
        await prepare(settings)
        services = Services(settings, tmp_path)
        # Each feature copy gathers its poll for 3 s before one Predict call: the victim then
        # surely holds uncommitted superpixels when it is killed (a fast backbone otherwise
        # commits all 240 between two checks), and the peer is mid-batch when the group rebalances.
        services.env |= {
            "AMBERSCAN_FEATURE_BATCH_SIZE": "512",
            "AMBERSCAN_FEATURE_BATCH_WAIT_MS": "3000",
            # The segmenter commits tile by tile, so that it can be caught midway.
            "AMBERSCAN_SEGMENTER_BATCH_SIZE": "1",
        }
        try:
            # The segmenter starts once every tile is on the bus (below), so that it has tiles
            # left to do when it is killed: it otherwise keeps pace with the tiler.
            for stage in STAGES:
                if stage != "segmenter":
                    services.start("feature-a" if stage == "feature" else stage, stage)
            # The copies are told apart by member id: feature-a joins the group alone first.
            members: dict[str, list[int]] = {}

            async def feature_members(count: int) -> bool:
                nonlocal members
                members = await group_members(settings, "feature")
                return len(members) == count and all(members.values())

            await wait_for("feature-a in its group", lambda: feature_members(1), services, 120)
            [member_a] = members
            services.start("feature-b", "feature")
            await wait_for("two feature copies", lambda: feature_members(2), services, 120)
            # Both copies share the work: each holds its own part of the partitions.
            shares = sorted(members.values())
            assert sorted(sum(shares, [])) == list(range(settings.kafka.partitions)), members
            # Kill the copy holding partition 0, where most demo tiles' superpixels go.
            victim = "feature-a" if 0 in members[member_a] else "feature-b"

            request = demo.demo_scan_request()
            async with Database(settings.database) as db:
                expected = await scanning.submit(settings, db, request)
                assert expected == 8

                # The segmenter dies between committing its first tiles and its last ones. It
                # starts with all 8 tiles waiting, runs in 100 ms slices and is paused (SIGSTOP)
                # while its progress is read, so the kill lands on exactly the state read.
                await wait_for(
                    "the tiler's 8 tiles",
                    lambda: has_records(settings, topics.TILES, 8),
                    services,
                    300,
                )
                services.start("segmenter", "segmenter")
                deadline = time.monotonic() + 300
                while True:
                    await asyncio.sleep(0.1)
                    services.pause("segmenter")
                    left_now = sum((await backlog(settings, "segmenter", topics.TILES)).values())
                    if 0 < left_now < 8:
                        break
                    assert left_now == 8, "the segmenter committed every tile within one slice"
                    services.resume("segmenter")
                    services.check_alive()
                    if time.monotonic() > deadline:
                        pytest.fail(
                            f"timed out waiting for the segmenter midway\n{services.tails()}"
                        )
                services.kill("segmenter")
                left = await backlog(settings, "segmenter", topics.TILES)
                assert sum(left.values()) > 0, "the segmenter had committed every tile"
                print(f"SIGKILLed the segmenter with tiles uncommitted per partition: {left}")
                services.start("segmenter", "segmenter")

                # The feature copy dies with superpixels of its partition not yet committed.
                async def victim_behind() -> bool:
                    return (await backlog(settings, "feature", topics.SUPERPIXELS)).get(0, 0) > 0

                await wait_for("superpixels waiting for features", victim_behind, services, 300)
                services.kill(victim)
                left = await backlog(settings, "feature", topics.SUPERPIXELS)
                assert left.get(0, 0) > 0, f"{victim} had committed every superpixel"
                print(f"SIGKILLed {victim} with superpixels uncommitted per partition: {left}")
                services.start(victim, "feature")

                summary = await scanning.follow(
                    db, request.scan_id, expected, timeout_s=600, progress=False
                )
                assert summary.error == "" and summary.complete, (summary, services.tails())
                assert (summary.tiles, summary.done, summary.failed) == (8, 8, 0), (
                    summary.failures,
                    services.tails(),
                )
                services.check_alive()
                per_tile = await db.fetch("SELECT tile_id, count(*) FROM detections GROUP BY 1")
                rows = await db.fetch(
                    "SELECT tile_id, segment_count, scores, image_key FROM detections"
                )
        finally:
            services.stop()
            async with Database(settings.database) as db:
                await db.drop_schema()

    assert dict(per_tile) == {t.quadkey: 1 for t in demo.demo_tiles()}
    await scores_match_the_core(settings, rows)
    # Redelivery after a kill shows as more messages than superpixels (printed for the record).
    segments = sum(row[1] for row in rows)
    made = {t: await records_on(settings, t) for t in (topics.SUPERPIXELS, topics.FEATURES)}
    print(f"{segments} superpixels; messages on the bus: {made}")


async def test_a_corrupt_provider_tile_fails_only_its_scan_tile(
    stack_settings: Settings, shared_data: Path
) -> None:
    victim = demo.demo_tiles()[3]
    # One zoom-18 child of the victim, served as the first half of its real PNG.
    child = (demo.DEMO_FETCH_ZOOM, victim.x * 4 + 1, victim.y * 4 + 2)
    server = demo.DemoTileServer(shared_data / "tiles")
    whole = server.png(*child)
    assert whole is not None
    truncated = whole[: len(whole) // 2]

    def corrupt(z: int, x: int, y: int) -> bytes | None:
        return truncated if (z, x, y) == child else None

    async with tile_server(shared_data, corrupt) as url:
        settings = replace(stack_settings, imagery={"demo_tiles_url": url})
        await prepare(settings)
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(
                importlib.import_module(f"amberscan.{name}.service").run(settings, stop)
            )
            for name in STAGES
        ]
        try:
            request = demo.demo_scan_request()
            async with Database(settings.database) as db:
                expected = await scanning.submit(settings, db, request)
                summary = await scanning.follow(
                    db, request.scan_id, expected, timeout_s=600, progress=False
                )
                detections = await db.fetch("SELECT tile_id FROM detections")
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=60)
            async with Database(settings.database) as db:
                await db.drop_schema()
        for task in tasks:  # a stage that crashed fails the test
            assert not task.exception(), task.exception()

    assert summary.error == "" and summary.complete, summary
    assert (summary.tiles, summary.done, summary.failed) == (8, 7, 1), summary
    [failure] = summary.failures
    assert failure["tile_id"] == victim.quadkey
    reason = failure["reason"]
    print(f"failed tile {victim.quadkey}: {reason}")
    assert "/".join(map(str, child)) in reason, reason  # names the provider tile
    assert "truncated or corrupt" in reason, reason  # and the problem
    assert victim.quadkey not in {row[0] for row in detections}
    assert len(detections) == 7

    letters = [
        pb.DeadLetter.FromString(r.value)
        for r in await read_all(settings, topics.DEAD_LETTERS, expect=1)
    ]
    [letter] = letters
    assert (letter.service, letter.tile_id, letter.scan_id) == (
        "tiler",
        victim.quadkey,
        request.scan_id,
    )
    assert letter.origin_topic == topics.topic_name(
        settings.kafka.topic_prefix, topics.SCAN_REQUESTS
    )
    assert "/".join(map(str, child)) in letter.reason, letter.reason
