"""The watch service on the real stack: a watched static STAC catalogue (over HTTP, items whose
assets are COGs of the shared tiles) gains newer items, and watch enqueues exactly those tiles,
once, across a restart and with two replicas; a failed tile is enqueued again after its backoff."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from shapely import geometry as sg

from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.db import Database
from amberscan.common.settings import Settings, replace
from amberscan.common.topic_admin import ensure_topics
from amberscan.tiler import demo
from amberscan.v1 import messages_pb2 as pb
from amberscan.watch import service, store
from tests.imagery.rasters import Catalogue, Served, file_server
from tests.streams import read_all, served

pytestmark = pytest.mark.stack
TILES = [d.tile for d in demo.demo_layout()]


@pytest.fixture
async def catalogue(tmp_path: Path, shared_data: Path) -> AsyncIterator[Catalogue]:
    async with served(file_server(tmp_path, Served())) as base:
        yield Catalogue(tmp_path, base, demo.demo_images(shared_data / "tiles"))


@pytest.fixture
async def settings(stack_settings: Settings) -> AsyncIterator[Settings]:
    settings = replace(
        stack_settings, watch={"poll_s": 0.1, "retry_backoff_s": 0.5, "lease_s": 30.0}
    )
    await ensure_topics(settings.kafka)
    await BlobStore(settings.s3).ensure_bucket()  # the registry's bucket: no model published yet
    async with Database(settings.database) as db:
        yield settings
        await db.drop_schema()


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def run_watch(
    settings: Settings, replicas: int, done: Callable[[], Awaitable[bool]], rounds_after: int
) -> None:
    """Run `replicas` watch services until `done`, then for `rounds_after` more rounds."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(service.run(settings, stop)) for _ in range(replicas)]
    try:
        await until(done)
        async with Database(settings.database) as db:
            await wait_rounds(db, rounds_after)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)


async def wait_rounds(db: Database, n: int, timeout: float = 30) -> None:
    """Until the watches' last_round_at has moved `n` times (each move is a round)."""
    deadline = time.monotonic() + timeout
    last, seen = await _rounds(db), 0
    while seen < n:
        assert time.monotonic() < deadline, f"only {seen} of {n} rounds"
        await asyncio.sleep(0.05)
        now = await _rounds(db)
        if now != last:
            seen, last = seen + 1, now


async def _rounds(db: Database) -> list[object]:
    return [r[0] for r in await db.fetch("SELECT last_round_at FROM watches ORDER BY watch_id")]


async def _sent(db: Database) -> int:
    return int((await db.fetch("SELECT count(*) FROM watch_tiles WHERE sent"))[0][0])


async def test_new_items_are_enqueued_once_across_restarts(
    settings: Settings, catalogue: Catalogue
) -> None:
    items = [catalogue.item(t, "2018-05-01") for t in TILES]
    url = catalogue.write(items)
    w, s, e, n = demo.demo_bbox()
    async with Database(settings.database) as db:
        watch_id = await store.add_watch(
            db, json.dumps(sg.mapping(sg.box(w, s, e, n))), "stac", 0.3, sources=[url], name="demo"
        )

        # Round 1: every tile's imagery is new.
        await run_watch(settings, 1, lambda: _count(db, 8), rounds_after=2)

        # The catalogue gains a newer item for two tiles; watch restarts, as two replicas.
        newer = [TILES[1], TILES[5]]
        catalogue.write(
            [*items, *(catalogue.item(t, "2019-06-01", source=TILES[0]) for t in newer)]
        )
        await run_watch(settings, 2, lambda: _count(db, 10), rounds_after=3)

        records = await read_all(settings, topics.SCAN_REQUESTS, expect=10, timeout=30)
        requests = [pb.ScanRequest.FromString(r.value) for r in records]
        assert len(requests) == 10, [(r.tile.quadkey, r.vintage) for r in requests]
        first = [r for r in requests if r.vintage == "2018-05-01"]
        second = [r for r in requests if r.vintage == "2019-06-01"]
        assert sorted(r.tile.quadkey for r in first) == sorted(t.quadkey for t in TILES)
        assert sorted(r.tile.quadkey for r in second) == sorted(t.quadkey for t in newer)
        # Each round is a scan of its own, with its tile count for progress.
        assert len({r.scan_id for r in first}) == 1 and len({r.scan_id for r in second}) == 1
        assert {r.tiles_expected for r in first} == {8} and {r.tiles_expected for r in second} == {
            2
        }
        scans = dict(await db.fetch("SELECT scan_id, tiles_expected FROM scans"))
        assert scans == {first[0].scan_id: 8, second[0].scan_id: 2}
        assert {r.key.decode() for r in records} == {r.tile.quadkey for r in requests}
        (listed,) = await store.list_watches(db)
        assert listed["watch_id"] == watch_id and listed["tiles_enqueued"] == 10
        assert listed["rounds"] == 2 and listed["last_seen"].startswith("2019-06-01")

        # The sink marks one of the new tiles failed (a dead letter): watch enqueues it again,
        # after its backoff, once (the new attempt has not failed).
        failed = second[0]
        await db.execute(
            "INSERT INTO scan_tiles (scan_id, tile_id, status, reason) VALUES (%s, %s, 'failed', 'x')",
            failed.scan_id,
            failed.tile.quadkey,
        )
        await run_watch(settings, 1, lambda: _attempts(db, failed.tile.quadkey, 2), rounds_after=3)
        records = await read_all(settings, topics.SCAN_REQUESTS, expect=11, timeout=30)
        assert len(records) == 11
        again = [
            r
            for r in (pb.ScanRequest.FromString(r.value) for r in records)
            if r.scan_id not in scans
        ]
        assert [(r.tile.quadkey, r.vintage) for r in again] == [(failed.tile.quadkey, "2019-06-01")]
        assert again[0].scan_id not in scans and again[0].tiles_expected == 1


async def _count(db: Database, n: int) -> bool:
    return await _sent(db) >= n


async def _attempts(db: Database, tile_id: str, n: int) -> bool:
    rows = await db.fetch(
        "SELECT attempts, sent FROM watch_tiles WHERE tile_id = %s AND imagery_date = '2019-06-01'",
        tile_id,
    )
    return bool(rows) and rows[0][0] >= n and rows[0][1]


async def test_unsent_records_are_sent_by_the_next_round(
    settings: Settings, catalogue: Catalogue
) -> None:
    """A replica killed after recording a round but before producing it: the next round sends it."""
    url = catalogue.write([catalogue.item(t, "2018-05-01") for t in TILES[:2]])
    w, s, e, n = demo.demo_bbox()
    async with Database(settings.database) as db:
        watch_id = await store.add_watch(
            db, json.dumps(sg.mapping(sg.box(w, s, e, n))), "stac", 3600, sources=[url]
        )
        await store.record_new(
            db, watch_id, "crashed-round", [(TILES[0].quadkey, "2018-05-01")], ""
        )
        await run_watch(settings, 1, lambda: _count(db, 2), rounds_after=0)
        requests = [
            pb.ScanRequest.FromString(r.value)
            for r in await read_all(settings, topics.SCAN_REQUESTS, expect=2, timeout=30)
        ]
        assert sorted((r.scan_id, r.tile.quadkey) for r in requests) == sorted(
            [
                ("crashed-round", TILES[0].quadkey),
                (
                    requests[1].scan_id
                    if requests[0].scan_id == "crashed-round"
                    else requests[0].scan_id,
                    TILES[1].quadkey,
                ),
            ]
        )
        assert (await db.fetch("SELECT tiles_expected FROM scans WHERE scan_id = 'crashed-round'"))[
            0
        ][0] == 1


async def test_unreachable_catalogue_is_recorded_and_retried(settings: Settings) -> None:
    from tests.streams import free_port

    w, s, e, n = demo.demo_bbox()
    async with Database(settings.database) as db:
        watch_id = await store.add_watch(
            db,
            json.dumps(sg.mapping(sg.box(w, s, e, n))),
            "stac",
            3600,
            sources=[f"http://127.0.0.1:{free_port()}/"],
        )
        watcher = service.Watcher(settings, db, producer=None)  # type: ignore[arg-type]
        assert (await watcher.run_once()) is not None
        (listed,) = await store.list_watches(db)
        assert listed["watch_id"] == watch_id and "is unreachable" in listed["last_error"]
        # It comes back after the retry backoff (0.5 s here), not the 1 h cadence.
        assert await watcher.run_once() is None
        await asyncio.sleep(0.6)
        assert await watcher.run_once() is not None
