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
from aiohttp import web
from shapely import geometry as sg

from amberscan.common import topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.bus import client_options
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
        # A replica claimed the region, recorded its round and died (its lease has run out).
        crashed = await store.claim(db, "crashed-replica", 0.0)
        assert crashed is not None and crashed.watch.watch_id == watch_id
        await store.record_new(db, crashed, "crashed-round", [(TILES[0].quadkey, "2018-05-01")], "")
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


async def _lease(db: Database) -> tuple[str | None, object]:
    (row,) = await db.fetch("SELECT lease_owner, lease_until FROM watches")
    return row[0], row[1]


async def _released(db: Database) -> bool:
    rows = await db.fetch("SELECT lease_owner IS NULL AND last_round_at IS NOT NULL FROM watches")
    return bool(rows[0][0])


async def test_a_round_longer_than_the_lease_runs_once(
    settings: Settings, tmp_path: Path, shared_data: Path
) -> None:
    """#26 defect 5: the lease was never renewed, so a round longer than it ran twice (a second
    replica claimed the region mid-round). The replica running a round renews its lease."""
    settings = replace(settings, watch={"lease_s": 1.0})
    gate = asyncio.Event()

    @web.middleware
    async def held(request: web.Request, handler):  # type: ignore[no-untyped-def]
        await gate.wait()  # the catalogue answers once the test has seen the lease outlived
        return await handler(request)

    app = file_server(tmp_path, Served())
    app.middlewares.append(held)
    async with served(app) as base, Database(settings.database) as db:
        catalogue = Catalogue(tmp_path, base, demo.demo_images(shared_data / "tiles"))
        url = catalogue.write([catalogue.item(t, "2018-05-01") for t in TILES])
        w, s, e, n = demo.demo_bbox()
        await store.add_watch(
            db, json.dumps(sg.mapping(sg.box(w, s, e, n))), "stac", 3600, sources=[url]
        )
        stop = asyncio.Event()
        tasks = [asyncio.create_task(service.run(settings, stop)) for _ in range(2)]
        owners: set[str] = set()
        untils: set[object] = set()
        try:
            deadline = time.monotonic() + 30
            # Until the lease was taken and renewed twice, or a second replica took it.
            while len(owners) < 2 and len(untils) < 3:
                assert time.monotonic() < deadline, (owners, untils)
                assert not any(t.done() for t in tasks), tasks
                owner, lease_until = await _lease(db)
                if owner is not None:
                    owners.add(owner)
                    untils.add(lease_until)
                await asyncio.sleep(0.05)
            gate.set()
            await until(lambda: _released(db))
            await until(lambda: _count(db, 8))
        finally:
            gate.set()
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        assert len(owners) == 1, f"a second replica claimed the region mid-round: {owners}"
        requests = [
            pb.ScanRequest.FromString(r.value)
            for r in await read_all(settings, topics.SCAN_REQUESTS, expect=8, timeout=30)
        ]
        assert sorted(r.tile.quadkey for r in requests) == sorted(t.quadkey for t in TILES)
        assert len({r.scan_id for r in requests}) == 1
        assert (await db.fetch("SELECT count(*) FROM watch_rounds"))[0][0] == 1


# A database that refuses the lease's writes as a read-only server does (SQLSTATE 25006),
# in this test's schema only: claims or releases, as the test says.
READ_ONLY = """
CREATE TABLE read_only (statement text PRIMARY KEY);
CREATE SEQUENCE read_only_refusals;
CREATE FUNCTION refuse_lease() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM read_only WHERE statement =
               CASE WHEN NEW.lease_owner IS NULL THEN 'release' ELSE 'claim' END) THEN
        PERFORM nextval('read_only_refusals');
        RAISE EXCEPTION 'cannot execute UPDATE in a read-only transaction'
            USING ERRCODE = 'read_only_sql_transaction';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_lease BEFORE UPDATE OF lease_owner ON watches
    FOR EACH ROW EXECUTE FUNCTION refuse_lease();
"""


@pytest.mark.parametrize("statement", ["claim", "release"])
async def test_a_read_only_database_does_not_kill_watch(
    settings: Settings, catalogue: Catalogue, statement: str
) -> None:
    """#26 defect 5: an error outside AmberscanError in `claim` or `release` (a read-only
    database after a failover) crashed the process, with the lease held. Watch logs it, tries
    again, and once the database takes writes the round is done and released, once."""
    settings = replace(settings, watch={"lease_s": 1.0})
    url = catalogue.write([catalogue.item(t, "2018-05-01") for t in TILES])
    w, s, e, n = demo.demo_bbox()
    async with Database(settings.database) as db:
        await db.execute(READ_ONLY)
        await store.add_watch(
            db, json.dumps(sg.mapping(sg.box(w, s, e, n))), "stac", 3600, sources=[url]
        )
        await db.execute("INSERT INTO read_only VALUES (%s)", statement)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(settings, stop))

        async def refused_twice() -> bool:
            rows = await db.fetch("SELECT last_value, is_called FROM read_only_refusals")
            return task.done() or (rows[0][1] and rows[0][0] >= 2)

        try:
            await until(refused_twice)
            assert not task.done(), f"watch died: {task.exception()!r}"
            await db.execute("DELETE FROM read_only")
            await until(lambda: _released(db))
            await until(lambda: _count(db, 8))
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), timeout=30)
        requests = [
            pb.ScanRequest.FromString(r.value)
            for r in await read_all(settings, topics.SCAN_REQUESTS, expect=8, timeout=30)
        ]
        assert sorted(r.tile.quadkey for r in requests) == sorted(t.quadkey for t in TILES)
        assert task.exception() is None


async def test_a_tile_sent_but_never_answered_is_enqueued_again(
    settings: Settings, catalogue: Catalogue
) -> None:
    """#26 defect 5: a tile sent whose scan never gave it a status (the request lost in the
    pipeline) was never enqueued again. After `unanswered_after_s` it is, like a failed one."""
    from aiokafka import AIOKafkaProducer

    url = catalogue.write([catalogue.item(TILES[0], "2018-05-01")])
    w, s, e, n = demo.demo_bbox()
    producer = AIOKafkaProducer(**client_options(settings.kafka), enable_idempotence=True)
    await producer.start()
    try:
        async with Database(settings.database) as db:
            await store.add_watch(
                db, json.dumps(sg.mapping(sg.box(w, s, e, n))), "stac", 3600, sources=[url]
            )
            watcher = service.Watcher(settings, db, producer)
            watcher.unanswered_after_s = 0.5
            assert await watcher.run_once() is not None
            assert await _count(db, 1)

            async def unanswered_long_enough() -> bool:
                rows = await db.fetch(
                    "SELECT now() - enqueued_at > interval '0.6 s' FROM watch_tiles"
                )
                return bool(rows[0][0])

            await until(unanswered_long_enough)
            await db.execute("UPDATE watches SET next_round_at = now()")  # the next round, now
            assert await watcher.run_once() is not None
            assert (await db.fetch("SELECT attempts, sent FROM watch_tiles"))[0] == (2, True)
            requests = [
                pb.ScanRequest.FromString(r.value)
                for r in await read_all(settings, topics.SCAN_REQUESTS, expect=2, timeout=30)
            ]
            assert [r.tile.quadkey for r in requests] == [TILES[0].quadkey] * 2
            assert requests[0].scan_id != requests[1].scan_id
    finally:
        await producer.stop()


async def test_a_replica_whose_lease_was_taken_writes_nothing(settings: Settings) -> None:
    """#26 defect 5: a round's writes are fenced by its lease's token: once another replica has
    claimed the region (the first stalled past its lease), the first one's writes are refused."""
    w, s, e, n = demo.demo_bbox()
    async with Database(settings.database) as db:
        await store.add_watch(
            db, json.dumps(sg.mapping(sg.box(w, s, e, n))), "stac", 3600, sources=["http://x/"]
        )
        stalled = await store.claim(db, "stalled", 0.0)  # its lease runs out at once
        assert stalled is not None
        taker = await store.claim(db, "taker", 30.0)
        assert taker is not None and taker.token == stalled.token + 1
        pair = [(TILES[0].quadkey, "2018-05-01")]
        with pytest.raises(store.LeaseLost, match="taken by another replica"):
            await store.record_new(db, stalled, "stalled-round", pair, "")
        with pytest.raises(store.LeaseLost):
            await store.open_round(db, stalled, "stalled-round")
        assert not await store.renew(db, stalled, 30.0)
        assert not await store.release(db, stalled, cursor="stale")
        assert await store.record_new(db, taker, "taker-round", pair, "") == pair
        assert await store.release(db, taker, cursor="fresh")
        (listed,) = await store.list_watches(db)
        assert listed["last_seen"] == "fresh"
        assert await db.fetch("SELECT scan_id FROM watch_tiles") == [("taker-round",)]
