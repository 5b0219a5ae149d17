"""The poison suite's pipeline: every stage's real runner on the real stack, in this process.

Each test feeds poison in at one end or onto one topic, and checks that it ends as a clear CLI
error or as a dead letter with its reason and origin, that the scan's progress shows the
failure, and that every stage is still running afterwards (`Pipeline.check_alive`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from amberscan import scanning
from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.db import Database
from amberscan.common.served_features import client_for
from amberscan.common.settings import Settings
from amberscan.common.topic_admin import ensure_topics
from amberscan.v1 import messages_pb2 as pb
from tests.streams import joined, read_all

STAGES = ("tiler", "segmenter", "feature", "classifier", "aggregator", "sink")
# Their consumer groups: the sink runs a second loop, on the dead letters.
GROUPS = (*STAGES, "sink-dead-letters")
# The stage that consumes each topic: its dead letters name it as their service.
CONSUMER = {
    topics.SCAN_REQUESTS: "tiler",
    topics.TILES: "segmenter",
    topics.SUPERPIXELS: "feature",
    topics.FEATURES: "classifier",
    topics.SCORES: "aggregator",
    topics.DETECTIONS: "sink",
}


@dataclass
class Pipeline:
    settings: Settings
    db: Database
    tasks: dict[str, asyncio.Task[None]]

    def check_alive(self) -> None:
        """Every stage still runs: poison must never stop a service."""
        dead = {n: t for n, t in self.tasks.items() if t.done()}
        assert not dead, {
            n: (t.exception() if not t.cancelled() else "cancelled") for n, t in dead.items()
        }

    async def letters(self, expect: int, timeout: float = 60) -> list[pb.DeadLetter]:
        """The dead letters on the bus (a test may have put a malformed one there itself)."""
        records = await read_all(self.settings, topics.DEAD_LETTERS, expect, timeout)
        letters = []
        for record in records:
            with contextlib.suppress(Exception):
                letters.append(pb.DeadLetter.FromString(record.value))
        return letters

    async def until(
        self, what: str, check: Callable[[], Awaitable[bool]], timeout: float = 300
    ) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            self.check_alive()
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.3)

    async def scan(self, request: pb.ScanRequest, timeout: float = 600) -> scanning.ScanSummary:
        """Submit `request` as `amberscan scan` does and follow it to the end."""
        expected = await scanning.submit(self.settings, self.db, request)
        summary = await scanning.follow(
            self.db, request.scan_id, expected, timeout_s=timeout, progress=False
        )
        self.check_alive()
        return summary

    async def progress(self, scan_id: str, expected: int) -> scanning.ScanSummary:
        rows = await self.db.fetch(
            "SELECT tile_id, status, flagged, hectares, reason FROM scan_tiles WHERE scan_id = %s",
            scan_id,
        )
        return scanning.summarize(scan_id, expected, rows, 0.0)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Pipeline]:
    classifier = Path(settings.classifier.path)
    if not classifier.exists():
        pytest.fail(f"no classifier at {classifier}: build the default model with `make model`")
    async with client_for(settings) as client:
        await client.wait_until_serving(60)
    await ensure_topics(settings.kafka)
    await BlobStore(settings.s3).ensure_bucket()
    stop = asyncio.Event()
    async with Database(settings.database) as db:
        tasks = {
            name: asyncio.create_task(
                importlib.import_module(f"amberscan.{name}.service").run(settings, stop)
            )
            for name in STAGES
        }
        pipeline = Pipeline(settings, db, tasks)
        try:
            await pipeline.until("every stage in its group", lambda: joined(settings, GROUPS), 120)
            pipeline.check_alive()
            yield pipeline
            pipeline.check_alive()
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks.values(), return_exceptions=True), 90)
            await db.drop_schema()
